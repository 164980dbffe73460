//! `SHOW CONFIG`: the effective settings (secrets masked by the proxy) and where each came from.

use crate::result::{v, Output};
use crate::state::Control;

pub const COLUMNS: &[&str] = &["key", "value", "source", "description"];

pub fn run(ctl: &dyn Control) -> Output {
    let rows = ctl
        .settings()
        .into_iter()
        .map(|s| vec![v(s.key), v(s.value), v(s.source), v(s.help)])
        .collect();
    Output::rows(COLUMNS, rows, "SHOW")
}
