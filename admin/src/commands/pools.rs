//! `SHOW POOLS`: server connections per pool and the clients waiting for one.

use crate::result::{v, Output};
use crate::state::Control;

pub const COLUMNS: &[&str] = &[
    "node_id",
    "database",
    "user",
    "pool_mode",
    "pool_size",
    "sv_idle",
    "sv_active",
    "cl_waiting",
    "connects",
];

pub fn run(ctl: &dyn Control) -> Output {
    let rows = ctl
        .pools()
        .iter()
        .map(|p| {
            vec![
                v(p.node_id),
                v(&p.database),
                v(&p.user),
                v(p.mode),
                v(p.size),
                v(p.idle),
                v(p.active),
                v(p.waiting),
                v(p.connects),
            ]
        })
        .collect();
    Output::rows(COLUMNS, rows, "SHOW")
}
