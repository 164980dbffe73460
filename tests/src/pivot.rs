//! pgpivot in front of a test [`Cluster`]: in-process (fast, for most tests) or as the real
//! binary (for signals and the command line).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pgpivot::config::Config;
use pgpivot::server::Running;

use crate::Cluster;

/// Settings a test may change; everything else comes from the cluster.
#[derive(Debug, Clone)]
pub struct PivotOptions {
    pub check_interval_ms: u64,
    pub check_timeout_ms: u64,
    pub primary_wait_timeout_ms: u64,
    /// `scram-sha-256` or `md5`.
    pub auth_method: &'static str,
    /// Extra or overriding environment variables.
    pub env: Vec<(String, String)>,
    /// A TOML configuration file (the environment still wins; an empty variable is unset).
    pub config_file: Option<PathBuf>,
    /// TCP listen address; `None` = a free loopback port.
    pub listen: Option<String>,
}

impl Default for PivotOptions {
    fn default() -> Self {
        PivotOptions {
            check_interval_ms: 100,
            // Generous: a loaded CI machine must not make a healthy node look dead.
            check_timeout_ms: 3000,
            primary_wait_timeout_ms: 10_000,
            auth_method: "scram-sha-256",
            env: Vec::new(),
            config_file: None,
            listen: None,
        }
    }
}

