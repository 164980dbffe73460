//! The release `pgpivot` binary, as its own process, in front of a cluster.

use std::process::Command;
use std::time::Duration;

use pgpivot_tests::{free_port, pivot_binary, pivot_env, Cluster, PivotOptions};

use super::{Kind, PoolSettings, Target};
use crate::daemon::{Daemon, WorkDir};

/// Starts pgpivot in `pool_mode` (`session` or `transaction`).
pub fn start(cluster: &Cluster, s: &PoolSettings, pool_mode: &str) -> anyhow::Result<Target> {
    let dir = WorkDir::new("pgpivot-bench-pgpivot-")?;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let opts = PivotOptions {
        check_interval_ms: s.pivot_check_interval_ms,
        check_timeout_ms: 1000,
        auth_method: s.auth,
        ..Default::default()
    };
    // Metrics stay on (on a loopback port of the kernel's choosing), as deployed: with them off
    // pgpivot 34b9209 never folds its histogram samples, and its memory grows with every
    // transaction.
    let mut env = pivot_env(cluster, &opts, &listen, dir.path());
    for (k, v) in [
        ("PGPIVOT_LOG", "warn".to_string()),
        ("PGPIVOT_POOL_MODE", pool_mode.to_string()),
        ("PGPIVOT_POOL_SIZE", s.pool_size.to_string()),
        ("PGPIVOT_MAX_CLIENT_CONN", s.max_clients.to_string()),
        ("PGPIVOT_PRIMARY_WAIT_TIMEOUT_MS", "30000".to_string()),
    ] {
        env.insert(k.to_string(), v);
    }
    // Runtime knobs pass through (e.g. TOKIO_WORKER_THREADS=1 to compare scheduler layouts).
    for (k, v) in std::env::vars() {
        if k.starts_with("TOKIO_") {
            env.insert(k, v);
        }
    }
    let mut cmd = Command::new(pivot_binary()?);
    cmd.env_clear()
        .envs(&env)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir.path());
    // SIGQUIT: exit at once (the run is over; nothing to drain).
    let mut daemon = Daemon::spawn(
        "pgpivot",
        cmd,
        &dir.path().join("pgpivot.log"),
        libc::SIGQUIT,
    )?;
    daemon.wait_listening(&listen, Duration::from_secs(15))?;
    let kind = if pool_mode == "session" {
        Kind::PivotSession
    } else {
        Kind::PivotTransaction
    };
    Ok(Target {
        kind,
        port,
        // Session mode holds one server connection per client: no more clients than the pool.
        client_limit: Some(if pool_mode == "session" {
            s.pool_size
        } else {
            s.max_clients
        }),
        daemon: Some(daemon),
        dir: Some(dir),
    })
}
