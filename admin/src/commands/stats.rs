//! `SHOW STATS`: traffic per pool since start.

use crate::format::millis;
use crate::result::{opt, v, Output};
use crate::state::Control;

pub const COLUMNS: &[&str] = &[
    "node_id",
    "database",
    "user",
    "transactions",
    "queries",
    "bytes_received",
    "bytes_sent",
    "wait_ms",
    "avg_query_ms",
    "p99_query_ms",
];

pub fn run(ctl: &dyn Control) -> Output {
    let rows = ctl
        .pools()
        .iter()
        .map(|p| {
            let s = &p.stats;
            let avg = if s.queries > 0 {
                Some(millis(s.query_time / s.queries.min(u32::MAX as u64) as u32))
            } else {
                None
            };
            vec![
                v(p.node_id),
                v(&p.database),
                v(&p.user),
                v(s.transactions),
                v(s.queries),
                v(s.bytes_in),
                v(s.bytes_out),
                v(millis(s.wait)),
                opt(avg),
                opt(s.query_p99.map(millis)),
            ]
        })
        .collect();
    Output::rows(COLUMNS, rows, "SHOW")
}
