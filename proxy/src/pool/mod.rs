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

pub use pool::{CheckoutError, Pool, PoolCounts, PoolSettings, SharedPoolSettings};
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

/// (user, database, options): a client's identity across nodes.
type WelcomeKey = (String, String, String);

/// How many distinct identities keep a greeting for logins during a failover gap.
const MAX_WELCOMES: usize = 10_000;

pub struct Pools {
    map: DashMap<PoolKey, Arc<Pool>>,
    /// The last greeting each identity's pool gave, kept when the pool goes with its node: a
    /// client logging in while no primary is known is greeted with it and waits only when it
    /// sends a query (a liveness probe's `SHOW pool_nodes` needs no server at all).
    last_welcome: DashMap<WelcomeKey, Arc<std::collections::HashMap<String, String>>>,
    settings: SharedPoolSettings,
}

impl Pools {
    pub fn new(config: &Config) -> Arc<Self> {
        Arc::new(Pools {
            map: DashMap::new(),
            last_welcome: DashMap::new(),
            settings: Arc::new(arc_swap::ArcSwap::from_pointee(Self::settings_of(config))),
        })
    }

    fn settings_of(config: &Config) -> PoolSettings {
        PoolSettings {
            size: config.pool.size,
            connect_timeout: config.connect_timeout,
            lifetime: config.pool.server_lifetime,
            idle_timeout: config.pool.server_idle_timeout,
        }
    }

    /// RELOAD: new sizes and timeouts, for existing pools too (a smaller pool shrinks as its
    /// connections come back).
    pub fn reconfigure(&self, config: &Config) {
        self.settings.store(Arc::new(Self::settings_of(config)));
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
            self.settings.clone(),
        ));
        self.map.insert(key, pool.clone());
        pool
    }

    /// The parameters to greet a client with without a server connection: its pool's on the
    /// primary, or the last ones its identity got. `None` if it never had a server connection.
    pub fn welcome(
        &self,
        route: Option<&PrimaryRoute>,
        user: &str,
        database: &str,
        options: &str,
    ) -> Option<Arc<std::collections::HashMap<String, String>>> {
        let key = (user.to_string(), database.to_string(), options.to_string());
        if let Some(route) = route {
            if let Some(w) = self.get(route, user, database, options).welcome() {
                if self.last_welcome.len() < MAX_WELCOMES || self.last_welcome.contains_key(&key) {
                    self.last_welcome.insert(key, w.clone());
                }
                return Some(w);
            }
        }
        self.last_welcome.get(&key).map(|w| w.clone())
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
