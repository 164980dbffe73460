//! The role monitor: one probe loop per node feeding one decision loop.
//!
//! Probes run independently per node so a hung node (timeouts) never delays noticing that
//! another one was promoted. Every answer goes through the [`Decider`]; when the chosen primary
//! changes, a new routing table is published (one log line per role change and per failover).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::decide::{Decider, Decision};
use super::node::{Health, NodeView, ProbeOutcome, Role};
use super::probe::probe;
use super::routing::{
    FailoverRecord, Operator, OperatorReply, PrimaryRoute, RoutingTable, Topology,
};
use crate::config::{BackendNode, CheckSettings, Config};
use crate::metrics::{Liveness, Metrics};

/// Starts the monitor; it runs until `stop` is cancelled. Failovers are counted in `metrics`;
/// the decision loop holds `liveness`'s monitor flag while it runs.
pub fn spawn(
    config: &Config,
    topology: Arc<Topology>,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
    liveness: Arc<Liveness>,
) {
    let (tx, rx) = mpsc::channel::<Probed>(64);
    let mut probes = Probes {
        tx,
        epoch: 0,
        token: stop.child_token(),
    };
    probes.start(&config.backends, &config.check, &stop);
    let nodes = config.backends.iter().map(NodeView::new).collect();
    let decider = Decider::new(nodes, config.check.max_retries);
    let (op_tx, op_rx) = mpsc::channel(8);
    topology.set_operator(op_tx);
    tokio::spawn(async move {
        let _alive = liveness.monitor();
        decide_loop(decider, probes, rx, op_rx, topology, stop, &metrics).await;
    });
}

/// One probe answer: (probe generation, node id, outcome). Answers of an older generation
/// (before a RELOAD) are ignored.
type Probed = (u64, usize, ProbeOutcome);

/// The probe loops, one per node, restarted as a whole by RELOAD.
struct Probes {
    tx: mpsc::Sender<Probed>,
    epoch: u64,
    token: CancellationToken,
}

