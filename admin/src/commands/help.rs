//! `SHOW HELP`: the console's commands.

use crate::command::HELP;
use crate::result::{v, Output};

pub const COLUMNS: &[&str] = &["command", "description"];

pub fn run() -> Output {
    let rows = HELP.iter().map(|(c, d)| vec![v(c), v(d)]).collect();
    Output::rows(COLUMNS, rows, "SHOW")
}
