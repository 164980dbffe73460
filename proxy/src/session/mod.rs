//! One client session, start to end: the first packet, authentication, waiting for a primary,
//! logging in to it, then forwarding until either side leaves or pgpivot ends it.

mod client_auth;
mod conn;
mod forward;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pgpivot_protocol::build;
use pgpivot_protocol::startup::{InitialPacket, StartupMessage};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

pub use client_auth::UserDb;
use conn::ClientConn;
use forward::{ClientEnd, Shared};

use crate::backend::connect::{connect, ConnectError, ServerConn};
use crate::cancel::{send_cancel, BackendKey, CancelRegistry};
use crate::config::Config;
use crate::error::SessionError;
use crate::shutdown::Shutdown;
use crate::topology::{PrimaryRoute, Topology};

/// Everything a session needs from the server, shared by all sessions.
pub struct Ctx {
    pub config: Arc<Config>,
    pub topology: Arc<Topology>,
    pub cancels: Arc<CancelRegistry>,
    pub users: UserDb,
    pub shutdown: Shutdown,
}

/// A client socket that can be split into independently owned halves for the two pumps.
pub trait ClientSocket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type Read: AsyncRead + Unpin + Send;
    type Write: AsyncWrite + Unpin + Send;
    fn into_halves(self) -> (Self::Read, Self::Write);
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

/// Runs a session to its end. `local` is true for unix-socket clients.
pub async fn run<S: ClientSocket>(ctx: Arc<Ctx>, stream: S, local: bool) {
    let deadline = Instant::now() + ctx.config.authentication_timeout;
    let mut conn = ClientConn::new(stream, deadline);
    let login = match login(&ctx, &mut conn, local).await {
        Ok(Some(l)) => l,
        Ok(None) => return,
        Err(SessionError::ServerRefused(frame)) => {
            let _ = conn.write(&frame).await;
            return;
        }
        Err(SessionError::Io(_)) => return,
        Err(e) => {
            tracing::info!(error = %e, code = e.sqlstate(), "session refused");
            conn.fatal(e.sqlstate(), &e.to_string()).await;
            return;
        }
    };
    forward(ctx, conn, login).await;
}

struct Login {
    server: ServerConn,
    route: PrimaryRoute,
    cancel: crate::cancel::CancelHandle,
}

async fn login<S: ClientSocket>(
    ctx: &Ctx,
    conn: &mut ClientConn<S>,
    local: bool,
) -> Result<Option<Login>, SessionError> {
    let startup = loop {
        match conn.read_initial().await? {
            // No TLS yet: refuse, the client continues in plaintext or gives up.
            InitialPacket::SslRequest | InitialPacket::GssEncRequest => conn.write(b"N").await?,
            InitialPacket::Cancel(key) => {
                if let Some(target) = ctx.cancels.lookup(key.pid, &key.secret) {
                    send_cancel(target).await;
                }
                return Ok(None);
            }
            InitialPacket::Startup(m) => break m,
        }
    };
    let options = startup.protocol_options();
    if startup.minor > 0 || !options.is_empty() {
        let mut out = BytesMut::new();
        build::negotiate_protocol_version(&mut out, 0, &options);
        conn.write(&out).await?;
    }
    let user = startup.user().to_string();
    let trusted = local && ctx.config.socket_trust && ctx.users.password(&user).is_some();
    if !trusted {
        ctx.users.authenticate(conn, &user).await?;
    }
    let password = ctx
        .users
        .password(&user)
        .ok_or_else(|| SessionError::AuthFailed(user.clone()))?
        .to_string();
    let (server, route) = connect_primary(ctx, &startup, &password).await?;
    let cancel = ctx.cancels.register();
    cancel.set_backend(Some(BackendKey {
        addr: server.addr,
        pid: server.pid,
        secret: server.secret.clone(),
    }));
    // AuthenticationOk, the server's greeting with our own BackendKeyData before its
    // ReadyForQuery.
    let greeting = &server.greeting;
    let split = greeting.len().saturating_sub(6);
    let mut out = BytesMut::with_capacity(greeting.len() + 32);
    build::auth_ok(&mut out);
    out.extend_from_slice(&greeting[..split]);
    build::backend_key_data(&mut out, cancel.pid, &cancel.secret);
    out.extend_from_slice(&greeting[split..]);
    conn.write(&out).await?;
    tracing::debug!(
        user,
        database = startup.database(),
        node = route.node_id,
        "session started"
    );
    Ok(Some(Login {
        server,
        route,
        cancel,
    }))
}

