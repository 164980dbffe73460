//! The reference HA topology on one machine: a repmgr-managed primary and standby (repmgrd
//! with automatic failover on both) and two pgpivot instances with the same backend list, as
//! the two proxy Deployments of the reference deployment (namespaces `primary` and `standby`).
//!
//! Used by the quickstart (`pgpivot-lab`), its failover demo and the repmgr tests.

use std::time::Duration;

use anyhow::Context;
use tokio_postgres::SimpleQueryMessage;

use crate::{connect, Cluster, ClusterOptions, Pivot, PivotOptions};

/// How to build the topology.
#[derive(Debug, Clone)]
pub struct TopologyOptions {
    /// Streaming standbys besides the primary.
    pub standbys: usize,
    /// Synchronous replication on the initial primary (acknowledged commits survive its loss).
    pub synchronous: bool,
    /// Listen addresses of the two instances (`None`: a free loopback port).
    pub listen: [Option<String>; 2],
    /// `session` or `transaction`.
    pub pool_mode: String,
    pub check_interval_ms: u64,
    pub check_timeout_ms: u64,
    /// Turn on each instance's admin console (user `admin`/`admin`, loopback, free port).
    pub admin_console: bool,
    /// More environment for both instances (wins over everything above).
    pub env: Vec<(String, String)>,
}

impl Default for TopologyOptions {
    fn default() -> Self {
        TopologyOptions {
            standbys: 1,
            synchronous: true,
            listen: [None, None],
            pool_mode: "session".into(),
            check_interval_ms: 200,
            check_timeout_ms: 1500,
            admin_console: true,
            env: Vec::new(),
        }
    }
}

/// The admin console's credentials in the topology.
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin";

/// A running topology; dropping it stops everything (pgpivot first, then repmgrd and nodes).
pub struct Topology {
    /// The two pgpivot instances ("A" and "B"). Declared first: dropped before the cluster.
    pub pivots: Vec<Pivot>,
    pub cluster: Cluster,
    pub pool_mode: String,
}

impl Topology {
    /// Starts the cluster (blocking work off the runtime) and both instances; returns when both
    /// route to node 0.
    pub async fn start(opts: TopologyOptions) -> anyhow::Result<Topology> {
        let copts = ClusterOptions {
            standbys: opts.standbys,
            synchronous: opts.synchronous,
            repmgr: true,
            max_connections: 300,
            ..Default::default()
        };
        let cluster = tokio::task::spawn_blocking(move || Cluster::start(copts))
            .await
            .context("cluster start task")??;
        let mut pivots = Vec::new();
        for listen in &opts.listen {
            let mut env = vec![
                ("PGPIVOT_POOL_MODE".to_string(), opts.pool_mode.clone()),
                ("PGPOOL_PORT_NUMBER".to_string(), port_of(listen)),
            ];
            if opts.admin_console {
                env.extend([
                    ("PGPOOL_ADMIN_USERNAME".to_string(), ADMIN_USER.to_string()),
                    (
                        "PGPOOL_ADMIN_PASSWORD".to_string(),
                        ADMIN_PASSWORD.to_string(),
                    ),
                    ("PGPIVOT_ADMIN_ADDR".to_string(), "127.0.0.1:0".to_string()),
                ]);
            }
            env.extend(opts.env.iter().cloned());
            let popts = PivotOptions {
                check_interval_ms: opts.check_interval_ms,
                check_timeout_ms: opts.check_timeout_ms,
                primary_wait_timeout_ms: 30_000,
                listen: listen.clone(),
                env,
                ..Default::default()
            };
            pivots.push(Pivot::start(&cluster, popts).await?);
        }
        Ok(Topology {
            pivots,
            cluster,
            pool_mode: opts.pool_mode,
        })
    }

    /// Instance names for reports: "A", "B".
    pub fn name(k: usize) -> char {
        (b'A' + k as u8) as char
    }

    /// `SHOW pool_nodes` through instance `k`, as a small text table of the columns that tell
    /// the story (node, port, status, role as pgpivot sees it and as the node reports it).
    pub async fn pool_nodes(&self, k: usize) -> anyhow::Result<String> {
        let client = connect(&self.pivots[k].conn_string()).await?;
        let msgs = tokio::time::timeout(
            Duration::from_secs(5),
            client.simple_query("SHOW pool_nodes"),
        )
        .await
        .context("SHOW pool_nodes timed out")??;
        let cols = ["node_id", "port", "status", "pg_status", "role", "pg_role"];
        let mut out = format!(
            "{:<8}{:<7}{:<8}{:<10}{:<9}{}\n",
            cols[0], cols[1], cols[2], cols[3], cols[4], cols[5]
        );
        for m in msgs {
            if let SimpleQueryMessage::Row(r) = m {
                let v: Vec<&str> = cols.iter().map(|c| r.get(*c).unwrap_or("?")).collect();
                out.push_str(&format!(
                    "{:<8}{:<7}{:<8}{:<10}{:<9}{}\n",
                    v[0], v[1], v[2], v[3], v[4], v[5]
                ));
            }
        }
        Ok(out)
    }

    /// The node instance `k` routes writes to right now.
    pub fn routes_to(&self, k: usize) -> Option<usize> {
        self.pivots[k].primary()
    }
}

fn port_of(listen: &Option<String>) -> String {
    listen
        .as_deref()
        .and_then(|l| l.rsplit(':').next())
        .filter(|p| *p != "0")
        .unwrap_or("5432")
        .to_string()
}
