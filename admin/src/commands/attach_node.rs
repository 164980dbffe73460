//! `ATTACH NODE n`: puts a detached backend back into service (the monitor decides its role).

use crate::error::AdminError;
use crate::result::Output;
use crate::state::{Action, Control};

pub async fn run(ctl: &dyn Control, node: usize) -> Result<Output, AdminError> {
    super::act(ctl, Action::AttachNode(node), "ATTACH").await
}
