//! `RELOAD`: Re-reads the configuration file and environment files without dropping clients (also SIGHUP).

use crate::error::AdminError;
use crate::result::Output;
use crate::state::{Action, Control};

pub async fn run(ctl: &dyn Control) -> Result<Output, AdminError> {
    super::act(ctl, Action::Reload, "RELOAD").await
}
