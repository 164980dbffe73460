//! Fencing: from probe answers to "which node, if any, gets writes" (design section 1.3).
//!
//! Pure and synchronous so every rule is unit-tested without a database:
//! * only a node that is up and answers `pg_is_in_recovery() = false` can be primary;
//! * among several, the highest timeline wins and the others are fenced as stale primaries until
//!   they come back as standbys; a timeline below the newest primary timeline ever seen is stale
//!   even when it is the only candidate (an old primary restarted after a failover);
//! * a tie at the top gets no writes until an operator names the primary — never guess;
//! * refused connections mark a node down at once, timeouts only after a retry budget, and a
//!   node coming back must answer `rise` probes in a row before it can take the primary role
//!   from a known one (flap damping) — but never waits while no primary is known.

use std::time::SystemTime;

use super::node::{Health, NodeView, ProbeOutcome, Role};
use crate::config::NodeFlag;

/// Successful probes in a row before a recovered node counts as up again while a primary is
/// known.
const RISE: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub primary: Option<usize>,
    /// Why there is no primary, for clients that time out waiting.
    pub reason: Option<String>,
}

pub struct Decider {
    pub nodes: Vec<NodeView>,
    max_retries: u32,
    /// Newest timeline ever seen on a chosen primary.
    newest_timeline: u32,
    /// Operator's choice (`SET PRIMARY n`), used when a tie must be broken.
    operator_primary: Option<usize>,
    current: Option<usize>,
}

impl Decider {
    pub fn new(nodes: Vec<NodeView>, max_retries: u32) -> Self {
        Decider {
            nodes,
            max_retries,
            newest_timeline: 0,
            operator_primary: None,
            current: None,
        }
    }

    pub fn set_operator_primary(&mut self, id: Option<usize>) {
        self.operator_primary = id;
        if let Some(n) = id.and_then(|id| self.nodes.iter_mut().find(|n| n.id == id)) {
            n.fenced = None;
        }
    }

    /// `DETACH NODE` / `ATTACH NODE`: a detached node is never chosen as primary.
    pub fn set_detached(&mut self, id: usize, detached: bool) -> Result<(), String> {
        let n = self
            .nodes
            .iter_mut()
            .find(|n| n.id == id)
            .ok_or_else(|| format!("there is no node {id}"))?;
        if n.detached != detached {
            n.detached = detached;
            n.last_status_change = SystemTime::now();
        }
        Ok(())
    }

    /// RELOAD: the new backend list. A node with the same id, host and port keeps everything
    /// the monitor knows about it; others start unknown. Returns whether the list changed.
    pub fn set_backends(
        &mut self,
        backends: &[crate::config::BackendNode],
        max_retries: u32,
    ) -> bool {
        self.max_retries = max_retries;
        let mut changed = backends.len() != self.nodes.len();
        let mut old = std::mem::take(&mut self.nodes);
        for b in backends {
            match old
                .iter()
                .position(|n| n.id == b.id && n.host == b.host && n.port == b.port)
            {
                Some(i) => {
                    let mut n = old.swap_remove(i);
                    n.weight = b.weight;
                    n.flag = b.flag;
                    self.nodes.push(n);
                }
                None => {
                    changed = true;
                    self.nodes.push(NodeView::new(b));
                }
            }
        }
        if self.current.is_some_and(|c| !self.has_node(c)) {
            self.current = None;
        }
        changed
    }

    pub fn has_node(&self, id: usize) -> bool {
        self.nodes.iter().any(|n| n.id == id)
    }

