//! PAUSE/RESUME: hold new transactions while running ones finish, for a planned switchover with
//! no client errors (PAUSE, promote the standby, RESUME: held clients go to the new primary).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{watch, Notify};

pub struct Pause {
    paused: watch::Sender<bool>,
    /// Sessions with a transaction or request outstanding.
    busy: AtomicUsize,
    quiet: Notify,
}

impl Default for Pause {
    fn default() -> Self {
        Pause {
            paused: watch::Sender::new(false),
            busy: AtomicUsize::new(0),
            quiet: Notify::new(),
        }
    }
}

impl Pause {
    #[inline]
    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Returns at once unless paused; otherwise when RESUME comes.
    pub async fn wait_resumed(&self) {
        let mut rx = self.paused.subscribe();
        let _ = rx.wait_for(|p| !*p).await;
    }

    pub fn set(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    pub fn busy_enter(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
    }

    pub fn busy_leave(&self) {
        if self.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.quiet.notify_waiters();
        }
    }

    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    /// Waits (up to `timeout`) until no session is busy; returns how many still are.
    pub async fn wait_quiet(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.quiet.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let n = self.busy();
            if n == 0 {
                return 0;
            }
            // Re-check now and then: a session that ended busy also leaves.
            let step = deadline.min(tokio::time::Instant::now() + Duration::from_millis(100));
            if tokio::time::timeout_at(step, notified).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return self.busy();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pause_waits_for_busy_sessions_and_resume_releases_waiters() {
        let p = std::sync::Arc::new(Pause::default());
        p.busy_enter();
        p.set(true);
        assert_eq!(p.wait_quiet(Duration::from_millis(50)).await, 1);
        let p2 = p.clone();
        let t = tokio::spawn(async move { p2.wait_quiet(Duration::from_secs(5)).await });
        p.busy_leave();
        assert_eq!(t.await.unwrap(), 0);
        let p3 = p.clone();
        let held = tokio::spawn(async move { p3.wait_resumed().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!held.is_finished());
        p.set(false);
        held.await.unwrap();
    }
}
