//! `SHOW FAILOVERS`: every change of primary since start, with the write gap it caused.

use crate::format::{millis, timestamp};
use crate::result::{opt, v, Output};
use crate::state::Control;

pub const COLUMNS: &[&str] = &[
    "at",
    "from_node",
    "to_node",
    "generation",
    "gap_ms",
    "clients_affected",
];

pub fn run(ctl: &dyn Control) -> Output {
    let rows = ctl
        .failovers()
        .iter()
        .map(|f| {
            vec![
                v(timestamp(f.at)),
                opt(f.from),
                v(f.to),
                v(f.generation),
                opt(f.gap.map(millis)),
                v(f.clients_affected),
            ]
        })
        .collect();
    Output::rows(COLUMNS, rows, "SHOW")
}
