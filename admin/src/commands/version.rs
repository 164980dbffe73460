//! `SHOW VERSION`.

use crate::result::{v, Output};
use crate::state::Control;

pub const COLUMNS: &[&str] = &["version"];

pub fn run(ctl: &dyn Control) -> Output {
    let p = ctl.process();
    Output::rows(
        COLUMNS,
        vec![vec![v(format!("pgpivot {}", p.version))]],
        "SHOW",
    )
}
