//! `SHOW NODES`: everything the monitor knows about each backend, for an operator deciding
//! whether to intervene (fencing reasons, lag, probe failures).

use crate::format::{lsn, millis, timestamp_or_empty};
use crate::result::{opt, v, Output};
use crate::state::Control;

use super::pool_nodes::status;

pub const COLUMNS: &[&str] = &[
    "node_id",
    "host",
    "port",
    "role",
    "status",
    "routed_primary",
    "detached",
    "fenced",
    "timeline",
    "wal_position",
    "lag_bytes",
    "lag_seconds",
    "last_probe",
    "probe_ms",
    "consecutive_failures",
    "last_error",
];

pub fn run(ctl: &dyn Control) -> Output {
    let rows = ctl
        .nodes()
        .iter()
        .map(|n| {
            vec![
                v(n.id),
                v(&n.host),
                v(n.port),
                v(n.probed_role),
                v(status(n)),
                v(n.routed_primary),
                v(n.detached),
                opt(n.fenced.as_ref()),
                opt(n.timeline),
                opt(n.lsn.map(lsn)),
                opt(n.lag_bytes),
                opt(n.lag_seconds.map(|s| format!("{s:.3}"))),
                v(timestamp_or_empty(n.last_probe)),
                opt(n.last_latency.map(millis)),
                v(n.consecutive_failures),
                opt(n.last_error.as_ref()),
            ]
        })
        .collect();
    Output::rows(COLUMNS, rows, "SHOW")
}
