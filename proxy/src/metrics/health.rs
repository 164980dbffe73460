//! What `/livez` and `/readyz` answer.
//!
//! Liveness never depends on a backend (a database that is down must not get the proxy
//! restarted): it says the runtime answers and the tasks nothing else would restart are alive.
//! Readiness says new clients would be served now: a primary is known and we are not draining.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::session::Ctx;

/// Flags the long-lived tasks hold down while they run.
pub struct Liveness {
    listener: AtomicBool,
    monitor: AtomicBool,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            listener: AtomicBool::new(true),
            monitor: AtomicBool::new(true),
        }
    }
}

/// Clears its flag when dropped: when the task returns, and when it panics.
pub struct AliveGuard<'a>(&'a AtomicBool);

impl Drop for AliveGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

impl Liveness {
    /// Held by the TCP accept loop.
    pub fn listener(&self) -> AliveGuard<'_> {
        self.listener.store(true, Ordering::Relaxed);
        AliveGuard(&self.listener)
    }

    /// Held by the role monitor's decision loop.
    pub fn monitor(&self) -> AliveGuard<'_> {
        self.monitor.store(true, Ordering::Relaxed);
        AliveGuard(&self.monitor)
    }
}

/// `Ok(body)` for 200, `Err(body)` for 503.
pub fn livez(ctx: &Ctx) -> Result<String, String> {
    let draining = ctx.shutdown.drain.is_cancelled();
    // Draining stops the accept loop on purpose.
    if !draining && !ctx.liveness.listener.load(Ordering::Relaxed) {
        return Err("not alive: the client listener stopped\n".into());
    }
    if !ctx.liveness.monitor.load(Ordering::Relaxed) {
        return Err("not alive: the role monitor stopped\n".into());
    }
    Ok("alive\n".into())
}

pub fn readyz(ctx: &Ctx) -> Result<String, String> {
    if ctx.shutdown.drain.is_cancelled() {
        return Err("not ready: shutting down\n".into());
    }
    let table = ctx.topology.current();
    match &table.primary {
        Some(p) => Ok(format!(
            "ready: primary is node {} ({})\n",
            p.node_id,
            p.addr()
        )),
        None => Err(format!(
            "not ready: no primary: {}\n",
            table
                .no_primary_reason
                .as_deref()
                .unwrap_or("none known")
                .replace('\n', " ")
        )),
    }
}
