//! `PGPOOL_CLIENT_IDLE_LIMIT`: clients idle outside a transaction longer than the limit are
//! disconnected, in both pool modes. Sessions only note a coarse clock when the client sends
//! something (one atomic store); a sweep once a second ends the ones past the limit — no timer
//! per session, none on the forwarding path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpivot_protocol::sqlstate;
use tokio_util::sync::CancellationToken;

use crate::session::Ctx;

/// Seconds since pgpivot started, advanced by the sweep.
#[derive(Default)]
pub struct Clock(AtomicU64);

impl Clock {
    #[inline]
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Runs the clock and the sweep until `stop`.
pub fn spawn(ctx: Arc<Ctx>, stop: CancellationToken) {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = start.elapsed().as_secs();
            ctx.clock.0.store(now, Ordering::Relaxed);
            let Some(limit) = ctx.config.load().pool.client_idle_limit else {
                continue;
            };
            for shared in ctx.cancels.sessions() {
                let idle_for = shared.silent_for(now);
                // Strictly past: the clock has one-second steps, so a client is cut after
                // between `limit` and `limit + 1` seconds of silence, never before.
                if idle_for > limit.as_secs() && shared.quiescent() {
                    shared.request_stop(
                        sqlstate::ADMIN_SHUTDOWN,
                        "terminating connection due to client idle limit".into(),
                    );
                }
            }
        }
    });
}
