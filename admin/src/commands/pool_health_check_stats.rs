//! `SHOW pool_health_check_stats`: the role monitor's probe history per node, in Pgpool 4.5's
//! columns (durations in milliseconds).

use crate::format::timestamp_or_empty;
use crate::result::{v, Output};
use crate::state::Control;

use super::pool_nodes::{role, status};

pub const COLUMNS: &[&str] = &[
    "node_id",
    "hostname",
    "port",
    "status",
    "role",
    "last_status_change",
    "total_count",
    "success_count",
    "fail_count",
    "skip_count",
    "retry_count",
    "average_retry_count",
    "max_retry_count",
    "max_duration",
    "min_duration",
    "average_duration",
    "last_health_check",
    "last_successful_health_check",
    "last_skip_health_check",
    "last_failed_health_check",
];

pub fn run(ctl: &dyn Control) -> Output {
    let rows = ctl
        .nodes()
        .iter()
        .map(|n| {
            let c = &n.checks;
            let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_millis()).unwrap_or(0);
            let avg = if c.total > 0 {
                c.total_duration.as_secs_f64() * 1000.0 / c.total as f64
            } else {
                0.0
            };
            let avg_retry = if c.fail > 0 {
                c.retry as f64 / c.fail as f64
            } else {
                0.0
            };
            vec![
                v(n.id),
                v(&n.host),
                v(n.port),
                v(status(n)),
                v(role(n)),
                v(timestamp_or_empty(n.last_status_change)),
                v(c.total),
                v(c.success),
                v(c.fail),
                v(0),
                v(c.retry),
                v(format!("{avg_retry:.6}")),
                v(c.max_retry),
                v(ms(c.max_duration)),
                v(ms(c.min_duration)),
                v(format!("{avg:.6}")),
                v(timestamp_or_empty(c.last_check)),
                v(timestamp_or_empty(c.last_success)),
                v(""),
                v(timestamp_or_empty(c.last_failure)),
            ]
        })
        .collect();
    Output::rows(COLUMNS, rows, "SELECT")
}
