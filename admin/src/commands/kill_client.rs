//! `KILL CLIENT id`: disconnects one client (FATAL 57P01); its transaction, if any, is rolled
//! back by PostgreSQL when the server connection is closed.

use crate::error::AdminError;
use crate::result::Output;
use crate::state::{Action, Control};

pub async fn run(ctl: &dyn Control, id: i32) -> Result<Output, AdminError> {
    super::act(ctl, Action::KillClient(id), "KILL").await
}
