//! One client session, start to end: the first packet, authentication, a first server
//! connection from the pool (which also proves the database and parameters are valid), then the
//! [`engine`] until the client leaves or pgpivot ends the session.

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
use crate::config::Config;
use crate::error::SessionError;
use crate::metrics::{Liveness, Metrics};
use crate::pool::{server::is_settable, Pool, Pools, Server};
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
    ctx: &Ctx,
    mut conn: ClientConn<S>,
    first: Option<InitialPacket>,
    peer: Option<std::net::SocketAddr>,
    n: usize,
) {
    // Boxed: its state is only needed until the client is in, and an idle client's task should
    // carry as little as possible.
    let login = match Box::pin(login(ctx, &mut conn, first, peer, n)).await {
        Ok(Some(l)) => l,
        Ok(None) => return,
        Err(SessionError::ServerRefused(frame)) => {
            let code = frame
                .get(5..)
                .and_then(|body| pgpivot_protocol::views::ErrorView::new(body).sqlstate());
            ctx.metrics.error_sent(code);
            let _ = conn.write(&frame).await;
            return;
        }
        Err(SessionError::Io(_)) => return,
        Err(e) => {
            tracing::info!(error = %e, code = e.sqlstate(), "session refused");
            ctx.metrics.error_sent(Some(e.sqlstate()));
            conn.fatal(e.sqlstate(), &e.to_string()).await;
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
    ctx: &Ctx,
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
    let wanted: HashMap<String, String> = startup
        .params
        .iter()
        .filter(|(k, _)| is_settable(k))
        .cloned()
        .collect();
    let (server, params) = match welcome(ctx, &startup, &wanted) {
        // A known pool: greet without holding a server connection.
        Some(base) => {
            let mut params = ClientParams::new(base);
            for (k, v) in wanted {
                params.insert(k, v);
            }
            (None, params)
        }
        None => {
            let deadline = Instant::now() + ctx.config.load().primary_wait_timeout;
            let (mut server, pool) =
                engine::checkout(ctx, &startup, &password, deadline, &mut None).await?;
            if let Err(e) = server
                .sync_params(
                    &mut ClientParams::new(Arc::new(wanted)),
                    ctx.config.load().connect_timeout,
                )
                .await
            {
                pool.checkin(server, false);
                return Err(SessionError::Backend(e));
            }
            // Based on the pool's greeting where there is one: clients sharing it are
            // recognized as alike by pointer when a connection passes from one to another.
            let params = match pool.welcome() {
                Some(base) => {
                    let mut p = ClientParams::new(base);
                    for (k, v) in &server.params {
                        p.insert(k.clone(), v.clone());
                    }
                    p
                }
                None => ClientParams::new(Arc::new(server.params.clone())),
            };
            (Some(Box::new((server, pool))), params)
        }
    };
    let cancel = ctx.cancels.register(crate::cancel::ClientMeta {
        user: user.clone(),
        database: startup.database().to_string(),
        application_name: startup.get("application_name").unwrap_or("").to_string(),
        addr: peer,
        tls: conn.stream.tls_description(),
        connected_at: Some(std::time::SystemTime::now()),
    });
    // AuthenticationOk, the server's parameters as this client asked for them, our own
    // BackendKeyData, ReadyForQuery.
    let mut out = BytesMut::with_capacity(1024);
    build::auth_ok(&mut out);
    let mut reported: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| REPORTED.contains(k))
        .collect();
    reported.sort();
    for (k, v) in reported {
        build::parameter_status(&mut out, k, v);
    }
    build::backend_key_data(&mut out, cancel.pid, &cancel.secret);
    build::ready_for_query(&mut out, b'I');
    conn.write(&out).await?;
    tracing::debug!(user, database = startup.database(), "session started");
    Ok(Some(Login {
        startup,
        password,
        server,
        params,
        cancel,
    }))
}

/// A second SSLRequest or GSSENCRequest: PostgreSQL takes its code for a protocol version.
/// The greeting for a client that can log in without a server connection: transaction mode
/// always; session mode when the only parameters it asks for cannot fail to apply (its first
/// query attaches the connection, and a bad parameter must be refused at login with the
/// server's own error).
fn welcome(
    ctx: &Ctx,
    startup: &StartupMessage,
    wanted: &HashMap<String, String>,
) -> Option<Arc<HashMap<String, String>>> {
    let table = ctx.topology.current();
    let options = startup.get("options").unwrap_or("");
    let w = ctx.pools.welcome(
        table.primary.as_ref(),
        startup.user(),
        startup.database(),
        options,
    )?;
    let lazy = ctx.config.load().pool.mode == crate::config::PoolMode::Transaction
        || wanted
            .iter()
            .all(|(k, v)| k == "application_name" || w.get(k) == Some(v));
    lazy.then_some(w)
}

/// The parameters PostgreSQL 15 reports to clients (GUC_REPORT), as it spells them.
const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "default_transaction_read_only",
    "in_hot_standby",
    "integer_datetimes",
    "IntervalStyle",
    "is_superuser",
    "server_encoding",
    "server_version",
    "session_authorization",
    "standard_conforming_strings",
    "TimeZone",
];
