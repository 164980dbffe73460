//! `SHOW SERVERS`: one row per server connection pgpivot holds.

use crate::format::timestamp_or_empty;
use crate::result::{opt, v, Output};
use crate::state::Control;

pub const COLUMNS: &[&str] = &[
    "pid",
    "node_id",
    "database",
    "user",
    "state",
    "connected_at",
    "client_id",
];

pub fn run(ctl: &dyn Control) -> Output {
    let rows = ctl
        .servers()
        .iter()
        .map(|s| {
            vec![
                v(s.pid),
                v(s.node_id),
                v(&s.database),
                v(&s.user),
                v(s.state),
                v(timestamp_or_empty(s.connected_at)),
                opt(s.client_id),
            ]
        })
        .collect();
    Output::rows(COLUMNS, rows, "SHOW")
}
