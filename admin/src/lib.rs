//! pgpivot's admin commands: Pgpool's `SHOW pool_*` (answered on the data port too) and the
//! console's commands (`SHOW NODES`, `PAUSE`, `SET PRIMARY n`, ...).
//!
//! The crate knows nothing about sockets or the proxy's internals: commands read snapshots
//! through [`Control`], which the proxy implements, and [`Responder`] speaks the protocol.

pub mod command;
pub mod commands;
pub mod error;
pub mod format;
pub mod respond;
pub mod result;
pub mod state;

pub use command::{Command, PoolShow};
pub use error::AdminError;
pub use respond::{Flow, Responder, Surface};
pub use result::Output;
pub use state::*;

use commands as c;

/// Runs one command.
pub async fn execute(cmd: &Command, ctl: &dyn Control) -> Result<Output, AdminError> {
    Ok(match cmd {
        Command::Pool(p) => match p {
            PoolShow::Nodes => c::pool_nodes::run(ctl),
            PoolShow::Version => c::pool_version::run(ctl),
            PoolShow::Processes => c::pool_processes::run(ctl),
            PoolShow::Pools => c::pool_pools::run(ctl),
            PoolShow::HealthCheckStats => c::pool_health_check_stats::run(ctl),
            PoolShow::BackendStats => c::pool_backend_stats::run(ctl),
        },
        Command::ShowNodes => c::nodes::run(ctl),
        Command::ShowPools => c::pools::run(ctl),
        Command::ShowClients => c::clients::run(ctl),
        Command::ShowServers => c::servers::run(ctl),
        Command::ShowStats => c::stats::run(ctl),
        Command::ShowConfig => c::config::run(ctl),
        Command::ShowVersion => c::version::run(ctl),
        Command::ShowFailovers => c::failovers::run(ctl),
        Command::ShowHelp => c::help::run(),
        Command::Act(action) => c::act(ctl, action).await?,
        Command::Empty => Output::done(""),
    })
}

/// The columns a command returns (what Describe answers before it runs).
pub fn columns(cmd: &Command) -> &'static [&'static str] {
    match cmd {
        Command::Pool(p) => match p {
            PoolShow::Nodes => c::pool_nodes::COLUMNS,
            PoolShow::Version => c::pool_version::COLUMNS,
            PoolShow::Processes => c::pool_processes::COLUMNS,
            PoolShow::Pools => c::pool_pools::COLUMNS,
            PoolShow::HealthCheckStats => c::pool_health_check_stats::COLUMNS,
            PoolShow::BackendStats => c::pool_backend_stats::COLUMNS,
        },
        Command::ShowNodes => c::nodes::COLUMNS,
        Command::ShowPools => c::pools::COLUMNS,
        Command::ShowClients => c::clients::COLUMNS,
        Command::ShowServers => c::servers::COLUMNS,
        Command::ShowStats => c::stats::COLUMNS,
        Command::ShowConfig => c::config::COLUMNS,
        Command::ShowVersion => c::version::COLUMNS,
        Command::ShowFailovers => c::failovers::COLUMNS,
        Command::ShowHelp => c::help::COLUMNS,
        _ => &[],
    }
}

#[cfg(test)]
mod tests;
