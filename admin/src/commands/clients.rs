//! `SHOW CLIENTS`: one row per client connection; `id` is what `KILL CLIENT` takes.

use crate::format::timestamp_or_empty;
use crate::result::{opt, v, Output};
use crate::state::Control;

pub const COLUMNS: &[&str] = &[
    "id",
    "user",
    "database",
    "application_name",
    "addr",
    "connected_at",
    "state",
    "node_id",
    "server_pid",
    "pinned",
    "tls",
];

pub fn run(ctl: &dyn Control) -> Output {
    let rows = ctl
        .clients()
        .iter()
        .map(|c| {
            vec![
                v(c.id),
                v(&c.user),
                v(&c.database),
                v(&c.application_name),
                v(&c.addr),
                v(timestamp_or_empty(c.connected_at)),
                v(c.state),
                opt(c.node_id),
                opt(c.server_pid),
                opt(c.pinned),
                v(&c.tls),
            ]
        })
        .collect();
    Output::rows(COLUMNS, rows, "SHOW")
}
