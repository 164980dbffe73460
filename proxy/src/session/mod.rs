//! One client session, start to end: the first packet, authentication, a first server
//! connection from the pool (which also proves the database and parameters are valid, and in
//! session mode gives the pid the client is told), then the [`engine`] until the client leaves
//! or pgpivot ends the session. A login whose greeting is known already (an identical startup
//! packet was greeted before, or in transaction mode one the pool's defaults cover) may go
//! without a server connection.

#[doc(hidden)]
pub mod bench_hooks;
mod buffers;
mod client_auth;
pub(crate) mod conn;
mod engine;
pub mod forward;
mod idle;
mod local;
pub mod params;
pub mod prepared;
mod server_loss;
mod shared;
pub mod sql;
mod sql_stream;
mod staging;
pub mod startup_params;
mod streaming;
mod tally;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use pgpivot_protocol::build;
use pgpivot_protocol::sqlstate;
use pgpivot_protocol::startup::{InitialPacket, StartupMessage};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

pub use client_auth::UserDb;
use conn::ClientConn;
use params::ClientParams;

use crate::cancel::CancelRegistry;
use crate::config::{Config, PoolMode};
use crate::error::SessionError;
use crate::metrics::{Liveness, Metrics};
use crate::pool::server::QuietError;
use crate::pool::{Pool, Pools, Server};
use crate::shutdown::Shutdown;
use crate::topology::Topology;

/// Everything a session needs from the server, shared by all sessions.
pub struct Ctx {
    /// Swapped whole by RELOAD; read it with `load()` and do not hold the guard across an await.
    pub config: arc_swap::ArcSwap<Config>,
    pub topology: Arc<Topology>,
    pub cancels: Arc<CancelRegistry>,
    pub users: arc_swap::ArcSwap<UserDb>,
    pub shutdown: Shutdown,
    pub pools: Arc<Pools>,
    /// Client connections open now.
    pub clients: AtomicUsize,
    /// Clients ever pinned to a server connection by session-bound state.
    pub pinned_total: AtomicU64,
    /// Clients moved to a new primary without noticing.
    pub moved_total: AtomicU64,
    /// When this pgpivot started (SHOW pool_processes).
    pub started_at: std::time::SystemTime,
    /// PAUSE/RESUME.
    pub pause: crate::pause::Pause,
    /// Coarse time for the client idle limit.
    pub clock: crate::idle_limit::Clock,
    /// Prepared statements some server connection has accepted: a client's Parse of one of these
    /// can be answered without a server (see `prepared::parse_offline`).
    pub known_statements: dashmap::DashSet<u64>,
    /// Prometheus counters and histograms of this instance.
    pub metrics: Arc<Metrics>,
    /// Flags `/livez` reads.
    pub liveness: Arc<Liveness>,
    /// What servers reported to earlier logins, by startup packet: greetings without a server.
    pub greetings: startup_params::Greetings,
}

/// Waiting for a client's next bytes without holding a buffer: an idle client costs no read
/// buffer (memory per idle client is what transaction pooling is for).
pub trait Readable {
    fn wait_readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send + '_;
}

impl Readable for tokio::net::tcp::OwnedReadHalf {
    fn wait_readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send + '_ {
        self.readable()
    }
}

impl Readable for tokio::net::unix::OwnedReadHalf {
    fn wait_readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send + '_ {
        self.readable()
    }
}

/// A client socket that can be split into independently owned halves for the two pumps.
pub trait ClientSocket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type Read: AsyncRead + Readable + Unpin + Send;
    type Write: AsyncWrite + Unpin + Send;
    fn into_halves(self) -> (Self::Read, Self::Write);
    /// TLS version and cipher suite, for SHOW CLIENTS; `None` in plaintext.
    fn tls_description(&self) -> Option<String> {
        None
    }
}

