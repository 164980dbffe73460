//! The forwarding hot path: two pumps, client→server and server→client, running concurrently
//! in the session's task (so neither side's backpressure can deadlock the other).
//!
//! Bytes pass through unparsed and uncopied: the [`Scanner`] only finds message boundaries and
//! stops at the few messages we must read (ReadyForQuery for transaction state, ErrorResponse for
//! FATALs, Terminate). Nothing is allocated per message.
//!
//! Only the server→client pump ever writes pgpivot's own messages to the client, and only at a
//! message boundary, so an injected FATAL can never split a row in half. Anything that wants the
//! session ended (failover, shutdown, a client protocol error) asks it through [`Shared`].

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use bytes::{Buf, BytesMut};
use pgpivot_protocol::build::{self, ErrorFields};
use pgpivot_protocol::frame::{Scan, Scanner};
use pgpivot_protocol::sqlstate;
use pgpivot_protocol::views::ErrorView;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use super::Ctx;

/// Read sizes: large enough for big result sets, small enough for many idle sessions.
const CLIENT_CHUNK: usize = 8 * 1024;
const SERVER_CHUNK: usize = 16 * 1024;
/// Messages from servers are bounded by PostgreSQL itself (1 GB fields); this only guards
/// against a corrupt length.
const SERVER_MAX_MESSAGE: usize = i32::MAX as usize;
/// Terminate is the only client message read whole, so the only one a client could make us wait
/// for and reserve room for. PostgreSQL reads it with its 10 kB small-message limit
/// (`PQ_SMALL_MESSAGE_LIMIT`); a larger one is a protocol violation, not something to buffer.
const MAX_TERMINATE: usize = 10_000;

/// State both pumps see.
pub struct Shared {
    /// Requests (Query, Sync, FunctionCall) sent whose ReadyForQuery has not come back.
    pending: AtomicU32,
    /// The last ReadyForQuery said "idle" (not in a transaction block).
    idle: AtomicBool,
    /// A reason to end the session, set by the client pump, acted on by the server pump.
    stop: Mutex<Option<(&'static str, String)>>,
    wake: Notify,
}

impl Shared {
    pub fn new() -> Self {
        Shared {
            pending: AtomicU32::new(0),
            idle: AtomicBool::new(true),
            stop: Mutex::new(None),
            wake: Notify::new(),
        }
    }

    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    fn request_stop(&self, code: &'static str, message: String) {
        if let Ok(mut s) = self.stop.lock() {
            s.get_or_insert((code, message));
        }
        self.wake.notify_one();
    }

    fn take_stop(&self) -> Option<(&'static str, String)> {
        self.stop.lock().ok().and_then(|mut s| s.take())
    }
}

/// How the client→server pump ended.
#[derive(Debug)]
pub enum ClientEnd {
    /// EOF or a read error: the client is gone.
    Closed,
    /// The client sent Terminate (forwarded).
    Terminated,
    /// Forwarding stopped on our side (routing changed, server write failed, protocol error);
    /// the server pump decides what the client is told.
    Handover,
}

/// How the server→client pump ended (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEnd {
    /// The server closed (after its own FATAL, or unexpectedly).
    ServerClosed,
    /// Writing to the client failed.
    ClientGone,
    /// pgpivot ended the session with this SQLSTATE.
    Ended(&'static str),
}

pub async fn client_to_server<R, W>(
    mut client: R,
    mut server: W,
    mut buf: BytesMut,
    max_message: usize,
    shared: &Shared,
    ctx: &Ctx,
    node_id: usize,
) -> ClientEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut scanner = Scanner::new(max_message);
    let mut generation = ctx.topology.generation();
    loop {
        let mut pos = 0;
        let mut terminate = false;
        loop {
            let scan = scanner.scan(&buf[pos..], |tag| {
                if tag == b'X' {
                    return true;
                }
                if matches!(tag, b'Q' | b'S' | b'F') {
                    shared.pending.fetch_add(1, Ordering::Relaxed);
                }
                false
            });
            match scan {
                Ok(Scan::Pass(n)) => pos += n,
                Ok(Scan::Message { len, .. }) => {
                    scanner.consume(len);
                    pos += len;
                    terminate = true;
                    break;
                }
                Ok(Scan::NeedMore { wanted }) => {
                    if wanted > MAX_TERMINATE {
                        shared.request_stop(
                            sqlstate::PROTOCOL_VIOLATION,
                            format!("invalid message length {} for message type 'X'", wanted - 1),
                        );
                        return ClientEnd::Handover;
                    }
                    buf.reserve(wanted.saturating_sub(buf.len() - pos));
                    break;
                }
                Err(e) => {
                    shared.request_stop(e.sqlstate(), e.to_string());
                    return ClientEnd::Handover;
                }
            }
        }
        if pos > 0 {
            // Never send anything new to a node that stopped being primary (design 1.1).
            let now = ctx.topology.generation();
            if now != generation {
                generation = now;
                if !still_primary(ctx, node_id) {
                    shared.wake.notify_one();
                    return ClientEnd::Handover;
                }
            }
            if server.write_all(&buf[..pos]).await.is_err() {
                return ClientEnd::Handover;
            }
            buf.advance(pos);
        }
        if terminate {
            let _ = server.flush().await;
            return ClientEnd::Terminated;
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(CLIENT_CHUNK);
        }
        match client.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return ClientEnd::Closed,
            Ok(_) => {}
        }
    }
}

