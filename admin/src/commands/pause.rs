//! `PAUSE`: Lets running transactions finish and holds new ones (a planned switchover with no client errors).

use crate::error::AdminError;
use crate::result::Output;
use crate::state::{Action, Control};

pub async fn run(ctl: &dyn Control) -> Result<Output, AdminError> {
    super::act(ctl, Action::Pause, "PAUSE").await
}
