//! `SHOW pool_pools`: Pgpool 4.5's columns, one row per client (pgpivot's equivalent of a child's
//! connection slot): the backend it holds now, if any.

use crate::format::{timestamp, timestamp_or_empty};
use crate::result::{v, Output};
use crate::state::Control;

pub const COLUMNS: &[&str] = &[
    "pool_pid",
    "start_time",
    "client_connection_count",
    "pool_id",
    "backend_id",
    "database",
    "username",
    "backend_connection_time",
    "client_connection_time",
    "client_disconnection_time",
    "client_idle_duration",
    "majorversion",
    "minorversion",
    "pool_counter",
    "pool_backendpid",
    "pool_connected",
    "status",
    "load_balance_node",
];

pub fn run(ctl: &dyn Control) -> Output {
    let p = ctl.process();
    let start = p.started_at.map(timestamp).unwrap_or_default();
    let rows = ctl
        .clients()
        .iter()
        .map(|c| {
            let connected = c.server_pid.is_some();
            vec![
                v(c.id),
                v(&start),
                v(1),
                v(0),
                v(c.node_id.map(|n| n.to_string()).unwrap_or_default()),
                v(&c.database),
                v(&c.user),
                v(timestamp_or_empty(c.connected_at)),
                v(timestamp_or_empty(c.connected_at)),
                v(""),
                v(c.idle_seconds),
                v(3),
                v(0),
                v(1),
                v(c.server_pid.unwrap_or(0)),
                v(u8::from(connected)),
                v(super::pool_processes::status(c)),
                v(connected),
            ]
        })
        .collect();
    Output::rows(COLUMNS, rows, "SELECT")
}