impl ClientSocket for tokio::net::TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl ClientSocket for tokio::net::UnixStream {
    type Read = tokio::net::unix::OwnedReadHalf;
    type Write = tokio::net::unix::OwnedWriteHalf;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

/// Decrements the client count however the session ends.
struct ClientSlot<'a>(&'a AtomicUsize);

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A TCP client: TLS or plaintext, as it asks and the configuration allows, then [`run`] on
/// the socket type that came out (plaintext keeps `TcpStream`).
pub async fn run_tcp(ctx: Arc<Ctx>, stream: tokio::net::TcpStream, peer: std::net::SocketAddr) {
    let n = ctx.clients.fetch_add(1, Ordering::Relaxed) + 1;
    let _slot = ClientSlot(&ctx.clients);
    let (deadline, tls) = {
        let config = ctx.config.load();
        (
            Instant::now() + config.authentication_timeout,
            config.tls.clone(),
        )
    };
    match crate::tls::open::open(stream, peer, deadline, tls.as_ref(), &ctx.metrics).await {
        None => {}
        Some(crate::tls::Opened::Plain(conn, first)) => run(&ctx, conn, first, Some(peer), n).await,
        Some(crate::tls::Opened::Tls(conn, first)) => {
            run(&ctx, *conn, Some(first), Some(peer), n).await
        }
    }
}

/// A unix-socket client (no TLS there, as in PostgreSQL).
pub async fn run_unix(ctx: Arc<Ctx>, stream: tokio::net::UnixStream) {
    let n = ctx.clients.fetch_add(1, Ordering::Relaxed) + 1;
    let _slot = ClientSlot(&ctx.clients);
    let deadline = Instant::now() + ctx.config.load().authentication_timeout;
    run(&ctx, ClientConn::new(stream, deadline), None, None, n).await
}

/// Runs a session to its end. `first`: the first packet, when the opening read it already;
/// `peer` is `None` for unix-socket clients; `n` the clients open now, this one included.
async fn run<S: ClientSocket>(
    ctx: &Arc<Ctx>,
    mut conn: ClientConn<S>,
    first: Option<InitialPacket>,
    peer: Option<std::net::SocketAddr>,
    n: usize,
) {
    // Boxed: its state is only needed until the client is in, and an idle client's task should
    // carry as little as possible.
    let login = match Box::pin(login(ctx, &mut conn, first, peer, n)).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            conn.close().await;
            return;
        }
        Err(SessionError::ServerRefused(frame)) => {
            let code = frame
                .get(5..)
                .and_then(|body| pgpivot_protocol::views::ErrorView::new(body).sqlstate());
            ctx.metrics.error_sent(code);
            let _ = conn.write(&frame).await;
            conn.close().await;
            return;
        }
        Err(e) => {
            if e.is_silent() {
                tracing::debug!(error = %e, "connection closed before login");
            } else {
                tracing::info!(error = %e, code = e.sqlstate(), "session refused");
            }
            if conn.refuse(&e).await {
                ctx.metrics.error_sent(Some(e.sqlstate()));
            }
            conn.close().await;
            return;
        }
    };
    // Boxed as well: the task's own future then holds only what login needed (async fns keep
    // their arguments and their callees' state side by side).
    Box::pin(engine::run(ctx, conn, login)).await;
}

/// What a logged-in client brings to the engine.
pub struct Login {
    pub startup: StartupMessage,
    pub password: String,
    /// Boxed: only a login that had to open a connection has one.
    pub server: Option<Box<(Server, Arc<Pool>)>>,
    pub params: ClientParams,
    pub cancel: crate::cancel::CancelHandle,
}

