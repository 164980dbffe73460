//! One file per admin command.

pub mod attach_node;
pub mod clients;
pub mod config;
pub mod detach_node;
pub mod failovers;
pub mod help;
pub mod kill_client;
pub mod nodes;
pub mod pause;
pub mod pool_backend_stats;
pub mod pool_health_check_stats;
pub mod pool_nodes;
pub mod pool_pools;
pub mod pool_processes;
pub mod pool_version;
pub mod pools;
pub mod reload;
pub mod resume;
pub mod servers;
pub mod set_primary;
pub mod shutdown;
pub mod stats;
pub mod version;

use crate::error::AdminError;
use crate::result::Output;
use crate::state::{Action, Control};

/// Runs an action; its message reaches the operator as a NOTICE before the completion tag.
async fn act(ctl: &dyn Control, action: Action, tag: &str) -> Result<Output, AdminError> {
    let message = ctl.act(action).await.map_err(AdminError::Refused)?;
    let mut out = Output::done(tag);
    out.notice = Some(message);
    Ok(out)
}
