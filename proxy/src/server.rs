//! Listeners (TCP and unix socket), the role monitor, and orderly shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::cancel::CancelRegistry;
use crate::config::Config;
use crate::metrics::{HttpServer, Liveness, Metrics};
use crate::pool::Pools;
use crate::session::{self, Ctx, UserDb};
use crate::shutdown::Shutdown;
use crate::topology::{monitor, NodeView, RoutingTable, Topology};

/// A started pgpivot: listeners bound, monitor running.
pub struct Running {
    pub local_addr: SocketAddr,
    /// The admin console's address, when it is enabled.
    pub admin_addr: Option<SocketAddr>,
    pub socket_path: Option<PathBuf>,
    /// Where `/metrics`, `/livez` and `/readyz` answer (None when turned off).
    pub metrics_addr: Option<SocketAddr>,
    http: Option<HttpServer>,
    ctx: Arc<Ctx>,
    sessions: TaskTracker,
    listeners: TaskTracker,
    monitor_stop: CancellationToken,
}

impl Running {
    /// Binds the listeners and starts the monitor and the accept loops.
    pub async fn start(config: Config) -> anyhow::Result<Running> {
        let config = Arc::new(config);
        let nodes: Vec<NodeView> = config.backends.iter().map(NodeView::new).collect();
        let topology = Topology::new(RoutingTable::empty(), nodes);
        let monitor_stop = CancellationToken::new();
        // Stops the monitor again if a listener below cannot be bound.
        let started = monitor_stop.clone().drop_guard();
        let metrics = Arc::new(Metrics::new());
        let liveness = Arc::new(Liveness::default());
        monitor::spawn(
            &config,
            topology.clone(),
            monitor_stop.clone(),
            metrics.clone(),
            liveness.clone(),
        );

        let tcp = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
        let local_addr = tcp.local_addr()?;
        let metrics_listener = match config.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (PGPIVOT_METRICS_ADDR)"))?,
            ),
            None => None,
        };
        let socket_path = config.socket_path();
        let unix = match &socket_path {
            Some(path) => Some(bind_unix(path)?),
            None => None,
        };
        let admin = match (config.admin.addr, &config.admin.user) {
            (Some(addr), Some(_)) => {
                let l = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (admin console)"))?;
                Some(l)
            }
            _ => None,
        };
        let admin_addr = match &admin {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        started.disarm();
        let pools = Pools::new(&config);
        pools.spawn_upkeep(topology.clone(), monitor_stop.clone());
        let ctx = Arc::new(Ctx {
            users: Arc::new(UserDb::new(&config)).into(),
            pools,
            clients: Default::default(),
            pinned_total: Default::default(),
            moved_total: Default::default(),
            known_statements: Default::default(),
            started_at: std::time::SystemTime::now(),
            pause: Default::default(),
            clock: Default::default(),
            config: config.into(),
            topology,
            cancels: CancelRegistry::new(),
            greetings: Default::default(),
            shutdown: Shutdown::new(),
            metrics,
            liveness,
        });
        let http = match metrics_listener {
            Some(l) => Some(HttpServer::spawn(l, ctx.clone())?),
            None => None,
        };
        let metrics_addr = http.as_ref().map(|h| h.local_addr);
        crate::idle_limit::spawn(ctx.clone(), monitor_stop.clone());
        crate::metrics::spawn_upkeep(ctx.metrics.clone(), monitor_stop.clone());
        let sessions = TaskTracker::new();
        let listeners = TaskTracker::new();
        listeners.spawn(accept_tcp(tcp, ctx.clone(), sessions.clone()));
        if let Some(unix) = unix {
            listeners.spawn(accept_unix(unix, ctx.clone(), sessions.clone()));
        }
        if let Some(l) = admin {
            listeners.spawn(crate::console::serve(l, ctx.clone(), TaskTracker::new()));
        }
        listeners.close();
        tracing::info!(
            listen = %local_addr,
            socket = ?socket_path,
            admin = ?admin_addr,
            metrics = ?metrics_addr,
            backends = ctx.config.load().backends.len(),
            check_interval_ms = ctx.config.load().check.interval.as_millis() as u64,
            pool_mode = ctx.config.load().pool.mode.as_str(),
            pool_size = ctx.config.load().pool.size,
            "pgpivot ready"
        );
        Ok(Running {
            local_addr,
            admin_addr,
            socket_path,
            metrics_addr,
            http,
            ctx,
            sessions,
            listeners,
            monitor_stop,
        })
    }

    pub fn topology(&self) -> Arc<Topology> {
        self.ctx.topology.clone()
    }

    /// The server connection pools (their counts and `stats()`).
    pub fn pools(&self) -> Arc<Pools> {
        self.ctx.pools.clone()
    }

    /// Clients ever pinned to a server connection by session-bound state.
    pub fn pinned_total(&self) -> u64 {
        self.ctx
            .pinned_total
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Idle clients moved to a new primary without an error.
    pub fn moved_total(&self) -> u64 {
        self.ctx
            .moved_total
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// SIGHUP: read the configuration again (see [`crate::reload`]).
    pub async fn reload(&self) -> Result<String, String> {
        crate::reload::reload(&self.ctx).await
    }

    /// PAUSE is in force.
    pub fn is_paused(&self) -> bool {
        self.ctx.pause.is_paused()
    }

    /// Resolves when an operator runs SHUTDOWN on the console.
    pub async fn shutdown_requested(&self) {
        self.ctx.shutdown.requested.cancelled().await
    }

    /// Number of sessions currently running.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// SIGTERM: stop accepting, let transactions finish and end idle sessions; after `timeout`,
    /// or as soon as `hurry` resolves (an operator's SIGINT during the drain), end the rest.
    pub async fn drain(self, timeout: Duration, hurry: impl std::future::Future<Output = ()>) {
        tracing::info!(
            sessions = self.sessions.len(),
            timeout_ms = timeout.as_millis() as u64,
            "draining"
        );
        self.ctx.shutdown.drain.cancel();
        self.sessions.close();
        tokio::select! {
            _ = self.sessions.wait() => {}
            _ = tokio::time::sleep(timeout) => {
                tracing::warn!(
                    sessions = self.sessions.len(),
                    "drain timed out; ending the remaining sessions"
                );
            }
            _ = hurry => {
                tracing::info!(sessions = self.sessions.len(), "drain cut short; ending the remaining sessions");
            }
        }
        self.finish().await;
    }

    /// SIGINT: end every session now.
    pub async fn stop_fast(self) {
        tracing::info!(sessions = self.sessions.len(), "fast shutdown");
        self.ctx.shutdown.drain.cancel();
        self.sessions.close();
        self.finish().await;
    }

    async fn finish(self) {
        self.ctx.shutdown.fast.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.sessions.wait()).await;
        self.listeners.wait().await;
        // Health answers until here: `/readyz` says 503 while draining.
        if let Some(h) = self.http {
            h.stop().await;
        }
        self.monitor_stop.cancel();
        if let Some(p) = &self.socket_path {
            let _ = std::fs::remove_file(p);
        }
        tracing::info!("pgpivot stopped");
    }
}

