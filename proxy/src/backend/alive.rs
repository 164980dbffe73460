//! Is a node going away, or did only one of its backends end?
//!
//! A server connection that ends while its node is routed as primary is either the node
//! leaving (a shutdown, a crash and restart, the postmaster killed, the host gone) or one
//! backend ending on its own (`pg_terminate_backend`, `idle_session_timeout`). The FATAL
//! often reads the same (`57P01` for a fast shutdown and for `pg_terminate_backend` alike), so
//! the node is asked: a fresh connection that gets as far as authentication means the postmaster
//! takes connections — only that backend ended, and the client's session ends as PostgreSQL
//! would end it. Refused, "shutting down / in recovery / starting up" (`57P0x`), or no answer in
//! time: the node is going away, and pgpivot keeps the client for the next primary.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use pgpivot_protocol::frame::read_frame;
use pgpivot_protocol::startup::StartupMessage;
use pgpivot_protocol::views::ErrorView;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the node has to answer before it counts as going away.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the postmaster at `addr` takes connections: it answers a startup packet for `user`
/// and `database` with an authentication request (or anything but a `57P0x` refusal). The
/// connection is dropped before authenticating.
pub async fn accepting(addr: SocketAddr, user: &str, database: &str, timeout: Duration) -> bool {
    let startup = StartupMessage {
        major: 3,
        minor: 0,
        params: vec![
            ("user".into(), user.into()),
            ("database".into(), database.into()),
            ("application_name".into(), "pgpivot".into()),
        ],
    };
    tokio::time::timeout(timeout, ask(addr, &startup))
        .await
        .unwrap_or(false)
}

async fn ask(addr: SocketAddr, startup: &StartupMessage) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let mut out = BytesMut::with_capacity(256);
    startup.encode(&mut out);
    if stream.write_all(&out).await.is_err() {
        return false;
    }
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        match read_frame(&mut buf, 64 * 1024) {
            Ok(Some(frame)) => {
                return match frame.tag() {
                    b'E' => !ErrorView::new(frame.body())
                        .sqlstate()
                        .is_some_and(|c| c.starts_with("57P")),
                    // An authentication request, or any other answer of a running server.
                    _ => true,
                };
            }
            Ok(None) => {}
            Err(_) => return false,
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
    }
}
