//! The proxy's side of the admin commands: snapshots of cached state (never a backend round
//! trip) and the operator's actions.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use pgpivot_admin::{
    Action, ActionFuture, ClientInfo, Control, FailoverInfo, NodeInfo, PoolInfo, PoolStats,
    ProcessInfo, ServerInfo, SettingInfo,
};

use crate::session::Ctx;
use crate::topology::{Health, Operator, Role};

/// How long PAUSE waits for running transactions before it reports the stragglers.
const PAUSE_WAIT: Duration = Duration::from_secs(30);

/// A standby's `sync_state` among the primary's WAL senders, by the name its WAL receiver
/// gives; none when no sender or several share that name (which one is it? not guessed).
fn sync_state(senders: &[(String, String)], name: Option<&str>) -> Option<String> {
    let name = name?;
    let mut found = senders.iter().filter(|(n, _)| n == name);
    match (found.next(), found.next()) {
        (Some((_, state)), None) => Some(state.clone()),
        _ => None,
    }
}

impl Control for Ctx {
    fn nodes(&self) -> Vec<NodeInfo> {
        let table = self.topology.current();
        let nodes = self.topology.nodes();
        let primary = table
            .primary
            .as_ref()
            .and_then(|p| nodes.iter().find(|n| n.id == p.node_id));
        let primary_lsn = primary.and_then(|n| n.lsn);
        let senders = primary.map_or(&[][..], |n| &n.senders[..]);
        nodes
            .iter()
            .map(|n| {
                let routed = table.primary.as_ref().is_some_and(|p| p.node_id == n.id);
                NodeInfo {
                    id: n.id,
                    host: n.host.clone(),
                    port: n.port,
                    weight: n.weight,
                    reachable: match n.health {
                        Health::Up => Some(true),
                        Health::Down => Some(false),
                        Health::Unknown => None,
                    },
                    probed_role: match (n.health, n.in_recovery) {
                        (Health::Up, Some(false)) => "primary",
                        (Health::Up, Some(true)) => "standby",
                        _ if n.role == Role::Primary => "primary",
                        _ => "unknown",
                    },
                    routed_primary: routed,
                    detached: n.detached,
                    fenced: n.fenced.clone(),
                    timeline: n.timeline,
                    lsn: n.lsn,
                    lag_bytes: match (routed, n.in_recovery, primary_lsn, n.lsn) {
                        (false, Some(true), Some(p), Some(s)) => Some(p.saturating_sub(s)),
                        _ => None,
                    },
                    lag_seconds: match n.in_recovery {
                        Some(true) => n.replay_lag,
                        _ => None,
                    },
                    replication_state: match n.in_recovery {
                        Some(true) => n.receiver.clone(),
                        _ => None,
                    },
                    replication_sync_state: match (routed, n.in_recovery) {
                        (false, Some(true)) => sync_state(senders, n.wal_name.as_deref()),
                        _ => None,
                    },
                    last_probe: n.last_probe,
                    last_latency: n.last_latency,
                    consecutive_failures: n.consecutive_failures,
                    last_error: n.last_error.clone(),
                    last_status_change: Some(n.last_status_change),
                    checks: n.checks.clone(),
                    statements: self.topology.statements(n.id),
                }
            })
            .collect()
    }

    fn pools(&self) -> Vec<PoolInfo> {
        let mut pools: Vec<PoolInfo> = self
            .pools
            .all()
            .into_iter()
            .map(|(key, pool)| {
                let c = pool.counts();
                let st = pool.stats().snapshot();
                PoolInfo {
                    node_id: key.node_id,
                    user: key.user,
                    database: key.database,
                    mode: self.config.load().pool.mode.as_str(),
                    size: pool.size(),
                    idle: c.idle,
                    active: c.active,
                    waiting: c.waiting,
                    connects: st.created,
                    stats: PoolStats {
                        transactions: st.transactions,
                        queries: st.queries,
                        bytes_in: st.bytes_in,
                        bytes_out: st.bytes_out,
                        wait: Duration::from_micros(st.wait_micros),
                        query_time: Duration::from_micros(st.query_micros),
                        query_p99: (st.query_p99_micros > 0)
                            .then(|| Duration::from_micros(st.query_p99_micros)),
                    },
                }
            })
            .collect();
        pools.sort_by(|a, b| {
            (a.node_id, &a.database, &a.user).cmp(&(b.node_id, &b.database, &b.user))
        });
        pools
    }