/// Waits for a primary (bounded by `primary_wait_timeout`) and logs in to it, trying again if
/// the primary moves or is unreachable in the meantime.
async fn connect_primary(
    ctx: &Ctx,
    startup: &StartupMessage,
    password: &str,
) -> Result<(ServerConn, PrimaryRoute), SessionError> {
    let deadline = Instant::now() + ctx.config.primary_wait_timeout;
    let mut last_error = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let table = match ctx.topology.wait_for_primary(left).await {
            Ok(t) => t,
            Err(t) => {
                let reason = last_error
                    .or_else(|| t.no_primary_reason.clone())
                    .unwrap_or_else(|| "no primary known".into());
                return Err(SessionError::NoPrimary(format!(
                    "{reason} (waited {} ms)",
                    ctx.config.primary_wait_timeout.as_millis()
                )));
            }
        };
        let Some(route) = table.primary.clone() else {
            continue;
        };
        let budget = ctx
            .config
            .connect_timeout
            .min(left.max(Duration::from_millis(100)));
        match connect(&route.addr(), startup, password, budget).await {
            Ok(server) => {
                let now = ctx.topology.current();
                if now.primary.as_ref().map(|p| p.node_id) == Some(route.node_id) {
                    return Ok((server, route));
                }
                // The primary moved while we logged in: go to the new one.
            }
            Err(e) if !e.is_retryable() => {
                return Err(match e {
                    ConnectError::Refused(frame) => SessionError::ServerRefused(frame),
                    other => SessionError::Backend(other.to_string()),
                });
            }
            Err(e) => {
                tracing::debug!(node = route.node_id, error = %e, "primary not usable yet");
                last_error = Some(e.to_string());
                if Instant::now() >= deadline {
                    continue;
                }
                let gen = table.generation;
                let _ = tokio::time::timeout(Duration::from_millis(100), async {
                    while ctx.topology.generation() == gen {
                        ctx.topology.changed().await;
                    }
                })
                .await;
            }
        }
    }
}

async fn forward<S: ClientSocket>(ctx: Arc<Ctx>, conn: ClientConn<S>, login: Login) {
    let ClientConn { stream, buf, .. } = conn;
    let Login {
        server,
        route,
        cancel,
    } = login;
    let (cr, cw) = stream.into_halves();
    let ServerConn {
        stream: server_stream,
        leftover,
        ..
    } = server;
    let (sr, sw) = server_stream.into_split();
    let shared = Shared::new();
    let node = route.node_id;
    let max = ctx.config.max_message_bytes;
    let c2s = forward::client_to_server(cr, sw, buf, max, &shared, &ctx, node);
    let s2c = forward::server_to_client(sr, cw, leftover, &shared, &ctx, node);
    tokio::pin!(c2s, s2c);
    let end = tokio::select! {
        c = &mut c2s => match c {
            ClientEnd::Closed => {
                if shared.pending() > 0 {
                    // The client left mid-query: do not let the query run on for nobody.
                    if let Some(key) = cancel.backend() {
                        tokio::spawn(send_cancel(key));
                    }
                }
                "client closed".to_string()
            }
            ClientEnd::Terminated => "client terminated".to_string(),
            ClientEnd::Handover => s2c.await.to_string(),
        },
        s = &mut s2c => s.to_string(),
    };
    tracing::debug!(node, end, "session ended");
}
