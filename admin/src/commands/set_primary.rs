//! `SET PRIMARY n` / `SET PRIMARY AUTO`: the operator's decision when fencing refuses to guess
//! (two nodes claim to be primary on the same timeline); `AUTO` hands it back to the monitor.

use crate::error::AdminError;
use crate::result::Output;
use crate::state::{Action, Control};

pub async fn run(ctl: &dyn Control, node: Option<usize>) -> Result<Output, AdminError> {
    super::act(ctl, Action::SetPrimary(node), "SET").await
}
