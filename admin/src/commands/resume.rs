//! `RESUME`: Releases the transactions PAUSE held.

use crate::error::AdminError;
use crate::result::Output;
use crate::state::{Action, Control};

pub async fn run(ctl: &dyn Control) -> Result<Output, AdminError> {
    super::act(ctl, Action::Resume, "RESUME").await
}