/// The Bitnami-style environment for a pgpivot in front of `cluster`.
pub fn pivot_env(
    cluster: &Cluster,
    opts: &PivotOptions,
    listen: &str,
    socket_dir: &Path,
) -> HashMap<String, String> {
    let o = cluster.options();
    let mut env: HashMap<String, String> = [
        ("PGPOOL_BACKEND_NODES", cluster.backend_nodes_env()),
        ("PGPOOL_SR_CHECK_USER", o.check_user.clone()),
        ("PGPOOL_SR_CHECK_PASSWORD", o.check_password.clone()),
        ("PGPOOL_POSTGRES_USERNAME", o.app_user.clone()),
        ("PGPOOL_POSTGRES_PASSWORD", o.app_password.clone()),
        ("PGPOOL_AUTHENTICATION_METHOD", opts.auth_method.to_string()),
        ("PGPIVOT_LISTEN_ADDR", listen.to_string()),
        ("PGPIVOT_SOCKET_DIR", socket_dir.display().to_string()),
        (
            "PGPIVOT_CHECK_INTERVAL_MS",
            opts.check_interval_ms.to_string(),
        ),
        (
            "PGPIVOT_CHECK_TIMEOUT_MS",
            opts.check_timeout_ms.to_string(),
        ),
        (
            "PGPIVOT_PRIMARY_WAIT_TIMEOUT_MS",
            opts.primary_wait_timeout_ms.to_string(),
        ),
        ("PGPOOL_CONNECT_TIMEOUT", "3000".to_string()),
        // Loopback and a port of the kernel's choosing, so parallel tests never collide; a test
        // that needs a known port sets it in `opts.env`.
        ("PGPIVOT_METRICS_ADDR", "127.0.0.1:0".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in &opts.env {
        env.insert(k.clone(), v.clone());
    }
    env
}

/// An in-process pgpivot. Stop it with [`Pivot::stop`] (dropping it stops the tasks when the
/// test's runtime ends).
pub struct Pivot {
    pub running: Option<Running>,
    pub addr: SocketAddr,
    /// The admin console, when the options set `PGPOOL_ADMIN_USERNAME`/`_PASSWORD`.
    pub admin_addr: Option<SocketAddr>,
    /// The bound `/metrics`, `/livez`, `/readyz` address (None when turned off).
    pub metrics_addr: Option<SocketAddr>,
    pub socket_dir: tempfile::TempDir,
    pub port: u16,
    user: String,
    password: String,
    database: String,
}

impl Pivot {
    /// Starts pgpivot on a free loopback port and waits until it knows a primary.
    pub async fn start(cluster: &Cluster, opts: PivotOptions) -> anyhow::Result<Pivot> {
        let socket_dir = tempfile::Builder::new().prefix("pgpivot-sock").tempdir()?;
        let listen = opts.listen.as_deref().unwrap_or("127.0.0.1:0");
        let env = pivot_env(cluster, &opts, listen, socket_dir.path());
        let config =
            Config::from_sources(opts.config_file.as_deref(), &env).context("pgpivot config")?;
        let port = config.port;
        let running = Running::start(config).await?;
        let addr = running.local_addr;
        let admin_addr = running.admin_addr;
        let metrics_addr = running.metrics_addr;
        let topo = running.topology();
        if topo
            .wait_for_primary(Duration::from_secs(10))
            .await
            .is_err()
        {
            bail!("pgpivot found no primary within 10 s");
        }
        let o = cluster.options();
        Ok(Pivot {
            running: Some(running),
            addr,
            admin_addr,
            metrics_addr,
            socket_dir,
            port,
            user: o.app_user.clone(),
            password: o.app_password.clone(),
            database: o.database.clone(),
        })
    }

    /// tokio-postgres / libpq connection string for the app user through pgpivot.
    pub fn conn_string(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={} password={} dbname={} connect_timeout=20",
            self.addr.port(),
            self.user,
            self.password,
            self.database
        )
    }

    /// Connection string for the admin console (database `pgpivot`).
    pub fn admin_conn_string(&self, user: &str, password: &str) -> String {
        let port = self.admin_addr.map(|a| a.port()).unwrap_or(0);
        format!(
            "host=127.0.0.1 port={port} user={user} password={password} dbname=pgpivot connect_timeout=20"
        )
    }

    /// Connects with tokio-postgres; the connection task is spawned.
    pub async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        connect(&self.conn_string()).await
    }

    /// Primary node id in pgpivot's routing table.
    pub fn primary(&self) -> Option<usize> {
        self.running
            .as_ref()
            .and_then(|r| r.topology().current().primary.as_ref().map(|p| p.node_id))
    }

    /// Waits until pgpivot routes to `node` (or fails after `timeout`).
    pub async fn wait_primary(&self, node: usize, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.primary() == Some(node) {
                return Ok(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!(
            "pgpivot did not route to node {node} within {timeout:?} (now {:?})",
            self.primary()
        )
    }

    /// GETs `path` from the metrics endpoint: (status, body).
    pub async fn http_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let addr = self.metrics_addr.context("metrics endpoint turned off")?;
        http_get(addr, path).await
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop_fast().await;
        }
    }
}

/// tokio-postgres connect with the connection driven on a spawned task.
pub async fn connect(conn: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// GETs `path` from a pgpivot metrics endpoint (1 s bound), off the runtime's threads.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let path = path.to_string();
    let r = tokio::task::spawn_blocking(move || {
        pgpivot::metrics::probe::get(addr, &path, Duration::from_secs(1))
    })
    .await?;
    Ok(r?)
}

/// The `pgpivot` binary built alongside the test executable (`target/<profile>/pgpivot`).
pub fn pivot_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        let candidate = d.join("pgpivot");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    bail!(
        "pgpivot binary not found next to {}; run `cargo build -p pgpivot`",
        exe.display()
    )
}

/// The binary, started with `env` (only), its stderr captured to `log`.
pub fn spawn_binary(
    env: &HashMap<String, String>,
    args: &[&str],
    log: &Path,
) -> anyhow::Result<Child> {
    let bin = pivot_binary()?;
    let log = std::fs::File::create(log)?;
    let child = Command::new(bin)
        .args(args)
        .env_clear()
        .envs(env)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    Ok(child)
}

/// Waits until a TCP port accepts connections.
pub fn wait_listening(addr: &str, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{addr} not listening after {timeout:?}")
}
