//! The things a benchmark connects to: PostgreSQL directly, PgBouncer, Pgpool-II, and pgpivot
//! in session and in transaction mode, each started on a free loopback port in front of a
//! [`Cluster`], stopped when dropped.

pub mod pgbouncer;
pub mod pgpivot;
pub mod pgpool;

use std::time::{Duration, Instant};

use anyhow::bail;
use pgpivot_tests::{pg_bin, Cluster};

use crate::daemon::{Daemon, WorkDir};

/// Which target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Direct,
    PgBouncer,
    Pgpool,
    PivotSession,
    PivotTransaction,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Direct,
        Kind::PgBouncer,
        Kind::Pgpool,
        Kind::PivotSession,
        Kind::PivotTransaction,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::PgBouncer => "pgbouncer",
            Kind::Pgpool => "pgpool",
            Kind::PivotSession => "pgpivot-session",
            Kind::PivotTransaction => "pgpivot-tx",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Kind> {
        Ok(match s {
            "direct" => Kind::Direct,
            "pgbouncer" => Kind::PgBouncer,
            "pgpool" | "pgpool2" | "pgpool-ii" => Kind::Pgpool,
            "pgpivot-session" | "session" => Kind::PivotSession,
            "pgpivot-tx" | "pgpivot-transaction" | "transaction" => Kind::PivotTransaction,
            "pgpivot" => bail!("say pgpivot-session or pgpivot-tx"),
            other => bail!(
                "unknown target {other} (direct, pgbouncer, pgpool, pgpivot-session, pgpivot-tx)"
            ),
        })
    }

    /// Comma-separated list; `all` for every target.
    pub fn parse_list(s: &str) -> anyhow::Result<Vec<Kind>> {
        if s == "all" {
            return Ok(Kind::ALL.to_vec());
        }
        let mut v = Vec::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let k = Kind::parse(part.trim())?;
            if !v.contains(&k) {
                v.push(k);
            }
        }
        v.sort();
        Ok(v)
    }

    /// The pgpivot target a row is compared with: the one in the same pooling mode
    /// (PgBouncer pools transactions, Pgpool-II sessions). None for direct and pgpivot itself.
    pub fn pivot_peer(self) -> Option<Kind> {
        match self {
            Kind::PgBouncer => Some(Kind::PivotTransaction),
            Kind::Pgpool => Some(Kind::PivotSession),
            _ => None,
        }
    }

    /// Why this target cannot run pgbench's `-M mode` (None: it can).
    pub fn unsupported_mode(self, mode: &str) -> Option<&'static str> {
        match (self, mode) {
            (Kind::PgBouncer, "prepared") => {
                Some("PgBouncer 1.18 transaction pooling has no protocol-level prepared statements")
            }
            _ => None,
        }
    }
}

/// Pool settings shared by every pooler of a run.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Server connections per pool (pgpivot, PgBouncer); Pgpool-II's `num_init_children`.
    pub pool_size: u32,
    /// Client connections a pooler accepts at once (PgBouncer, pgpivot).
    pub max_clients: u32,
    /// Pgpool-II's `num_init_children` when it should differ from `pool_size`.
    pub pgpool_children: Option<u32>,
    /// Pgpool-II's `load_balance_mode` (Bitnami: on).
    pub pgpool_load_balance: bool,
    /// Pgpool-II's health check and streaming-replication check period in seconds.
    pub pgpool_check_period: u32,
    /// Client authentication at the poolers: `scram-sha-256` or `md5`.
    pub auth: &'static str,
    /// pgpivot's `PGPIVOT_CHECK_INTERVAL_MS`.
    pub pivot_check_interval_ms: u64,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            pool_size: 20,
            max_clients: 2000,
            pgpool_children: None,
            pgpool_load_balance: true,
            pgpool_check_period: 1,
            auth: "scram-sha-256",
            pivot_check_interval_ms: 500,
        }
    }
}

/// A running target. Dropping it stops its process and removes its files.
pub struct Target {
    pub kind: Kind,
    pub port: u16,
    /// Most clients it can hold at once (Pgpool-II: its children), if limited.
    pub client_limit: Option<u32>,
    pub daemon: Option<Daemon>,
    pub dir: Option<WorkDir>,
}

impl Target {
    pub fn start(kind: Kind, cluster: &Cluster, s: &PoolSettings) -> anyhow::Result<Target> {
        let t = match kind {
            Kind::Direct => Target {
                kind,
                port: cluster.port(0),
                client_limit: None,
                daemon: None,
                dir: None,
            },
            Kind::PgBouncer => pgbouncer::start(cluster, 0, s)?,
            Kind::Pgpool => pgpool::start(cluster, s, None)?,
            Kind::PivotSession => pgpivot::start(cluster, s, "session")?,
            Kind::PivotTransaction => pgpivot::start(cluster, s, "transaction")?,
        };
        let o = cluster.options();
        wait_ready(
            t.port,
            &o.app_user,
            &o.app_password,
            &o.database,
            kind.name(),
        )?;
        Ok(t)
    }

    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// Process group whose memory is the target's (None for direct).
    pub fn pgid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    /// Fails if the target's process died.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.daemon.as_mut() {
            Some(d) => d.check_alive(),
            None => Ok(()),
        }
    }
}

/// Runs `SELECT 1` through the target with psql until it answers (30 s).
pub fn wait_ready(
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    name: &str,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(30) {
        let out = std::process::Command::new(pg_bin("psql"))
            .args([
                "-X",
                "-tA",
                "-w",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .args(["-U", user, "-d", db, "-c", "SELECT 1"])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(std::process::Stdio::null())
            .output()?;
        if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1" {
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{name} on port {port} does not answer SELECT 1 after 30 s: {last}")
}