impl Probes {
    fn start(&mut self, backends: &[BackendNode], check: &CheckSettings, stop: &CancellationToken) {
        self.token.cancel();
        self.token = stop.child_token();
        self.epoch += 1;
        for node in backends {
            let tx = self.tx.clone();
            let check = check.clone();
            let (id, host, port) = (node.id, node.host.clone(), node.port);
            let stop = self.token.clone();
            let epoch = self.epoch;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(check.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let outcome = tokio::select! {
                        _ = stop.cancelled() => return,
                        o = probe(&host, port, &check) => o,
                    };
                    if tx.send((epoch, id, outcome)).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
}

/// Applies an operator's instruction to the decider; the verdict goes back to the console.
fn operate(decider: &mut Decider, op: Operator) -> Result<String, String> {
    match op {
        Operator::Detach(id) => {
            decider.set_detached(id, true)?;
            tracing::warn!(node = id, "node detached by an operator");
            Ok(format!(
                "node {id} detached: it gets no traffic until ATTACH NODE {id}"
            ))
        }
        Operator::Attach(id) => {
            decider.set_detached(id, false)?;
            tracing::info!(node = id, "node attached by an operator");
            Ok(format!("node {id} attached"))
        }
        Operator::SetPrimary(Some(id)) => {
            if !decider.has_node(id) {
                return Err(format!("there is no node {id}"));
            }
            decider.set_operator_primary(Some(id));
            tracing::warn!(node = id, "primary named by an operator");
            Ok(format!(
                "node {id} is the primary while it answers as one, until SET PRIMARY AUTO or until a node appears on a newer timeline"
            ))
        }
        Operator::SetPrimary(None) => {
            decider.set_operator_primary(None);
            tracing::warn!("primary chosen by the role monitor again (SET PRIMARY AUTO)");
            Ok(
                "the role monitor chooses the primary; the operator's choice fences nothing any more"
                    .to_string(),
            )
        }
        Operator::Reload(_) => Err("handled by the decision loop".to_string()),
    }
}

async fn decide_loop(
    mut decider: Decider,
    mut probes: Probes,
    mut rx: mpsc::Receiver<Probed>,
    mut ops: mpsc::Receiver<(Operator, OperatorReply)>,
    topology: Arc<Topology>,
    stop: CancellationToken,
    metrics: &Metrics,
) {
    let mut gap_started: Option<(Instant, Option<usize>)> = Some((Instant::now(), None));
    loop {
        let input = tokio::select! {
            _ = stop.cancelled() => return,
            m = rx.recv() => match m { Some(m) => Ok(m), None => return },
            Some(op) = ops.recv() => Err(op),
        };
        let before: Vec<(Role, Option<String>)> = decider
            .nodes
            .iter()
            .map(|n| (n.role, n.fenced.clone()))
            .collect();
        let mut before = before;
        match input {
            Ok((epoch, id, outcome)) => {
                if epoch != probes.epoch {
                    continue;
                }
                let prev = decider.nodes.iter().find(|n| n.id == id).map(Seen::of);
                decider.observe(id, outcome, SystemTime::now());
                if let (Some(prev), Some(n)) = (prev, decider.nodes.iter().find(|n| n.id == id)) {
                    log_health(&prev, n, decider.max_retries());
                }
            }
            Err((Operator::Reload(config), reply)) => {
                let changed = decider.set_backends(&config.backends, config.check.max_retries);
                probes.start(&config.backends, &config.check, &stop);
                before = decider
                    .nodes
                    .iter()
                    .map(|n| (n.role, n.fenced.clone()))
                    .collect();
                tracing::info!(
                    nodes = decider.nodes.len(),
                    changed,
                    "role monitor reloaded"
                );
                let _ = reply.send(Ok(if changed {
                    "backend list changed".to_string()
                } else {
                    "backend list unchanged".to_string()
                }));
            }
            Err((op, reply)) => {
                let _ = reply.send(operate(&mut decider, op));
            }
        }
        let decision = decider.decide();
        log_role_changes(&before, &decider.nodes);
        let current = topology.current();
        let route = route_for(&decision, &decider.nodes);
        if route != current.primary || decision.reason != current.no_primary_reason {
            publish(
                &topology,
                &current,
                route,
                decision.reason,
                &decider.nodes,
                &mut gap_started,
                metrics,
            );
        }
        topology.set_nodes(decider.nodes.clone());
    }
}

fn route_for(decision: &Decision, nodes: &[NodeView]) -> Option<PrimaryRoute> {
    let id = decision.primary?;
    let n = nodes.iter().find(|n| n.id == id)?;
    Some(PrimaryRoute {
        node_id: n.id,
        host: n.host.clone(),
        port: n.port,
        timeline: n.timeline,
    })
}

fn publish(
    topology: &Topology,
    current: &RoutingTable,
    route: Option<PrimaryRoute>,
    reason: Option<String>,
    nodes: &[NodeView],
    gap_started: &mut Option<(Instant, Option<usize>)>,
    metrics: &Metrics,
) {
    let old = current.primary.clone();
    let primary_changed = old.as_ref().map(|p| p.node_id) != route.as_ref().map(|p| p.node_id);
    let table = topology.publish(RoutingTable {
        generation: 0,
        primary: route.clone(),
        no_primary_reason: reason.clone(),
        published_at: SystemTime::now(),
    });
    if !primary_changed {
        return;
    }
    match (&old, &route) {
        (Some(o), None) => {
            *gap_started = Some((Instant::now(), Some(o.node_id)));
            tracing::warn!(
                generation = table.generation,
                lost = o.node_id,
                addr = %o.addr(),
                timeline = o.timeline.unwrap_or(0),
                reason = reason.as_deref().unwrap_or(""),
                "primary lost; new transactions wait for a primary"
            );
        }
        (_, Some(n)) => {
            let (gap_ms, lost) = match gap_started.take() {
                Some((t, lost)) => (Some(t.elapsed().as_millis() as u64), lost),
                None => (None, None),
            };
            let from = old.as_ref().map(|o| o.node_id).or(lost);
            // The same node coming back after a gap is an outage, not a failover.
            if from.is_some_and(|f| f != n.node_id) {
                metrics.failovers.increment(1);
                if let Some(ms) = gap_ms {
                    metrics.failover_gap.record(ms as f64 / 1000.0);
                }
                topology.record_failover(FailoverRecord {
                    at: SystemTime::now(),
                    from,
                    to: n.node_id,
                    generation: table.generation,
                    gap: gap_ms.map(std::time::Duration::from_millis),
                    clients_affected: 0,
                });
            }
            let standbys: Vec<usize> = nodes
                .iter()
                .filter(|x| x.role == Role::Standby && x.health == Health::Up)
                .map(|x| x.id)
                .collect();
            match from {
                None => tracing::info!(
                    generation = table.generation,
                    node = n.node_id,
                    addr = %n.addr(),
                    timeline = n.timeline.unwrap_or(0),
                    ?standbys,
                    "primary found"
                ),
                Some(from) => tracing::warn!(
                    generation = table.generation,
                    from,
                    to = n.node_id,
                    addr = %n.addr(),
                    timeline = n.timeline.unwrap_or(0),
                    gap_ms = %OptMs(gap_ms),
                    "failover: writes now go to the new primary"
                ),
            }
        }
        (None, None) => {}
    }
}

fn log_role_changes(before: &[(Role, Option<String>)], after: &[NodeView]) {
    for (b, n) in before.iter().zip(after) {
        if b.0 != n.role || b.1 != n.fenced {
            tracing::info!(
                node = n.id,
                addr = %format!("{}:{}", n.host, n.port),
                from = b.0.as_str(),
                to = n.role.as_str(),
                health = n.health.as_str(),
                timeline = n.timeline.unwrap_or(0),
                since_good_probe_ms = %OptMs(ms_since(n.checks.last_success)),
                probe_ms = %OptMs(n.last_latency.map(|d| d.as_millis() as u64)),
                fenced = n.fenced.as_deref().unwrap_or(""),
                error = n.last_error.as_deref().unwrap_or(""),
                "node role changed"
            );
        }
    }
}

/// A node's state before a probe answer, to log what the answer changed.
struct Seen {
    health: Health,
    error: Option<String>,
    since: SystemTime,
}

impl Seen {
    fn of(n: &NodeView) -> Seen {
        Seen {
            health: n.health,
            error: n.last_error.clone(),
            since: n.last_status_change,
        }
    }
}

/// One line when a node goes down or comes up (whatever its role), and one when a probe error
/// starts counting toward the retry budget (not one per probe while it lasts).
fn log_health(prev: &Seen, n: &NodeView, budget: u32) {
    let addr = format!("{}:{}", n.host, n.port);
    let error = n.last_error.as_deref().unwrap_or("");
    match (prev.health, n.health) {
        (a, b) if a == b => {
            if n.health != Health::Down && n.last_error.is_some() && n.last_error != prev.error {
                tracing::warn!(
                    node = n.id,
                    %addr,
                    role = n.role.as_str(),
                    failures = n.consecutive_failures,
                    budget,
                    error,
                    "probe failed; counts toward the retry budget"
                );
            }
        }
        (_, Health::Down) => tracing::warn!(
            node = n.id,
            %addr,
            role = n.role.as_str(),
            timeline = n.timeline.unwrap_or(0),
            failures = n.consecutive_failures,
            since_good_probe_ms = %OptMs(ms_since(n.checks.last_success)),
            error,
            "node down"
        ),
        (was, _) => tracing::info!(
            node = n.id,
            %addr,
            answers_as = match n.in_recovery {
                Some(true) => "standby",
                Some(false) => "primary",
                None => "unknown",
            },
            timeline = n.timeline.unwrap_or(0),
            down_ms = %OptMs((was == Health::Down).then(|| ms_since(Some(prev.since))).flatten()),
            "node up"
        ),
    }
}

fn ms_since(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.elapsed().ok())
        .map(|d| d.as_millis() as u64)
}

/// Milliseconds in a log line: the number, or `-` when unknown (not `Some(12)` / `None`).
struct OptMs(Option<u64>);

impl std::fmt::Display for OptMs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ms) => write!(f, "{ms}"),
            None => f.write_str("-"),
        }
    }
}
