//! `SHUTDOWN`: Drains and stops pgpivot, as SIGTERM does.

use crate::error::AdminError;
use crate::result::Output;
use crate::state::{Action, Control};

pub async fn run(ctl: &dyn Control) -> Result<Output, AdminError> {
    super::act(ctl, Action::Shutdown, "SHUTDOWN").await
}
