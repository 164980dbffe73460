//! Fencing: from probe answers to "which node, if any, gets writes" (design section 1.3).
//!
//! Pure and synchronous so every rule is unit-tested without a database:
//! * only a node that is up and answers `pg_is_in_recovery() = false` can be primary;
//! * the newest timeline is the highest one observed on any node: a primary's WAL timeline or a
//!   standby's `received_tli` (a standby streaming timeline 2 proves that timeline 2 exists). A
//!   primary on an older timeline is a stale primary and gets nothing — even as the only
//!   candidate (an old primary restarted after a failover) — until it comes back as a standby;
//! * a tie at the top gets no writes until an operator names the primary — never guess;
//! * while no primary is known, none is chosen until every node has answered once or been
//!   declared down (bounded by its probe timeout × retry budget), so a node is never chosen
//!   merely for answering first;
//! * an operator's choice (`SET PRIMARY n`) settles the situation it was made in: node n wins
//!   (even on an older timeline) whenever it answers as a primary, until `SET PRIMARY AUTO` or
//!   until a timeline newer than any known then appears (a genuine promotion ends it).
//!
//! Health (down at once, retry budget, debounce) is [`super::health`]'s part. Fences are not
//! remembered: they are recomputed from the observations on every decision, so `SET PRIMARY AUTO`
//! leaves none of the operator's behind.
//!
//! # Several proxies (design 1.6)
//! Two instances probing the same nodes derive the same fences, except from what one of them
//! remembers and the other never saw:
//! * the newest timeline: an instance started after the last node on timeline N died (with no
//!   standby streaming timeline N) accepts a primary on timeline N-1 that an instance running
//!   through the failover keeps fenced (the other way round is impossible);
//! * operator actions (`SET PRIMARY`, `DETACH NODE`) and `ALWAYS_PRIMARY` are per instance;
//! * timing: for a probe interval (or a hung node's retry budget) the instances have seen
//!   different answers. The start-up wait and the newest-timeline rule keep either from routing
//!   to a stale primary; they may briefly disagree on whether there is a primary at all.

use std::time::SystemTime;

use super::health;
use super::node::{Health, NodeView, ProbeOutcome, Role};
use crate::config::NodeFlag;

pub use super::health::RISE;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub primary: Option<usize>,
    /// Why there is no primary, for clients that time out waiting.
    pub reason: Option<String>,
}

/// `SET PRIMARY n`, with the newest timeline known when it was given (at least node `n`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Overruled {
    node: usize,
    by: usize,
    timeline: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OperatorChoice {
    node: usize,
    baseline: u32,
}

pub struct Decider {
    pub nodes: Vec<NodeView>,
    max_retries: u32,
    /// Newest timeline observed on any node, and the node that showed it first.
    newest: Option<(u32, usize)>,
    operator: Option<OperatorChoice>,
    /// Nodes that answered as primaries when an operator's node won, with the chosen node and
    /// their timeline then: they stay fenced, even while that node is down or after its choice
    /// ended, until they are seen in recovery, show a newer timeline (promoted again: a new
    /// situation) or the operator speaks again (`SET PRIMARY`). Otherwise writes could go to
    /// one of them while the chosen node is away and back when it returns: two histories.
    overruled: Vec<Overruled>,
    current: Option<usize>,
    /// The last decision waited for nodes that have not answered yet.
    waiting: bool,
}

impl Decider {
    pub fn new(nodes: Vec<NodeView>, max_retries: u32) -> Self {
        Decider {
            nodes,
            max_retries,
            newest: None,
            operator: None,
            overruled: Vec::new(),
            current: None,
            waiting: false,
        }
    }

    /// Failed probes in a row tolerated before a node is marked down.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// Newest timeline observed on any node (0: none yet).
    pub fn newest_timeline(&self) -> u32 {
        self.newest.map_or(0, |(tl, _)| tl)
    }

    /// The node an operator named primary, while that choice holds.
    pub fn operator_primary(&self) -> Option<usize> {
        self.operator.as_ref().map(|c| c.node)
    }