fn bind_unix(path: &PathBuf) -> anyhow::Result<UnixListener> {
    if path.exists() {
        // A socket left by a crashed run; refuse to remove anything that is not a socket.
        use std::os::unix::fs::FileTypeExt;
        let meta = std::fs::symlink_metadata(path)?;
        if !meta.file_type().is_socket() {
            anyhow::bail!("{} exists and is not a socket", path.display());
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("{} is in use by another process", path.display());
        }
        std::fs::remove_file(path)?;
    }
    let l =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    Ok(l)
}

async fn accept_tcp(listener: TcpListener, ctx: Arc<Ctx>, sessions: TaskTracker) {
    let liveness = ctx.liveness.clone();
    let _alive = liveness.listener();
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.drain.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let span = tracing::debug_span!("client", id = next_id());
                sessions.spawn(session::run_tcp(ctx.clone(), stream, peer).instrument(span));
            }
            Err(e) => backoff(e).await,
        }
    }
}

async fn accept_unix(listener: UnixListener, ctx: Arc<Ctx>, sessions: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.drain.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let span = tracing::debug_span!("client", id = next_id());
                sessions.spawn(session::run_unix(ctx.clone(), stream).instrument(span));
            }
            Err(e) => backoff(e).await,
        }
    }
}

/// A number for each accepted client, for log lines.
fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Accept errors (out of file descriptors, mostly) must not spin the loop.
async fn backoff(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
