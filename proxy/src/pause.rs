//! PAUSE/RESUME: hold new transactions while running ones finish, for a planned switchover with
//! no client errors (PAUSE, promote the standby, RESUME: held clients go to the new primary).
//!
//! Which sessions are inside a transaction is each session's own flag (`Shared::busy`); PAUSE
//! polls them rather than every transaction touching a counter all cores share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

pub struct Pause {
    paused: watch::Sender<bool>,
    /// The same, read with sequential consistency against the sessions' flags: a session marks
    /// itself busy *then* checks this, PAUSE sets this *then* reads the flags — one of the two
    /// always sees the other.
    flag: AtomicBool,
}

impl Default for Pause {
    fn default() -> Self {
        Pause {
            paused: watch::Sender::new(false),
            flag: AtomicBool::new(false),
        }
    }
}

impl Pause {
    #[inline]
    pub fn is_paused(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Returns at once unless paused; otherwise when RESUME comes.
    pub async fn wait_resumed(&self) {
        let mut rx = self.paused.subscribe();
        let _ = rx.wait_for(|p| !*p).await;
    }

    pub fn set(&self, paused: bool) {
        self.flag.store(paused, Ordering::SeqCst);
        self.paused.send_replace(paused);
    }

    /// Waits (up to `timeout`) until `busy()` reports no session inside a transaction;
    /// returns how many still are.
    pub async fn wait_quiet(&self, timeout: Duration, busy: impl Fn() -> usize) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = busy();
            if n == 0 || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pause_waits_for_busy_sessions_and_resume_releases_waiters() {
        let p = std::sync::Arc::new(Pause::default());
        let busy = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
        p.set(true);
        let b = busy.clone();
        let count = move || b.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            p.wait_quiet(Duration::from_millis(50), count.clone()).await,
            1
        );
        let p2 = p.clone();
        let t = tokio::spawn(async move { p2.wait_quiet(Duration::from_secs(5), count).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        busy.store(0, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(t.await.unwrap(), 0);
        let p3 = p.clone();
        let held = tokio::spawn(async move { p3.wait_resumed().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!held.is_finished());
        p.set(false);
        held.await.unwrap();
    }
}
