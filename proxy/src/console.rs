//! The admin console: a separate listener speaking the PostgreSQL protocol, SCRAM login as
//! `PGPOOL_ADMIN_USERNAME`, commands from the `admin` crate answered from cached state
//! (`psql -h 127.0.0.1 -p 9433 -U admin pgpivot`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use pgpivot_admin::{Flow, Responder, Surface};
use pgpivot_protocol::build;
use pgpivot_protocol::frame::header;
use pgpivot_protocol::startup::InitialPacket;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use crate::error::SessionError;
use crate::session::conn::{ClientConn, Opening};
use crate::session::{Ctx, UserDb};

/// Admin commands are short; a larger message is a mistake or an attack.
const MAX_MESSAGE: usize = 1 << 20;
/// An operator's psql may sit idle for a long time, but not forever.
const IDLE_LIMIT: Duration = Duration::from_secs(3600);

pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>, tasks: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.fast.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tasks.spawn(session(ctx.clone(), stream, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin console accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn session(ctx: Arc<Ctx>, stream: TcpStream, peer: SocketAddr) {
    let (deadline, tls) = {
        let config = ctx.config.load();
        (
            tokio::time::Instant::now() + config.authentication_timeout,
            config.tls.clone(),
        )
    };
    // The same TLS as the data port (same acceptor); PGPIVOT_TLS_REQUIRED applies here too.
    match crate::tls::open::open(stream, peer, deadline, tls.as_ref(), &ctx.metrics).await {
        None => {}
        Some(crate::tls::Opened::Plain(conn, first)) => {
            console_session(ctx, conn, first, peer).await
        }
        Some(crate::tls::Opened::Tls(conn, first)) => {
            console_session(ctx, *conn, Some(first), peer).await
        }
    }
}

/// A console session to its end, which closes the connection (with a close_notify inside TLS).
async fn console_session<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: Arc<Ctx>,
    mut conn: ClientConn<S>,
    first: Option<InitialPacket>,
    peer: SocketAddr,
) {
    console_turns(ctx, &mut conn, first, peer).await;
    conn.close().await;
}

async fn console_turns<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: Arc<Ctx>,
    conn: &mut ClientConn<S>,
    first: Option<InitialPacket>,
    peer: SocketAddr,
) {
    let config = ctx.config.load_full();
    // The admin user as configured now (RELOAD may have changed its password).
    let Some(admin) = config.admin.user.as_ref() else {
        conn.fatal(
            pgpivot_protocol::sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            "the admin console has no user configured",
        )
        .await;
        return;
    };
    if !conn.tls && config.tls_required {
        let e = SessionError::TlsRequired {
            host: peer.ip().to_string(),
            user: String::new(),
            database: String::new(),
        };
        tracing::warn!(%peer, error = %e, "admin console login refused");
        conn.fatal(e.sqlstate(), &e.to_string()).await;
        return;
    }
    let users = UserDb::admin(admin);
    drop(config);
    let user = match login(&users, conn, first).await {
        Ok(Some(user)) => user,
        Ok(None) => return,
        Err(e) => {
            if !e.is_silent() {
                tracing::warn!(%peer, error = %e, "admin console login refused");
            }
            conn.refuse(&e).await;
            return;
        }
    };
    tracing::info!(%peer, user, "admin console session");
    let ClientConn { stream, buf, .. } = conn;
    let mut responder = Responder::new(Surface::Console);
    let mut out = BytesMut::new();
    loop {
        match header(buf, MAX_MESSAGE) {
            Err(e) => {
                let mut fatal = BytesMut::new();
                build::error_response(
                    &mut fatal,
                    &build::ErrorFields {
                        severity: "FATAL",
                        code: e.sqlstate(),
                        message: &e.to_string(),
                        detail: None,
                        hint: None,
                    },
                );
                let _ = stream.write_all(&fatal).await;
                let _ = stream.flush().await;
                return;
            }
            Ok(Some((tag, len))) if buf.len() >= len => {
                out.clear();
                let flow = responder
                    .handle(tag, &buf[5..len], &*ctx, b'I', &mut out)
                    .await;
                buf.advance(len);
                if !out.is_empty()
                    && (stream.write_all(&out).await.is_err() || stream.flush().await.is_err())
                {
                    return;
                }
                if flow == Some(Flow::Terminate) {
                    return;
                }
                continue;
            }
            Ok(_) => {}
        }
        let read = tokio::select! {
            r = tokio::time::timeout(IDLE_LIMIT, stream.read_buf(buf)) => r,
            _ = ctx.shutdown.fast.cancelled() => return,
        };
        match read {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

/// Startup and SCRAM; `Ok(None)` for a cancel request or a client that went away.
async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    users: &UserDb,
    conn: &mut ClientConn<S>,
    first: Option<InitialPacket>,
) -> Result<Option<String>, SessionError> {
    let first = match first {
        Some(p) => p,
        None => match conn.read_startup(false).await? {
            Opening::Packet(p) => p,
            Opening::Tls => return Ok(None),
        },
    };
    let startup = match first {
        InitialPacket::Startup(m) => m,
        // Cancels; encryption requests are answered by `read_startup`, never returned.
        InitialPacket::Cancel(_) | InitialPacket::SslRequest | InitialPacket::GssEncRequest => {
            return Ok(None)
        }
    };
    let user = startup.user().to_string();
    users.authenticate(conn, &user).await?;
    let mut out = BytesMut::with_capacity(512);
    build::auth_ok(&mut out);
    let version = format!("15.0 (pgpivot {})", env!("CARGO_PKG_VERSION"));
    for (k, v) in [
        ("server_version", version.as_str()),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        (
            "application_name",
            startup.get("application_name").unwrap_or(""),
        ),
    ] {
        build::parameter_status(&mut out, k, v);
    }
    build::backend_key_data(&mut out, 0, &[0; 4]);
    build::ready_for_query(&mut out, b'I');
    conn.write(&out).await?;
    Ok(Some(user))
}
