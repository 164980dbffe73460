//! Server connection pools, one per (node, user, database, startup options).
//!
//! Pools live in a concurrent map; when the primary moves, the pools of nodes that are no longer
//! primary are closed (idle connections dropped, waiters sent elsewhere) so nothing new is sent
//! to them.

#[allow(clippy::module_inception)]
mod pool;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

pub use pool::{CheckoutError, Pool, PoolCounts, PoolSettings};
pub use server::Server;

use crate::config::Config;
use crate::topology::{PrimaryRoute, Topology};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub node_id: usize,
    pub addr: String,
    pub user: String,
    pub database: String,
    /// The `options` startup parameter (`-c name=value ...`): kept in the key because it cannot be
    /// replayed with SET reliably.
    pub options: String,
}

pub struct Pools {
    map: DashMap<PoolKey, Arc<Pool>>,
    size: usize,
    connect_timeout: Duration,
    lifetime: Duration,
    idle_timeout: Duration,
}

impl Pools {
    pub fn new(config: &Config) -> Arc<Self> {
        Arc::new(Pools {
            map: DashMap::new(),
            size: config.pool.size,
            connect_timeout: config.connect_timeout,
            lifetime: config.pool.server_lifetime,
            idle_timeout: config.pool.server_idle_timeout,
        })
    }

    /// The pool for this client on the given primary, created on first use.
    pub fn get(
        &self,
        route: &PrimaryRoute,
        user: &str,
        database: &str,
        options: &str,
    ) -> Arc<Pool> {
        let key = PoolKey {
            node_id: route.node_id,
            addr: route.addr(),
            user: user.to_string(),
            database: database.to_string(),
            options: options.to_string(),
        };
        if let Some(p) = self.map.get(&key) {
            if !p.is_closed() {
                return p.clone();
            }
        }
        let pool = Arc::new(Pool::new(
            key.node_id,
            key.addr.clone(),
            key.user.clone(),
            key.database.clone(),
            PoolSettings {
                size: self.size,
                connect_timeout: self.connect_timeout,
                lifetime: self.lifetime,
                idle_timeout: self.idle_timeout,
            },
        ));
        self.map.insert(key, pool.clone());
        pool
    }

    /// Every pool, for SHOW commands and metrics.
    pub fn all(&self) -> Vec<(PoolKey, Arc<Pool>)> {
        self.map
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    /// Closes the pools of every node but `primary`.
    pub fn retain_primary(&self, primary: Option<usize>) {
        self.map.retain(|k, p| {
            if Some(k.node_id) == primary {
                true
            } else {
                p.close();
                false
            }
        });
    }

    /// Background upkeep: close pools when the primary moves; reap idle connections.
    pub fn spawn_upkeep(self: &Arc<Self>, topology: Arc<Topology>, stop: CancellationToken) {
        let pools = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut primary = topology.current().primary.as_ref().map(|p| p.node_id);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {
                        for e in pools.map.iter() {
                            e.value().reap();
                        }
                    }
                    _ = topology.changed() => {}
                }
                let now = topology.current().primary.as_ref().map(|p| p.node_id);
                if now != primary {
                    primary = now;
                    pools.retain_primary(now);
                }
            }
        });
    }
}
