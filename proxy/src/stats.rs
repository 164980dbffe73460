//! Per-pool counters for the admin console's `SHOW STATS` (Prometheus gets the process-wide
//! totals from `metrics`).
//!
//! Everything is a relaxed atomic: sessions add to them at transaction boundaries and when they
//! detach, readers take a snapshot whenever they like. Nothing here allocates or locks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters of one pool. Reach it with [`crate::pool::Pool::stats`].
#[derive(Default)]
pub struct PoolStats {
    /// Successful checkouts.
    pub checkouts: AtomicU64,
    /// Server connections opened.
    pub created: AtomicU64,
    /// Server connections closed because they came back in a bad state.
    pub closed_bad_state: AtomicU64,
    /// Total time clients waited in `checkout`, in µs.
    pub wait_micros: AtomicU64,
    /// Transactions completed (a ReadyForQuery that says idle).
    pub transactions: AtomicU64,
    /// Queries: simple Query messages plus extended-protocol Executes.
    pub queries: AtomicU64,
    /// Bytes from clients to the server.
    pub bytes_in: AtomicU64,
    /// Bytes from the server to clients.
    pub bytes_out: AtomicU64,
    /// Total time the server was busy with requests (first request sent → ReadyForQuery with
    /// nothing left pending), in µs.
    pub query_micros: AtomicU64,
    /// Total time inside transactions (first request → ReadyForQuery idle), in µs.
    pub transaction_micros: AtomicU64,
    /// Distribution of the query times above.
    pub query_time: LatencyHistogram,
}

/// A plain-number copy of [`PoolStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatsSnapshot {
    pub checkouts: u64,
    pub created: u64,
    pub closed_bad_state: u64,
    pub wait_micros: u64,
    pub transactions: u64,
    pub queries: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub query_micros: u64,
    pub transaction_micros: u64,
    /// Estimated 99th percentile query time, in µs (0 when nothing was measured).
    pub query_p99_micros: u64,
}

impl PoolStats {
    pub fn snapshot(&self) -> PoolStatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PoolStatsSnapshot {
            checkouts: get(&self.checkouts),
            created: get(&self.created),
            closed_bad_state: get(&self.closed_bad_state),
            wait_micros: get(&self.wait_micros),
            transactions: get(&self.transactions),
            queries: get(&self.queries),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            query_micros: get(&self.query_micros),
            transaction_micros: get(&self.transaction_micros),
            query_p99_micros: self.query_time.p99().map_or(0, |d| d.as_micros() as u64),
        }
    }

    /// One busy period of the server (see `query_micros`).
    pub fn record_query_time(&self, d: Duration) {
        let us = micros(d);
        self.query_micros.fetch_add(us, Ordering::Relaxed);
        self.query_time.record_micros(us);
    }

    pub fn record_transaction_time(&self, d: Duration) {
        self.transaction_micros
            .fetch_add(micros(d), Ordering::Relaxed);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Buckets: `[0, 1)` µs, then `[2^(i-1), 2^i)` µs for i = 1..=39 (the last one is open-ended,
/// past 3 days).
const BUCKETS: usize = 40;

/// A lock-free latency histogram with power-of-two buckets: one atomic add per value, 320 bytes,
/// percentiles within a factor of two (interpolated inside the bucket). Good enough for "is p99
/// 2 ms or 200 ms"; use the Prometheus histograms for anything finer.
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl LatencyHistogram {
    pub fn record(&self, d: Duration) {
        self.record_micros(micros(d));
    }

    pub fn record_micros(&self, us: u64) {
        let i = (u64::BITS - us.leading_zeros()) as usize;
        self.buckets[i.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// Values recorded so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Estimated value below which `q` (0.0–1.0) of the recorded values lie; None when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: [u64; BUCKETS] =
            std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0);
        let mut seen = 0u64;
        for (i, &c) in counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if (seen + c) as f64 >= rank {
                let (lo, hi) = bounds(i);
                let within = (rank - seen as f64) / c as f64;
                let us = lo as f64 + within * (hi - lo) as f64;
                return Some(Duration::from_micros(us as u64));
            }
            seen += c;
        }
        None
    }

    /// Estimated 99th percentile.
    pub fn p99(&self) -> Option<Duration> {
        self.quantile(0.99)
    }
}

/// The µs range bucket `i` covers.
fn bounds(i: usize) -> (u64, u64) {
    if i == 0 {
        (0, 1)
    } else {
        (1 << (i - 1), 1 << i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_histogram_has_no_percentile() {
        assert_eq!(LatencyHistogram::default().p99(), None);
    }

    #[test]
    fn p99_lands_in_the_right_power_of_two() {
        let h = LatencyHistogram::default();
        for _ in 0..990 {
            h.record(Duration::from_micros(100));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(50));
        }
        assert_eq!(h.count(), 1000);
        let p99 = h.p99().unwrap();
        // 100 µs lies in [64, 128); 99 % of the values are there.
        assert!(
            p99 >= Duration::from_micros(64) && p99 <= Duration::from_micros(128),
            "{p99:?}"
        );
        let p999 = h.quantile(0.999).unwrap();
        // 50 ms lies in [32768, 65536) µs.
        assert!(
            p999 >= Duration::from_micros(32_768) && p999 <= Duration::from_micros(65_536),
            "{p999:?}"
        );
    }

    #[test]
    fn extremes_do_not_overflow() {
        let h = LatencyHistogram::default();
        h.record_micros(0);
        h.record_micros(u64::MAX);
        h.record(Duration::MAX);
        assert_eq!(h.count(), 3);
        assert!(h.quantile(1.0).is_some());
    }

    #[test]
    fn snapshot_reads_every_counter() {
        let s = PoolStats::default();
        s.queries.fetch_add(3, Ordering::Relaxed);
        s.record_query_time(Duration::from_millis(2));
        s.record_transaction_time(Duration::from_millis(5));
        let snap = s.snapshot();
        assert_eq!(snap.queries, 3);
        assert_eq!(snap.query_micros, 2000);
        assert_eq!(snap.transaction_micros, 5000);
        assert!(snap.query_p99_micros >= 1024 && snap.query_p99_micros <= 2048);
    }
}