    fn clients(&self) -> Vec<ClientInfo> {
        let mut clients: Vec<ClientInfo> = self
            .cancels
            .clients(self.clock.now())
            .into_iter()
            .map(|c| ClientInfo {
                idle_seconds: c.idle_seconds.unwrap_or(0),
                id: c.id,
                user: c.meta.user,
                database: c.meta.database,
                application_name: c.meta.application_name,
                addr: c
                    .meta
                    .addr
                    .map_or_else(|| "unix socket".to_string(), |a| a.to_string()),
                connected_at: c.meta.connected_at,
                tls: c.meta.tls.unwrap_or_default(),
                state: if c.server_pid.is_some() {
                    "active"
                } else {
                    "idle"
                },
                server_pid: c.server_pid,
                node_id: c.node,
                pinned: None,
            })
            .collect();
        clients.sort_by_key(|c| c.id);
        clients
    }

    fn servers(&self) -> Vec<ServerInfo> {
        let now = SystemTime::now();
        let mut servers = Vec::new();
        for (key, pool) in self.pools.all() {
            for (pid, age) in pool.idle_servers() {
                servers.push(ServerInfo {
                    pid,
                    node_id: key.node_id,
                    user: key.user.clone(),
                    database: key.database.clone(),
                    state: "idle",
                    connected_at: now.checked_sub(age),
                    client_id: None,
                });
            }
        }
        for c in self.cancels.clients(self.clock.now()) {
            if let (Some(pid), Some(node)) = (c.server_pid, c.node) {
                servers.push(ServerInfo {
                    pid,
                    node_id: node,
                    user: c.meta.user,
                    database: c.meta.database,
                    state: "active",
                    connected_at: None,
                    client_id: Some(c.id),
                });
            }
        }
        servers.sort_by_key(|s| (s.node_id, s.pid));
        servers
    }

    fn settings(&self) -> Vec<SettingInfo> {
        self.config
            .load()
            .describe_all()
            .into_iter()
            .map(|(key, value, source, help)| SettingInfo {
                key,
                value,
                source,
                help,
            })
            .collect()
    }

    fn failovers(&self) -> Vec<FailoverInfo> {
        self.topology.failovers()
    }

    fn process(&self) -> ProcessInfo {
        ProcessInfo {
            pid: std::process::id(),
            started_at: Some(self.started_at),
            version: env!("CARGO_PKG_VERSION").to_string(),
            clients: self.clients.load(Ordering::Relaxed),
            paused: self.pause.is_paused(),
        }
    }

    fn act(&self, action: Action) -> ActionFuture<'_> {
        Box::pin(async move {
            match action {
                Action::Pause => {
                    self.pause.set(true);
                    tracing::warn!("PAUSE: new transactions are held");
                    let busy = || {
                        self.cancels
                            .sessions()
                            .iter()
                            .filter(|s| s.busy.load(Ordering::SeqCst))
                            .count()
                    };
                    let left = self.pause.wait_quiet(PAUSE_WAIT, busy).await;
                    if left == 0 {
                        Ok("paused: no transaction is running; new ones wait for RESUME".into())
                    } else {
                        Ok(format!(
                            "paused, but {left} sessions are still inside a transaction after {} s",
                            PAUSE_WAIT.as_secs()
                        ))
                    }
                }
                Action::Resume => {
                    let was = self.pause.is_paused();
                    self.pause.set(false);
                    tracing::info!("RESUME");
                    Ok(if was { "resumed" } else { "was not paused" }.into())
                }
                Action::Reload => crate::reload::reload(self).await,
                Action::DetachNode(n) => self.topology.operate(Operator::Detach(n)).await,
                Action::AttachNode(n) => self.topology.operate(Operator::Attach(n)).await,
                Action::SetPrimary(n) => self.topology.operate(Operator::SetPrimary(n)).await,
                Action::KillClient(id) => {
                    if self.cancels.kill(id) {
                        tracing::warn!(client = id, "client killed by an operator");
                        Ok(format!("client {id} disconnected"))
                    } else {
                        Err(format!("there is no client {id}"))
                    }
                }
                Action::Shutdown => {
                    tracing::warn!("SHUTDOWN by an operator: draining");
                    self.shutdown.requested.cancel();
                    Ok("draining: pgpivot stops when the running transactions end".into())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::sync_state;

    #[test]
    fn a_standby_is_found_among_the_senders_by_its_unique_name() {
        let senders = vec![
            ("node1".to_string(), "sync".to_string()),
            ("walreceiver".to_string(), "async".to_string()),
            ("walreceiver".to_string(), "potential".to_string()),
        ];
        assert_eq!(sync_state(&senders, Some("node1")).as_deref(), Some("sync"));
        // Two senders by that name: which is this standby is not guessed.
        assert_eq!(sync_state(&senders, Some("walreceiver")), None);
        assert_eq!(sync_state(&senders, Some("node9")), None);
        assert_eq!(sync_state(&senders, None), None);
    }
}