    /// Records one probe answer for node `id`.
    pub fn observe(&mut self, id: usize, outcome: ProbeOutcome, now: SystemTime) {
        let primary_known = self.current.is_some();
        let max_retries = self.max_retries;
        let Some(n) = self.nodes.iter_mut().find(|n| n.id == id) else {
            return;
        };
        n.last_probe = Some(now);
        record_check(
            &mut n.checks,
            &outcome,
            n.consecutive_failures,
            max_retries,
            now,
        );
        let before = n.health;
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
                if n.health != Health::Down || !primary_known || n.successes_in_row >= RISE {
                    n.health = Health::Up;
                }
                if in_recovery {
                    // Back as a standby: a stale primary has been dealt with.
                    n.fenced = None;
                }
            }
            ProbeOutcome::Timeout => {
                n.successes_in_row = 0;
                n.consecutive_failures = n.consecutive_failures.saturating_add(1);
                n.last_error = Some("probe timed out".into());
                if n.consecutive_failures > max_retries {
                    n.health = Health::Down;
                }
            }
            ProbeOutcome::Refused(e) | ProbeOutcome::Failed(e) => {
                n.successes_in_row = 0;
                n.consecutive_failures = n.consecutive_failures.saturating_add(1);
                n.last_error = Some(e);
                n.health = Health::Down;
            }
        }
        if n.health != before {
            n.last_status_change = now;
        }
    }

    /// Applies the fencing rules to what has been observed.
    ///
    /// (Probe statistics are kept by [`record_check`].)
    pub fn decide(&mut self) -> Decision {
        let decision = self.choose();
        if let Some(p) = decision.primary {
            if let Some(tl) = self
                .nodes
                .iter()
                .find(|n| n.id == p)
                .and_then(|n| n.timeline)
            {
                self.newest_timeline = self.newest_timeline.max(tl);
            }
        }
        for n in &mut self.nodes {
            n.role = if Some(n.id) == decision.primary {
                Role::Primary
            } else if n.fenced.is_some() {
                Role::StalePrimary
            } else if n.in_recovery == Some(true) {
                Role::Standby
            } else if n.health == Health::Up && n.in_recovery == Some(false) {
                Role::StalePrimary
            } else {
                Role::Unknown
            };
        }
        self.current = decision.primary;
        decision
    }

    fn choose(&mut self) -> Decision {
        let newest = self.newest_timeline;
        // Fence anything answering as primary on a timeline older than the newest we trusted.
        for n in &mut self.nodes {
            if n.health == Health::Up && n.in_recovery == Some(false) {
                let tl = n.timeline.unwrap_or(0);
                if tl < newest && n.fenced.is_none() && self.operator_primary != Some(n.id) {
                    n.fenced = Some(format!(
                        "primary on timeline {tl}, older than timeline {newest} of the newest primary"
                    ));
                }
            }
        }
        let candidates: Vec<(usize, u32, NodeFlag)> = self
            .nodes
            .iter()
            .filter(|n| {
                n.health == Health::Up
                    && n.in_recovery == Some(false)
                    && n.fenced.is_none()
                    && !n.detached
            })
            .map(|n| (n.id, n.timeline.unwrap_or(0), n.flag))
            .collect();

        if let Some(pinned) = self
            .nodes
            .iter()
            .find(|n| n.flag == NodeFlag::AlwaysPrimary)
        {
            let id = pinned.id;
            return if candidates.iter().any(|c| c.0 == id) {
                Decision {
                    primary: Some(id),
                    reason: None,
                }
            } else {
                Decision {
                    primary: None,
                    reason: Some(format!(
                        "node {id} is flagged ALWAYS_PRIMARY but is not up as a primary"
                    )),
                }
            };
        }
        if let Some(op) = self.operator_primary {
            if candidates.iter().any(|c| c.0 == op) {
                self.fence_others(op, "an operator named another node primary");
                return Decision {
                    primary: Some(op),
                    reason: None,
                };
            }
        }
        let Some(top) = candidates.iter().map(|c| c.1).max() else {
            let reason = if self.nodes.iter().all(|n| n.health == Health::Unknown) {
                "the role monitor has not probed the backends yet".to_string()
            } else {
                "no backend answers as primary (pg_is_in_recovery() = false)".to_string()
            };
            return Decision {
                primary: None,
                reason: Some(reason),
            };
        };
        let at_top: Vec<usize> = candidates
            .iter()
            .filter(|c| c.1 == top)
            .map(|c| c.0)
            .collect();
        if at_top.len() > 1 {
            let ids: Vec<String> = at_top.iter().map(|i| i.to_string()).collect();
            return Decision {
                primary: None,
                reason: Some(format!(
                    "split brain: nodes {} all answer as primary on timeline {top}; no writes until an operator names the primary",
                    ids.join(", ")
                )),
            };
        }
        let winner = at_top[0];
        self.fence_others(winner, "");
        Decision {
            primary: Some(winner),
            reason: None,
        }
    }

    fn fence_others(&mut self, winner: usize, why: &str) {
        let wtl = self
            .nodes
            .iter()
            .find(|n| n.id == winner)
            .and_then(|n| n.timeline)
            .unwrap_or(0);
        for n in &mut self.nodes {
            if n.id != winner
                && n.health == Health::Up
                && n.in_recovery == Some(false)
                && n.fenced.is_none()
            {
                n.fenced = Some(if why.is_empty() {
                    format!(
                        "primary on timeline {}, older than timeline {wtl} of node {winner}",
                        n.timeline.unwrap_or(0)
                    )
                } else {
                    why.to_string()
                });
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendNode;
    use std::time::Duration;

    fn decider(n: usize) -> Decider {
        let nodes = (0..n)
            .map(|i| {
                NodeView::new(&BackendNode {
                    id: i,
                    host: "127.0.0.1".into(),
                    port: 5432 + i as u16,
                    weight: 1.0,
                    data_dir: None,
                    flag: NodeFlag::AllowToFailover,
                })
            })
            .collect();
        Decider::new(nodes, 2)
    }

    fn ok(rec: bool, tl: u32) -> ProbeOutcome {
        ProbeOutcome::Ok {
            in_recovery: rec,
            timeline: Some(tl),
            lsn: Some(0),
            receiver: None,
            replay_lag: None,
            wal_name: None,
            senders: Vec::new(),
            latency: Duration::from_millis(1),
        }
    }

    fn round(d: &mut Decider, obs: Vec<(usize, ProbeOutcome)>) -> Decision {
        for (id, o) in obs {
            d.observe(id, o, SystemTime::now());
        }
        d.decide()
    }

    #[test]
    fn normal_failover() {
        let mut d = decider(2);
        assert_eq!(
            round(&mut d, vec![(0, ok(false, 1)), (1, ok(true, 1))]).primary,
            Some(0)
        );
        let r = round(
            &mut d,
            vec![
                (0, ProbeOutcome::Refused("refused".into())),
                (1, ok(true, 1)),
            ],
        );
        assert_eq!(r.primary, None);
        assert!(r.reason.is_some());
        assert_eq!(round(&mut d, vec![(1, ok(false, 2))]).primary, Some(1));
        assert_eq!(d.nodes[0].health, Health::Down);
        assert_eq!(d.nodes[1].role, Role::Primary);
    }

    #[test]
    fn old_primary_back_on_old_timeline_is_fenced_until_standby() {
        let mut d = decider(2);
        round(&mut d, vec![(0, ok(false, 1)), (1, ok(true, 1))]);
        round(
            &mut d,
            vec![(0, ProbeOutcome::Refused("x".into())), (1, ok(false, 2))],
        );
        // Split brain: the old primary restarts as a primary on timeline 1 (it needs two good
        // probes to count as up again while a primary is known).
        for _ in 0..2 {
            let r = round(&mut d, vec![(0, ok(false, 1)), (1, ok(false, 2))]);
            assert_eq!(r.primary, Some(1));
        }
        assert_eq!(d.nodes[0].role, Role::StalePrimary);
        // The new primary dies: the stale one must still get nothing.
        let r = round(
            &mut d,
            vec![(1, ProbeOutcome::Refused("x".into())), (0, ok(false, 1))],
        );
        assert_eq!(r.primary, None);
        assert_eq!(d.nodes[0].role, Role::StalePrimary);
        // Rejoined as a standby: fence lifted, it is a standby.
        round(&mut d, vec![(0, ok(true, 2))]);
        assert!(d.nodes[0].fenced.is_none());
        assert_eq!(d.nodes[0].role, Role::Standby);
    }

    #[test]
    fn tie_means_no_writes_until_operator_decides() {
        let mut d = decider(3);
        let r = round(
            &mut d,
            vec![
                (0, ProbeOutcome::Refused("x".into())),
                (1, ok(false, 2)),
                (2, ok(false, 2)),
            ],
        );
        assert_eq!(r.primary, None);
        assert!(r.reason.unwrap().contains("split brain"));
        d.set_operator_primary(Some(2));
        let r = d.decide();
        assert_eq!(r.primary, Some(2));
        assert_eq!(d.nodes[1].role, Role::StalePrimary);
    }

    #[test]
    fn standby_never_gets_writes_and_timeouts_use_the_budget() {
        let mut d = decider(2);
        assert_eq!(
            round(&mut d, vec![(0, ok(true, 1)), (1, ok(true, 1))]).primary,
            None
        );
        assert_eq!(round(&mut d, vec![(0, ok(false, 1))]).primary, Some(0));
        for _ in 0..2 {
            assert_eq!(
                round(&mut d, vec![(0, ProbeOutcome::Timeout)]).primary,
                Some(0)
            );
        }
        assert_eq!(
            round(&mut d, vec![(0, ProbeOutcome::Timeout)]).primary,
            None
        );
    }

    #[test]
    fn higher_timeline_wins_immediately() {
        let mut d = decider(2);
        round(&mut d, vec![(0, ok(false, 1)), (1, ok(true, 1))]);
        // Standby promoted while the old primary still runs (no kill): newer timeline wins.
        let r = round(&mut d, vec![(0, ok(false, 1)), (1, ok(false, 2))]);
        assert_eq!(r.primary, Some(1));
        assert_eq!(d.nodes[0].role, Role::StalePrimary);
    }

    #[test]
    fn flapping_node_needs_rise_while_primary_known() {
        let mut d = decider(2);
        round(&mut d, vec![(0, ok(false, 1)), (1, ok(true, 1))]);
        round(&mut d, vec![(1, ProbeOutcome::Refused("x".into()))]);
        round(&mut d, vec![(1, ok(true, 1))]);
        assert_eq!(d.nodes[1].health, Health::Down);
        round(&mut d, vec![(1, ok(true, 1))]);
        assert_eq!(d.nodes[1].health, Health::Up);
    }

    #[test]
    fn always_primary_flag() {
        let mut d = decider(2);
        d.nodes[1].flag = NodeFlag::AlwaysPrimary;
        let r = round(&mut d, vec![(0, ok(false, 3)), (1, ok(true, 1))]);
        assert_eq!(r.primary, None);
        let r = round(&mut d, vec![(1, ok(false, 1))]);
        assert_eq!(r.primary, Some(1));
    }
}