async fn login<S: ClientSocket>(
    ctx: &Arc<Ctx>,
    conn: &mut ClientConn<S>,
    first: Option<InitialPacket>,
    peer: Option<std::net::SocketAddr>,
    clients: usize,
) -> Result<Option<Login>, SessionError> {
    let first = match first {
        Some(p) => p,
        None => match conn.read_startup(false).await? {
            conn::Opening::Packet(p) => p,
            // Not offered.
            conn::Opening::Tls => return Ok(None),
        },
    };
    let startup = match first {
        InitialPacket::Cancel(key) => {
            if let Some(target) = ctx.cancels.lookup(key.pid, &key.secret) {
                target.send().await;
            }
            return Ok(None);
        }
        InitialPacket::Startup(m) => m,
        // Encryption requests are answered by `read_startup`, never returned.
        InitialPacket::SslRequest | InitialPacket::GssEncRequest => return Ok(None),
    };
    // As PostgreSQL 15: protocol 3.0 is the newest we speak and no `_pq_.*` option is known;
    // said before anything else about the login, the limit on clients included.
    if startup.needs_negotiation() {
        let mut out = BytesMut::new();
        build::negotiate_protocol_version(&mut out, 0, &startup.protocol_options());
        conn.write(&out).await?;
    }
    if clients > ctx.config.load().pool.max_client_conn {
        ctx.metrics.error_sent(Some(sqlstate::TOO_MANY_CONNECTIONS));
        conn.fatal(
            sqlstate::TOO_MANY_CONNECTIONS,
            "sorry, too many clients already",
        )
        .await;
        return Ok(None);
    }
    // PGPIVOT_TLS_REQUIRED: pg_hba.conf's verdict, where PostgreSQL
    // gives it: after protocol negotiation and the client limit, before authentication.
    if !conn.tls && !crate::tls::open::plaintext_allowed(ctx.config.load().tls_required, peer) {
        return Err(SessionError::TlsRequired {
            host: peer.map(|p| p.ip().to_string()).unwrap_or_default(),
            user: startup.user().to_string(),
            database: startup.database().to_string(),
        });
    }
    let user = startup.user().to_string();
    let local = peer.is_none();
    let trusted =
        local && ctx.config.load().socket_trust && ctx.users.load().password(&user).is_some();
    if !trusted {
        let users = ctx.users.load_full();
        users.authenticate(conn, &user).await?;
    }
    let password = ctx
        .users
        .load()
        .password(&user)
        .ok_or_else(|| SessionError::AuthFailed(user.clone()))?
        .to_string();
    let normal = startup_params::normalize(&startup);
    let mode = ctx.config.load().pool.mode;
    // Session mode: the client's own connection, opened with its startup packet (RESET goes
    // back to its startup values there). Transaction mode: connections shared by every
    // client of the pool start at the server's defaults; clients' parameters are SET.
    let server_startup = match mode {
        PoolMode::Session => normal.clone(),
        PoolMode::Transaction => startup_params::bare(&normal),
    };
    let known = ctx.greetings.get(&normal);
    let (known, wait) = match mode {
        PoolMode::Transaction => (known.or_else(|| covered_by_pool(ctx, &normal)), None),
        // The server's pid is the one to tell the client: wait for a connection, but not long
        // when the client can be greeted without one (a liveness probe while the primary hangs
        // or every connection is taken).
        PoolMode::Session => {
            let wait = known.is_some().then_some(LOGIN_SERVER_WAIT);
            (known, wait)
        }
    };
    let (server, params) = match (mode, known) {
        (PoolMode::Transaction, Some(params)) => (None, params),
        (_, known) => match (
            checkout_for_login(ctx, &server_startup, &password, wait).await?,
            known,
        ) {
            (Some(s), _) => adopt(ctx, s, &normal).await?,
            (None, Some(params)) => (None, params),
            // Without a greeting to fall back on, the wait is not bounded.
            (None, None) => return Err(SessionError::NoPrimary("no server connection".into())),
        },
    };
    let server_pid = match mode {
        PoolMode::Session => server.as_ref().map(|s| s.0.conn.pid),
        PoolMode::Transaction => None,
    };
    let cancel = ctx.cancels.register(
        crate::cancel::ClientMeta {
            user: user.clone(),
            database: startup.database().to_string(),
            application_name: startup.get("application_name").unwrap_or("").to_string(),
            addr: peer,
            tls: conn.stream.tls_description(),
            connected_at: Some(std::time::SystemTime::now()),
        },
        server_pid,
    );
    // AuthenticationOk, the server's parameters as this client asked for them (in PostgreSQL's
    // order), the BackendKeyData, ReadyForQuery.
    let mut out = BytesMut::with_capacity(1024);
    build::auth_ok(&mut out);
    for k in startup_params::REPORTED {
        if let Some(v) = params.get(k) {
            build::parameter_status(&mut out, k, v);
        }
    }
    build::backend_key_data(&mut out, cancel.pid, &cancel.secret);
    build::ready_for_query(&mut out, b'I');
    if let Err(e) = conn.write(&out).await {
        if let Some(s) = server {
            let (server, pool) = *s;
            pool.checkin(server, true);
        }
        return Err(e);
    }
    tracing::debug!(user, database = startup.database(), "session started");
    Ok(Some(Login {
        startup: server_startup,
        password,
        server,
        params,
        cancel,
    }))
}

