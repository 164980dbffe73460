//! `SHOW pool_nodes`: Pgpool-II 4.5's columns, in its order (Bitnami's liveness script reads them
//! by position). `status`/`role` are pgpivot's routing view; `pg_status`/`pg_role` what the last
//! probe saw — both from cached state, so a hung node never blocks the answer.

use crate::format::timestamp_or_empty;
use crate::result::{v, Output, Row};
use crate::state::{Control, NodeInfo};

pub const COLUMNS: &[&str] = &[
    "node_id",
    "hostname",
    "port",
    "status",
    "pg_status",
    "lb_weight",
    "role",
    "pg_role",
    "select_cnt",
    "load_balance_node",
    "replication_delay",
    "replication_state",
    "replication_sync_state",
    "last_status_change",
];

pub fn run(ctl: &dyn Control) -> Output {
    let nodes = ctl.nodes();
    let total: f64 = nodes.iter().map(|n| n.weight).sum();
    let rows = nodes.iter().map(|n| row(n, total)).collect();
    Output::rows(COLUMNS, rows, "SELECT")
}

/// Pgpool's status words: `up`, `down`, `waiting` (not yet checked).
pub fn status(n: &NodeInfo) -> &'static str {
    if n.detached || n.fenced.is_some() {
        return "down";
    }
    match n.reachable {
        Some(true) => "up",
        Some(false) => "down",
        None => "waiting",
    }
}

/// The role pgpivot routes by: only the routed primary is `primary`.
pub fn role(n: &NodeInfo) -> &'static str {
    if n.routed_primary {
        "primary"
    } else {
        "standby"
    }
}

pub fn pg_status(n: &NodeInfo) -> &'static str {
    match n.reachable {
        Some(true) => "up",
        Some(false) => "down",
        None => "unknown",
    }
}

fn row(n: &NodeInfo, total_weight: f64) -> Row {
    let weight = if total_weight > 0.0 {
        n.weight / total_weight
    } else {
        0.0
    };
    let delay = if n.routed_primary {
        0
    } else {
        n.lag_bytes.unwrap_or(0)
    };
    // What the standby's WAL receiver says, and the primary's view of it (pg_stat_replication,
    // matched by the name the receiver gives: Pgpool matches by `backend_application_name`,
    // which the Bitnami variables do not carry).
    let (repl_state, sync_state) = match (n.routed_primary, n.probed_role, n.reachable) {
        (false, "standby", Some(true)) => (
            n.replication_state.as_deref().unwrap_or(""),
            n.replication_sync_state.as_deref().unwrap_or(""),
        ),
        _ => ("", ""),
    };
    vec![
        v(n.id),
        v(&n.host),
        v(n.port),
        v(status(n)),
        v(pg_status(n)),
        v(format!("{weight:.6}")),
        v(role(n)),
        v(n.probed_role),
        v(n.statements.select),
        v(n.routed_primary),
        v(delay),
        v(repl_state),
        v(sync_state),
        v(timestamp_or_empty(n.last_status_change)),
    ]
}
