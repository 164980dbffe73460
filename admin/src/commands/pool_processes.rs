//! `SHOW pool_processes`: Pgpool shows one row per child process (each serves one client); pgpivot
//! has one process and shows one row per client in the same columns.

use crate::format::{timestamp, timestamp_or_empty};
use crate::result::{v, Output};
use crate::state::{ClientInfo, Control};

pub const COLUMNS: &[&str] = &[
    "pool_pid",
    "start_time",
    "client_connection_count",
    "database",
    "username",
    "backend_connection_time",
    "pool_counter",
    "status",
];

/// Pgpool's words for what a child is doing.
pub fn status(c: &ClientInfo) -> &'static str {
    match c.state {
        "active" => "Execute command",
        "waiting" => "Wait for connection",
        _ => "Idle",
    }
}

pub fn run(ctl: &dyn Control) -> Output {
    let p = ctl.process();
    let start = p.started_at.map(timestamp).unwrap_or_default();
    let rows = ctl
        .clients()
        .iter()
        .map(|c| {
            vec![
                v(c.id),
                v(&start),
                v(1),
                v(&c.database),
                v(&c.user),
                v(timestamp_or_empty(c.connected_at)),
                v(1),
                v(status(c)),
            ]
        })
        .collect();
    Output::rows(COLUMNS, rows, "SELECT")
}
