//! `SHOW pool_version`: the Pgpool version pgpivot is compatible with, and its own.

use crate::result::{v, Output};
use crate::state::Control;

pub const COLUMNS: &[&str] = &["pool_version"];

/// Scripts compare this against Pgpool releases; 4.5 is the column set pgpivot reproduces.
pub const PGPOOL_COMPAT: &str = "4.5.0";

pub fn run(ctl: &dyn Control) -> Output {
    let p = ctl.process();
    Output::rows(
        COLUMNS,
        vec![vec![v(format!("{PGPOOL_COMPAT} (pgpivot {})", p.version))]],
        "SELECT",
    )
}
