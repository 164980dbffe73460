//! One session's traffic counts, kept in the session and added to its pool's [`PoolStats`] and
//! the Prometheus counters at transaction boundaries and when it detaches: the pumps only touch
//! uncontended atomics of their own, per read chunk or per request, never per byte and never
//! with a lock or an allocation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::stats::PoolStats;

/// µs on a process-wide monotonic clock, plus one (so 0 can mean "not started").
fn now_mark() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    base.elapsed().as_micros() as u64 + 1
}

fn since(mark: u64) -> Duration {
    Duration::from_micros(now_mark().saturating_sub(mark))
}

#[derive(Default)]
pub struct Tally {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    queries: AtomicU64,
    /// When the server became busy with this client's requests (0: it is not).
    busy_since: AtomicU64,
    /// When the current transaction's first request was sent (0: none open).
    xact_since: AtomicU64,
    /// A transaction ended: flush once its reply is written.
    flush_due: AtomicBool,
}

impl Tally {
    /// Bytes written to the server.
    pub fn bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes written to the client.
    pub fn bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A Query or an Execute.
    pub fn query(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
    }

    /// A request that gets a ReadyForQuery (Query, Sync, FunctionCall) is sent; `pending_before`
    /// such requests were outstanding.
    pub fn request(&self, pending_before: u32) {
        if pending_before == 0 {
            let now = now_mark();
            self.busy_since.store(now, Ordering::Relaxed);
            if self.xact_since.load(Ordering::Relaxed) == 0 {
                self.xact_since.store(now, Ordering::Relaxed);
            }
        }
    }

    /// A ReadyForQuery with transaction `status` (`I`, `T`, `E`) arrived, leaving `pending`
    /// requests outstanding. Records durations and, at a transaction's end, makes the counts due
    /// for [`Tally::flush_if_due`] (once the reply is written, so its bytes are in).
    pub fn ready(&self, status: u8, pending: u32, pool: Option<&PoolStats>, m: &Metrics) {
        if pending == 0 {
            let busy = self.busy_since.swap(0, Ordering::Relaxed);
            if busy != 0 {
                let d = since(busy);
                m.query_duration.record(d.as_secs_f64());
                if let Some(p) = pool {
                    p.record_query_time(d);
                }
            }
        }
        if status != b'I' {
            return;
        }
        // With requests still pending (pipelining), the next transaction is already running.
        let next = if pending > 0 { now_mark() } else { 0 };
        let started = self.xact_since.swap(next, Ordering::Relaxed);
        if started != 0 {
            let d = since(started);
            m.transactions.increment(1);
            m.transaction_duration.record(d.as_secs_f64());
            if let Some(p) = pool {
                p.transactions.fetch_add(1, Ordering::Relaxed);
                p.record_transaction_time(d);
            }
        }
        self.flush_due.store(true, Ordering::Relaxed);
    }

    /// Flushes if a transaction ended since the last flush.
    pub fn flush_if_due(&self, pool: Option<&PoolStats>, m: &Metrics) {
        if self.flush_due.load(Ordering::Relaxed) {
            self.flush(pool, m);
        }
    }

    /// Moves the counts gathered so far to the pool and the process totals.
    pub fn flush(&self, pool: Option<&PoolStats>, m: &Metrics) {
        self.flush_due.store(false, Ordering::Relaxed);
        let take = |a: &AtomicU64| a.swap(0, Ordering::Relaxed);
        let (bytes_in, bytes_out, queries) = (
            take(&self.bytes_in),
            take(&self.bytes_out),
            take(&self.queries),
        );
        if bytes_in == 0 && bytes_out == 0 && queries == 0 {
            return;
        }
        m.bytes_client_to_server.increment(bytes_in);
        m.bytes_server_to_client.increment(bytes_out);
        m.queries.increment(queries);
        if let Some(p) = pool {
            p.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
            p.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
            p.queries.fetch_add(queries, Ordering::Relaxed);
        }
    }

    /// A new server connection knows nothing of requests sent to the last one.
    pub fn reset_timers(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
        self.xact_since.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_is_counted_once_with_its_queries_and_bytes() {
        let m = Metrics::new();
        let pool = PoolStats::default();
        let t = Tally::default();
        t.request(0);
        t.query();
        t.bytes_in(20);
        t.bytes_out(100);
        t.ready(b'T', 0, Some(&pool), &m);
        assert_eq!(pool.transactions.load(Ordering::Relaxed), 0);
        t.request(0);
        t.query();
        t.ready(b'I', 0, Some(&pool), &m);
        t.flush_if_due(Some(&pool), &m);
        let s = pool.snapshot();
        assert_eq!(
            (s.transactions, s.queries, s.bytes_in, s.bytes_out),
            (1, 2, 20, 100)
        );
        assert_eq!(pool.query_time.count(), 2);
        // Nothing open: another idle ReadyForQuery adds nothing.
        t.ready(b'I', 0, Some(&pool), &m);
        assert_eq!(pool.snapshot().transactions, 1);
        let text = m.render();
        assert!(text.contains("pgpivot_transactions_total 1"), "{text}");
        assert!(text.contains("pgpivot_queries_total 2"), "{text}");
        assert!(
            text.contains("pgpivot_client_to_server_bytes_total 20"),
            "{text}"
        );
    }

    #[test]
    fn pipelined_transactions_each_count() {
        let m = Metrics::new();
        let pool = PoolStats::default();
        let t = Tally::default();
        t.request(0);
        t.request(1);
        t.ready(b'I', 1, Some(&pool), &m);
        t.ready(b'I', 0, Some(&pool), &m);
        assert_eq!(pool.snapshot().transactions, 2);
        assert_eq!(pool.query_time.count(), 1);
    }
}