    /// `SET PRIMARY n` / `SET PRIMARY AUTO`. Fences the choice created go with it: the next
    /// decision recomputes them from the observed timelines.
    pub fn set_operator_primary(&mut self, id: Option<usize>) {
        let newest = self.newest_timeline();
        self.operator = id.map(|node| OperatorChoice {
            node,
            baseline: newest.max(self.timeline_of(node)),
        });
        self.overruled.clear();
    }

    fn timeline_of(&self, id: usize) -> u32 {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .and_then(|n| n.timeline)
            .unwrap_or(0)
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
        if self
            .operator
            .as_ref()
            .is_some_and(|c| !self.has_node(c.node))
        {
            self.operator = None;
        }
        changed
    }

    pub fn has_node(&self, id: usize) -> bool {
        self.nodes.iter().any(|n| n.id == id)
    }

    /// Records one probe answer for node `id`.
    pub fn observe(&mut self, id: usize, outcome: ProbeOutcome, now: SystemTime) {
        let ctx = health::Context {
            primary_known: self.current.is_some(),
            max_retries: self.max_retries,
            newest_timeline: self.newest_timeline(),
        };
        let Some(n) = self.nodes.iter_mut().find(|n| n.id == id) else {
            return;
        };
        let answered = matches!(outcome, ProbeOutcome::Ok { .. });
        health::apply(n, outcome, now, ctx);
        // A detached node is out of the decision, its timeline too: detaching a node promoted
        // by mistake must be enough to keep the real primary's writes.
        if let (true, false, Some(tl)) = (answered, n.detached, n.timeline) {
            if tl > self.newest_timeline() {
                self.newest = Some((tl, id));
            }
        }
    }

    /// Applies the fencing rules to what has been observed.
    pub fn decide(&mut self) -> Decision {
        self.expire_operator_choice();
        let decision = self.choose();
        for n in &mut self.nodes {
            n.role = if Some(n.id) == decision.primary {
                Role::Primary
            } else if n.fenced.is_some() {
                Role::StalePrimary
            } else if n.in_recovery == Some(true) {
                Role::Standby
            } else if n.health == Health::Up && n.in_recovery == Some(false) && !self.waiting {
                // Lost a tie, or another node is flagged ALWAYS_PRIMARY.
                Role::StalePrimary
            } else {
                Role::Unknown
            };
        }
        self.current = decision.primary;
        decision
    }

    /// An operator's choice ends when a timeline newer than any known when it was made
    /// appears: someone promoted a node since, and that is a new situation.
    fn expire_operator_choice(&mut self) {
        let Some(node) = self.operator_primary() else {
            return;
        };
        let own = self.timeline_of(node);
        let Some(choice) = self.operator.as_mut() else {
            return;
        };
        choice.baseline = choice.baseline.max(own);
        let Some((newest, on)) = self.newest else {
            return;
        };
        if newest > choice.baseline {
            tracing::warn!(
                node = choice.node,
                timeline = choice.baseline,
                newer_node = on,
                newer_timeline = newest,
                "the operator's choice of primary ends: a node is on a newer timeline than any \
                 known when it was made"
            );
            self.operator = None;
        }
    }

