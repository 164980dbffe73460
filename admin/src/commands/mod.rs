//! One file per SHOW command and its result set; the actions (PAUSE, RELOAD, ...) are
//! documented on [`Action`] and carried out by the proxy, their answer built here.

pub mod clients;
pub mod config;
pub mod failovers;
pub mod help;
pub mod nodes;
pub mod pool_backend_stats;
pub mod pool_health_check_stats;
pub mod pool_nodes;
pub mod pool_pools;
pub mod pool_processes;
pub mod pool_version;
pub mod pools;
pub mod servers;
pub mod stats;
pub mod version;

use crate::error::AdminError;
use crate::result::Output;
use crate::state::{Action, Control};

/// Runs an action; its message reaches the operator as a NOTICE before the completion tag.
pub async fn act(ctl: &dyn Control, action: &Action) -> Result<Output, AdminError> {
    let tag = action.tag();
    let message = ctl.act(action.clone()).await.map_err(AdminError::Refused)?;
    let mut out = Output::done(tag);
    out.notice = Some(message);
    Ok(out)
}
