//! Shutdown signals, Pgpool-style: SIGTERM drains (stop accepting, let transactions finish, end
//! idle sessions, bounded), SIGINT ends every session now, SIGQUIT exits at once.

use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
pub struct Shutdown {
    /// Stop accepting; end each session once it is idle outside a transaction.
    pub drain: CancellationToken,
    /// End every session at its next message boundary.
    pub fast: CancellationToken,
    /// An operator ran SHUTDOWN: the process drains as on SIGTERM.
    pub requested: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }
}