/// How long a session-mode login that could be greeted without a server waits for one.
const LOGIN_SERVER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A server connection for a login, waiting for a primary and a free connection as a
/// transaction does; with `wait`, `None` once that has passed (the checkout then finishes on
/// its own and leaves the connection in its pool: abandoning it midway would lose the pool
/// slot it holds while connecting).
async fn checkout_for_login(
    ctx: &Arc<Ctx>,
    startup: &StartupMessage,
    password: &str,
    wait: Option<std::time::Duration>,
) -> Result<Option<(Server, Arc<Pool>)>, SessionError> {
    let deadline = Instant::now() + ctx.config.load().primary_wait_timeout;
    let Some(wait) = wait else {
        return engine::checkout(ctx, startup, password, deadline, &mut None)
            .await
            .map(Some);
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (ctx, startup, password) = (ctx.clone(), startup.clone(), password.to_string());
    tokio::spawn(async move {
        let got = engine::checkout(&ctx, &startup, &password, deadline, &mut None).await;
        if let Err(Ok((server, pool))) = tx.send(got) {
            pool.checkin(server, true);
        }
    });
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(got)) => got.map(Some),
        _ => Ok(None),
    }
}

/// The login's server connection made to match the client's startup parameters (nothing to do
/// for one opened with them and unchanged since), and the client's parameters as the server
/// reports them. A value the server refuses ends the login with its error, as a FATAL, as
/// PostgreSQL refuses it in a startup packet.
async fn adopt(
    ctx: &Ctx,
    (mut server, pool): (Server, Arc<Pool>),
    normal: &StartupMessage,
) -> Result<(Option<Box<(Server, Arc<Pool>)>>, ClientParams), SessionError> {
    if !(server.opened_with(normal) && server.at_defaults()) {
        let wanted: HashMap<String, String> = startup_params::settable(normal)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let timeout = ctx.config.load().connect_timeout;
        if let Err(e) = server
            .sync_params(&mut ClientParams::new(Arc::new(wanted)), timeout)
            .await
        {
            pool.checkin(server, false);
            return Err(match e {
                QuietError::Refused(ref error) => match build::with_severity(error, "FATAL") {
                    Some(fatal) => SessionError::ServerRefused(fatal.freeze()),
                    None => SessionError::Backend(e.to_string()),
                },
                QuietError::Broken(why) => SessionError::Backend(why),
            });
        }
    }
    // Based on the pool's greeting where there is one: clients sharing it are recognized as
    // alike by pointer when a connection passes from one to another.
    let mut params = match pool.welcome() {
        Some(base) => {
            let mut p = ClientParams::new(base);
            for (k, v) in &server.params {
                p.insert(k.clone(), v.clone());
            }
            p
        }
        None => ClientParams::new(Arc::new(server.params.clone())),
    };
    params.set_startup(startup_params::settable(normal).map(|(k, _)| k));
    ctx.greetings.remember(normal, &params);
    Ok((Some(Box::new((server, pool))), params))
}

/// Transaction mode: the greeting for a client whose startup parameters are the server's
/// defaults (the pool's greeting, from a connection opened without any) but for
/// `application_name`, which takes any value: no server connection needed.
fn covered_by_pool(ctx: &Ctx, normal: &StartupMessage) -> Option<ClientParams> {
    if startup_params::needs_server(normal) {
        return None;
    }
    let table = ctx.topology.current();
    let base = ctx.pools.welcome(
        table.primary.as_ref(),
        normal.user(),
        normal.database(),
        normal.get("options").unwrap_or(""),
    )?;
    let mut params = ClientParams::new(base.clone());
    for (k, v) in startup_params::settable(normal) {
        if k != "application_name" && base.get(k).map(String::as_str) != Some(v) {
            return None;
        }
        params.insert(k.to_string(), v.to_string());
    }
    params.set_startup(startup_params::settable(normal).map(|(k, _)| k));
    Some(params)
}
