//! The opening of a TCP connection when TLS is configured, for the data port and the admin
//! console alike: direct TLS (PostgreSQL 17 `sslnegotiation=direct`), or the packets before the
//! startup message — SSLRequest answered 'S', then the handshake and the startup packet read
//! inside TLS. Everything is bounded by the login deadline (the authentication timeout).

use std::net::SocketAddr;

use pgpivot_protocol::startup::InitialPacket;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use super::{TlsConfig, ALPN_POSTGRESQL};
use crate::error::SessionError;
use crate::metrics::Metrics;
use crate::session::conn::{ClientConn, Opening};

/// The first byte of a TLS record carrying a handshake (a ClientHello): no PostgreSQL packet
/// starts with it (its length would be over 369 MB).
const TLS_HANDSHAKE: u8 = 0x16;

/// A connection ready for login.
pub enum Opened {
    /// Plaintext; with its first packet when it had to be read to look for an SSLRequest.
    Plain(ClientConn<TcpStream>, Option<InitialPacket>),
    /// TLS, with the first packet read inside it (boxed: a rustls connection is over 1 kB).
    Tls(Box<ClientConn<TlsStream<TcpStream>>>, InitialPacket),
}

/// Opens a client connection. Without TLS nothing is read here (the plaintext path is what it
/// was). `None`: the connection is over — the client left, the handshake failed (logged at
/// debug: scanners and wrong clients must not flood the log) or the client was refused (FATAL
/// sent, logged at info).
pub async fn open(
    stream: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    tls: Option<&TlsConfig>,
    metrics: &Metrics,
) -> Option<Opened> {
    let Some(tls) = tls else {
        return Some(Opened::Plain(ClientConn::new(stream, deadline), None));
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None,
    }
    if first[0] == TLS_HANDSHAKE {
        let mut conn = handshake(stream, peer, deadline, tls).await?;
        if conn.stream.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
            // PostgreSQL 17's words; without ALPN a cross-protocol attack cannot be ruled out.
            let e = SessionError::Protocol(
                "received direct SSL connection request without ALPN protocol negotiation \
                 extension"
                    .into(),
            );
            refuse(&mut conn, peer, e, metrics).await;
            return None;
        }
        return inside(conn, peer, metrics).await;
    }
    let mut conn = ClientConn::new(stream, deadline);
    match conn.read_startup(true).await {
        Ok(Opening::Packet(p)) => Some(Opened::Plain(conn, Some(p))),
        Ok(Opening::Tls) => {
            let conn = handshake(conn.stream, peer, deadline, tls).await?;
            inside(conn, peer, metrics).await
        }
        Err(e) => {
            refuse(&mut conn, peer, e, metrics).await;
            None
        }
    }
}

async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    tls: &TlsConfig,
) -> Option<ClientConn<TlsStream<TcpStream>>> {
    match tokio::time::timeout_at(deadline, tls.acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(ClientConn::encrypted(s, deadline, tls.end_point.clone())),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// The startup packet (or cancel request) inside TLS.
async fn inside(
    mut conn: ClientConn<TlsStream<TcpStream>>,
    peer: SocketAddr,
    metrics: &Metrics,
) -> Option<Opened> {
    match conn.read_startup(false).await {
        Ok(Opening::Packet(p)) => Some(Opened::Tls(Box::new(conn), p)),
        // `read_startup(false)` does not offer TLS.
        Ok(Opening::Tls) => {
            conn.close().await;
            None
        }
        Err(e) => {
            refuse(&mut conn, peer, e, metrics).await;
            None
        }
    }
}

/// Answers a refused opening as PostgreSQL would (see `ClientConn::refuse`) and closes it (with
/// a close_notify inside TLS).
async fn refuse<S>(conn: &mut ClientConn<S>, peer: SocketAddr, e: SessionError, metrics: &Metrics)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if e.is_silent() {
        tracing::debug!(%peer, error = %e, "connection closed before login");
    } else {
        tracing::info!(%peer, error = %e, code = e.sqlstate(), "session refused");
    }
    if conn.refuse(&e).await {
        metrics.error_sent(Some(e.sqlstate()));
    }
    conn.close().await;
}

/// `PGPIVOT_TLS_REQUIRED`: whether a plaintext client may go on (unix-socket clients may).
pub fn plaintext_allowed(required: bool, peer: Option<SocketAddr>) -> bool {
    !required || peer.is_none()
}
