//! From probe answers to a node's health (design 1.1): a refused connection or a server that
//! says it takes no connections marks the node down at once; a timeout or any other error counts
//! toward a small retry budget, so a transient `53300 too many clients` on the primary opens no
//! failover gap. A node coming back is debounced while a primary is known, except when it proves
//! a promotion.

use std::time::SystemTime;

use super::node::{Health, NodeView, ProbeOutcome};

/// Successful probes in a row before a recovered node counts as up again while a primary is
/// known.
pub const RISE: u32 = 2;

/// What the rest of the cluster looks like when an answer arrives.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub primary_known: bool,
    /// Failed probes in a row tolerated before the node is marked down.
    pub max_retries: u32,
    /// Newest timeline observed anywhere before this answer.
    pub newest_timeline: u32,
}

/// Records one probe answer on `n`.
pub fn apply(n: &mut NodeView, outcome: ProbeOutcome, now: SystemTime, ctx: Context) {
    n.last_probe = Some(now);
    record_check(
        &mut n.checks,
        &outcome,
        n.consecutive_failures,
        ctx.max_retries,
        now,
    );
    let before = n.health;
    let down_at_once = outcome.is_down_at_once();
    match outcome {
        ProbeOutcome::Ok {
            in_recovery,
            timeline,
            lsn,
            receiver,
            replay_lag,
            wal_name,
            senders,
            latency,
        } => {
            n.consecutive_failures = 0;
            n.successes_in_row = n.successes_in_row.saturating_add(1);
            n.in_recovery = Some(in_recovery);
            n.timeline = timeline.or(n.timeline);
            n.lsn = lsn;
            n.receiver = receiver;
            n.replay_lag = replay_lag;
            n.wal_name = wal_name;
            n.senders = senders;
            n.last_latency = Some(latency);
            n.last_error = None;
            // A primary on a timeline nobody has shown yet is proof of a promotion: adopting it
            // must not wait for a second probe (it may be the only primary there is).
            let proves_promotion =
                !in_recovery && timeline.is_some_and(|tl| tl > ctx.newest_timeline);
            if n.health != Health::Down
                || !ctx.primary_known
                || n.successes_in_row >= RISE
                || proves_promotion
            {
                n.health = Health::Up;
            }
        }
        ProbeOutcome::Timeout => fail(n, "probe timed out".into(), false, ctx.max_retries),
        ProbeOutcome::Refused(e) | ProbeOutcome::Unavailable(e) | ProbeOutcome::Error(e) => {
            fail(n, e, down_at_once, ctx.max_retries)
        }
    }
    if n.health != before {
        n.last_status_change = now;
    }
}

fn fail(n: &mut NodeView, error: String, down_at_once: bool, max_retries: u32) {
    n.successes_in_row = 0;
    n.consecutive_failures = n.consecutive_failures.saturating_add(1);
    n.last_error = Some(error);
    if down_at_once || n.consecutive_failures > max_retries {
        n.health = Health::Down;
    }
}

/// Keeps a node's probe statistics (`failures_before` is the count before this probe).
fn record_check(
    c: &mut pgpivot_admin::CheckStats,
    outcome: &ProbeOutcome,
    failures_before: u32,
    max_retries: u32,
    now: SystemTime,
) {
    c.total += 1;
    c.last_check = Some(now);
    match outcome {
        ProbeOutcome::Ok { latency, .. } => {
            c.success += 1;
            c.last_success = Some(now);
            c.total_duration += *latency;
            c.min_duration = Some(c.min_duration.map_or(*latency, |m| m.min(*latency)));
            c.max_duration = Some(c.max_duration.map_or(*latency, |m| m.max(*latency)));
        }
        _ => {
            c.fail += 1;
            c.last_failure = Some(now);
            let failures = failures_before as u64 + 1;
            if failures <= max_retries as u64 {
                c.retry += 1;
            }
            c.max_retry = c.max_retry.max(failures.min(max_retries as u64));
        }
    }
}
