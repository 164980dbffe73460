//! `DETACH NODE n`: takes a backend out of service; it gets no traffic and cannot be chosen as
//! primary until `ATTACH NODE n`.

use crate::error::AdminError;
use crate::result::Output;
use crate::state::{Action, Control};

pub async fn run(ctl: &dyn Control, node: usize) -> Result<Output, AdminError> {
    super::act(ctl, Action::DetachNode(node), "DETACH").await
}