    fn choose(&mut self) -> Decision {
        self.waiting = false;
        let (newest, seen_on) = self.newest.unwrap_or((0, 0));
        let op = self.operator_primary();
        let pinned = self
            .nodes
            .iter()
            .find(|n| n.flag == NodeFlag::AlwaysPrimary)
            .map(|n| n.id);
        // Recomputed every time: whatever last answered as a primary on an older timeline
        // (down or not) is stale. The operator's node and a pinned node are exempt.
        for n in &mut self.nodes {
            n.fenced = None;
            let tl = n.timeline.unwrap_or(0);
            if n.in_recovery == Some(false)
                && tl < newest
                && Some(n.id) != op
                && Some(n.id) != pinned
            {
                n.fenced = Some(format!(
                    "primary on timeline {tl}, older than timeline {newest} seen on node {seen_on}"
                ));
            }
        }
        // Nodes an operator's choice overruled (see `overruled`).
        let nodes = &mut self.nodes;
        self.overruled.retain(|o| {
            nodes.iter().find(|n| n.id == o.node).is_some_and(|n| {
                n.in_recovery != Some(true) && n.timeline.unwrap_or(0) <= o.timeline
            })
        });
        for o in &self.overruled {
            if let Some(n) = nodes
                .iter_mut()
                .find(|n| n.id == o.node && n.fenced.is_none())
            {
                n.fenced = Some(format!(
                    "an operator named node {} primary over it (SET PRIMARY n or AUTO lifts this)",
                    o.by
                ));
            }
        }
        let candidates: Vec<(usize, u32)> = self
            .nodes
            .iter()
            .filter(|n| {
                n.health == Health::Up
                    && n.in_recovery == Some(false)
                    && n.fenced.is_none()
                    && !n.detached
            })
            .map(|n| (n.id, n.timeline.unwrap_or(0)))
            .collect();

        if let Some(id) = pinned {
            return if candidates.iter().any(|c| c.0 == id) {
                chosen(id)
            } else {
                none(format!(
                    "node {id} is flagged ALWAYS_PRIMARY but is not up as a primary"
                ))
            };
        }
        // The operator's node wins while it answers as a primary. When it does not (down, or a
        // standby), the rules below decide among the nodes it did not overrule.
        if let Some(op) = op.filter(|op| candidates.iter().any(|c| c.0 == *op)) {
            let fenced = self.fence_candidates(op, &format!("an operator named node {op} primary"));
            for node in fenced {
                let timeline = self.timeline_of(node);
                self.overruled.push(Overruled {
                    node,
                    by: op,
                    timeline,
                });
            }
            return chosen(op);
        }
        if self.current.is_none() {
            let silent: Vec<String> = self
                .nodes
                .iter()
                .filter(|n| n.health == Health::Unknown && !n.detached)
                .map(|n| n.id.to_string())
                .collect();
            if !silent.is_empty() {
                self.waiting = true;
                return none(if silent.len() == self.nodes.len() {
                    "the role monitor has not probed the backends yet".to_string()
                } else {
                    format!(
                        "waiting for a first probe answer from node {} (a primary is chosen once \
                         every node has answered or been declared down)",
                        silent.join(", ")
                    )
                });
            }
        }
        let Some(top) = candidates.iter().map(|c| c.1).max() else {
            let stale: Vec<String> = self
                .nodes
                .iter()
                .filter(|n| n.health == Health::Up && n.fenced.is_some())
                .map(|n| format!("node {} on timeline {}", n.id, n.timeline.unwrap_or(0)))
                .collect();
            return none(if stale.is_empty() {
                "no backend answers as primary (pg_is_in_recovery() = false)".to_string()
            } else {
                format!(
                    "no primary on the newest timeline {newest} (seen on node {seen_on}); stale \
                     primary fenced: {}",
                    stale.join(", ")
                )
            });
        };
        let at_top: Vec<usize> = candidates
            .iter()
            .filter(|c| c.1 == top)
            .map(|c| c.0)
            .collect();
        if let [winner] = at_top[..] {
            if op.is_some() && self.current != Some(winner) {
                // A primary the choice never saw (promoted while the operator's node was away):
                // a new situation, as with a newer timeline.
                tracing::warn!(
                    node = op,
                    new_primary = winner,
                    "the operator's choice of primary ends: another node became primary while \
                     the chosen one was unavailable"
                );
                self.operator = None;
            }
            return chosen(winner);
        }
        let ids: Vec<String> = at_top.iter().map(|i| i.to_string()).collect();
        none(format!(
            "split brain: nodes {} all answer as primary on timeline {top}; no writes until an \
             operator names the primary (SET PRIMARY n)",
            ids.join(", ")
        ))
    }

    /// Fences every other node that is up as a primary; returns them.
    fn fence_candidates(&mut self, winner: usize, why: &str) -> Vec<usize> {
        let mut fenced = Vec::new();
        for n in &mut self.nodes {
            if n.id != winner
                && n.health == Health::Up
                && n.in_recovery == Some(false)
                && n.fenced.is_none()
            {
                n.fenced = Some(why.to_string());
                fenced.push(n.id);
            }
        }
        fenced
    }
}

fn chosen(id: usize) -> Decision {
    Decision {
        primary: Some(id),
        reason: None,
    }
}

fn none(reason: String) -> Decision {
    Decision {
        primary: None,
        reason: Some(reason),
    }
}

#[cfg(test)]
mod tests;