fn still_primary(ctx: &Ctx, node_id: usize) -> bool {
    ctx.topology
        .current()
        .primary
        .as_ref()
        .is_some_and(|p| p.node_id == node_id)
}

pub async fn server_to_client<R, W>(
    mut server: R,
    mut client: W,
    mut buf: BytesMut,
    shared: &Shared,
    ctx: &Ctx,
    node_id: usize,
) -> ServerEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut scanner = Scanner::new(SERVER_MAX_MESSAGE);
    let mut generation = ctx.topology.generation();
    let mut draining = false;
    let mut server_fatal = false;
    loop {
        let changed = ctx.topology.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();

        // Safe point: everything read so far has been written out.
        let stop = if let Some((code, msg)) = shared.take_stop() {
            Some((code, msg))
        } else if ctx.topology.generation() != generation && {
            generation = ctx.topology.generation();
            !still_primary(ctx, node_id)
        } {
            Some((sqlstate::ADMIN_SHUTDOWN, describe_failover(ctx, node_id)))
        } else if ctx.shutdown.fast.is_cancelled()
            || (draining
                && shared.pending() == 0
                && shared.idle.load(Ordering::Relaxed)
                && scanner.at_boundary())
        {
            Some((
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection due to administrator command".to_string(),
            ))
        } else {
            None
        };
        if let Some((code, message)) = stop {
            if scanner.at_boundary() {
                let mut out = BytesMut::with_capacity(128 + message.len());
                build::error_response(
                    &mut out,
                    &ErrorFields {
                        severity: "FATAL",
                        code,
                        message: &message,
                        detail: None,
                        hint: None,
                    },
                );
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                    client.write_all(&out).await?;
                    client.flush().await
                })
                .await;
            }
            return ServerEnd::Ended(code);
        }

        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(SERVER_CHUNK);
        }
        let read = tokio::select! {
            biased;
            _ = shared.wake.notified() => continue,
            _ = &mut changed => continue,
            _ = ctx.shutdown.fast.cancelled() => continue,
            _ = ctx.shutdown.drain.cancelled(), if !draining => {
                draining = true;
                continue;
            }
            r = server.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) | Err(_) => {
                if !server_fatal && scanner.at_boundary() {
                    shared.request_stop(
                        sqlstate::CONNECTION_FAILURE,
                        "server closed the connection unexpectedly".into(),
                    );
                    continue;
                }
                return ServerEnd::ServerClosed;
            }
            Ok(_) => {}
        }
        let mut pos = 0;
        loop {
            match scanner.scan(&buf[pos..], |t| t == b'Z' || t == b'E') {
                Ok(Scan::Pass(n)) => pos += n,
                Ok(Scan::Message { tag, len }) => {
                    let body = &buf[pos + 5..pos + len];
                    if tag == b'Z' {
                        let _ = shared.pending.fetch_update(
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                            |p| Some(p.saturating_sub(1)),
                        );
                        shared
                            .idle
                            .store(body.first() == Some(&b'I'), Ordering::Relaxed);
                    } else if matches!(ErrorView::new(body).severity(), Some("FATAL" | "PANIC")) {
                        server_fatal = true;
                    }
                    scanner.consume(len);
                    pos += len;
                }
                Ok(Scan::NeedMore { wanted }) => {
                    buf.reserve(wanted.saturating_sub(buf.len() - pos));
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "malformed message from server; closing session");
                    return ServerEnd::ServerClosed;
                }
            }
        }
        if pos > 0 {
            if client.write_all(&buf[..pos]).await.is_err() {
                return ServerEnd::ClientGone;
            }
            buf.advance(pos);
        }
    }
}

impl std::fmt::Display for ServerEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerEnd::ServerClosed => write!(f, "server closed"),
            ServerEnd::ClientGone => write!(f, "client gone"),
            ServerEnd::Ended(code) => write!(f, "ended by pgpivot ({code})"),
        }
    }
}

fn describe_failover(ctx: &Ctx, node_id: usize) -> String {
    match ctx.topology.current().primary.as_ref() {
        Some(p) => format!(
            "terminating connection because backend node {node_id} is no longer the primary (failover to node {})",
            p.node_id
        ),
        None => format!(
            "terminating connection because backend node {node_id} is no longer the primary (failover in progress)"
        ),
    }
}
