//! `SHOW pool_backend_stats`: statements pgpivot sent to each node, by kind, and the errors the
//! node returned (Pgpool 4.5's columns).

use crate::result::{v, Output};
use crate::state::Control;

use super::pool_nodes::{role, status};

pub const COLUMNS: &[&str] = &[
    "node_id",
    "hostname",
    "port",
    "status",
    "role",
    "select_cnt",
    "insert_cnt",
    "update_cnt",
    "delete_cnt",
    "ddl_cnt",
    "other_cnt",
    "panic_cnt",
    "fatal_cnt",
    "error_cnt",
];

pub fn run(ctl: &dyn Control) -> Output {
    let rows = ctl
        .nodes()
        .iter()
        .map(|n| {
            let s = &n.statements;
            vec![
                v(n.id),
                v(&n.host),
                v(n.port),
                v(status(n)),
                v(role(n)),
                v(s.select),
                v(s.insert),
                v(s.update),
                v(s.delete),
                v(s.ddl),
                v(s.other),
                v(s.panic),
                v(s.fatal),
                v(s.error),
            ]
        })
        .collect();
    Output::rows(COLUMNS, rows, "SELECT")
}
