//! The forwarding hot path: two pumps, client→server and server→client, polled together in the
//! session's task while a server connection is attached (so neither side's backpressure can
//! deadlock the other).
//!
//! Bytes pass through unparsed: the [`Scanner`] finds message boundaries and stops only at the
//! messages pooling must read — ReadyForQuery (transaction state), ParameterStatus (session
//! parameters), ErrorResponse (FATALs) from the server; Query/Parse/Bind/Describe/Close
//! (prepared statements, pinning) and Terminate from the client. Nothing is allocated per
//! message; client bytes are staged in one reused output buffer.
//!
//! Only the server→client pump writes to the client, and pgpivot's own messages only at a message
//! boundary. Whatever wants the attachment to end (transaction boundary, failover, shutdown,
//! protocol error) is decided there and reported to the engine.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use pgpivot_protocol::build::{self, ErrorFields};
use pgpivot_protocol::frame::Scanner;
use pgpivot_protocol::sqlstate;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::buffers;
pub use super::shared::{PrepState, Shared};
use super::staging::{stage_client_bytes, stage_server_bytes, Stop};
use super::streaming::Streaming;
use super::Ctx;
use crate::config::PoolMode;
use crate::pool::Pool;

const CLIENT_CHUNK: usize = 8 * 1024;
const SERVER_CHUNK: usize = 16 * 1024;
/// Server messages are bounded by PostgreSQL itself (1 GB fields); this only guards against a
/// corrupt length.
pub(super) const SERVER_MAX_MESSAGE: usize = i32::MAX as usize;
/// PostgreSQL reads Terminate with its 10 kB small-message limit; a larger one is a violation.
pub(super) const MAX_TERMINATE: usize = 10_000;

/// The client's side of a session: its buffer and stream state, kept across attachments.
pub struct ClientSide {
    pub buf: BytesMut,
    pub scan: Scanner,
    pub out: BytesMut,
    /// A message too large to hold whole, streaming to the server.
    pub(super) stream: Option<Streaming>,
}

impl ClientSide {
    /// `buf` may already hold what the client sent during login; `max_message` is the largest
    /// message accepted from it.
    pub fn new(buf: BytesMut, max_message: usize) -> Self {
        ClientSide {
            buf,
            scan: Scanner::new(max_message),
            out: BytesMut::new(),
            stream: None,
        }
    }
}

/// How the client→server pump ended.
#[derive(Debug)]
pub enum ClientEnd {
    /// EOF or a read error: the client is gone.
    Closed,
    /// The client sent Terminate (not forwarded: the server connection is pgpivot's).
    Terminated,
    /// Forwarding stopped on our side; the server pump decides what happens.
    Handover,
    /// The next request is one pgpivot answers itself; nothing of it was consumed.
    Yield,
}

/// How the server→client pump ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEnd {
    /// Transaction pooling: the transaction is over, give the connection back.
    Release,
    /// The node stopped being primary.
    Demoted,
    /// The server connection broke without a FATAL of its own.
    ServerLost,
    /// The server sent FATAL (forwarded) and closed: the client session ends too.
    ServerFatal,
    /// pgpivot ended the session (FATAL sent when at a boundary).
    Stopped(&'static str),
    /// Writing to the client failed.
    ClientGone,
    /// Nothing outstanding and the client's next request is answered by pgpivot: the engine
    /// sets the connection aside (still the client's) and takes it up again afterwards.
    Yield,
    /// Transaction pooling, a pinned client at a transaction boundary after it reset its
    /// parameters (`RESET`, `DISCARD ALL`) on a connection opened without them: the engine
    /// applies its startup values again, then the pumps go on on the same connection.
    Resync,
}

impl std::fmt::Display for ServerEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerEnd::Release => write!(f, "released"),
            ServerEnd::Demoted => write!(f, "node demoted"),
            ServerEnd::ServerLost => write!(f, "server connection lost"),
            ServerEnd::ServerFatal => write!(f, "server ended the session"),
            ServerEnd::Stopped(code) => write!(f, "ended by pgpivot ({code})"),
            ServerEnd::ClientGone => write!(f, "client gone"),
            ServerEnd::Yield => write!(f, "set aside for a local answer"),
            ServerEnd::Resync => write!(f, "startup parameters applied again"),
        }
    }
}

pub async fn client_to_server<R, W>(
    client: &mut R,
    server: &mut W,
    side: &mut ClientSide,
    shared: &Shared,
    ctx: &Ctx,
    node_id: usize,
    max_message: usize,
) -> ClientEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut generation = ctx.topology.generation();
    let counters = ctx.topology.counters(node_id);
    loop {
        // A client that keeps the socket full never makes a read wait: give the worker back
        // now and then, so other sessions, the listener and the monitor run.
        tokio::task::consume_budget().await;
        // PAUSE holds a client's next transaction (not the rest of a running one). Busy first,
        // then the check (see `Pause`), so PAUSE never misses a transaction starting.
        if !side.buf.is_empty() && !shared.busy.load(Ordering::Relaxed) {
            shared.busy.store(true, Ordering::SeqCst);
            if ctx.pause.is_paused() {
                shared.busy.store(false, Ordering::SeqCst);
                ctx.pause.wait_resumed().await;
                continue;
            }
        }
        // Never send anything new to a node that stopped being primary (design 1.1). Checked
        // before staging, so requests not yet sent stay in the buffer, uncounted, and go to the
        // new primary instead (no await between here and the write).
        let now = ctx.topology.generation();
        if now != generation {
            generation = now;
            if !still_primary(ctx, node_id) {
                shared.wake.notify_one();
                return ClientEnd::Handover;
            }
        }
        let (pos, stop) = match stage_client_bytes(side, shared, max_message, counters) {
            Ok(staged) => staged,
            Err(end) => return end,
        };
        if shared.pinned().is_some() && !shared.pin_counted.swap(true, Ordering::Relaxed) {
            ctx.pinned_total.fetch_add(1, Ordering::Relaxed);
        }
        // A request only partly read is not a boundary: the connection stays attached while
        // the rest arrives (releasing it would only bring the client straight back).
        let whole = pos == side.buf.len() || matches!(stop, Stop::Local);
        shared
            .client_boundary
            .store(side.scan.at_boundary() && whole, Ordering::Relaxed);
        if !side.out.is_empty() {
            if shared.cancels_in_flight() {
                // What the client sends after a cancel request waits until PostgreSQL has
                // processed it: arriving late, it would cancel this instead.
                wait_for_cancels(shared).await;
            }
            shared.in_flight.store(pos, Ordering::Relaxed);
            let wrote = server.write_all(&side.out).await;
            shared.tally.bytes_in(side.out.len());
            // Written or lost with the server: either way these requests are counted as sent
            // (they get a reply or an error) and must never be sent again.
            side.buf.advance(pos);
            shared.in_flight.store(0, Ordering::Relaxed);
            if wrote.is_err() {
                return ClientEnd::Handover;
            }
        } else {
            side.buf.advance(pos);
        }
        match stop {
            Stop::Terminate => return ClientEnd::Terminated,
            // What precedes a local command is sent; the command itself is next.
            Stop::Local => continue,
            Stop::NeedInput => {}
        }
        buffers::make_room(&mut side.buf, 1024, CLIENT_CHUNK);
        match client.read_buf(&mut side.buf).await {
            Ok(0) | Err(_) => return ClientEnd::Closed,
            Ok(_) => shared.last_active.store(ctx.clock.now(), Ordering::Relaxed),
        }
    }
}

/// Waits (5 s at most) until none of the client's cancel requests is on its way.
/// (Boxed: rare, and the pump's future should not carry its state.)
fn wait_for_cancels(
    shared: &Shared,
) -> std::pin::Pin<Box<impl std::future::Future<Output = ()> + '_>> {
    Box::pin(async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while shared.cancels_in_flight() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    })
}

pub fn still_primary(ctx: &Ctx, node_id: usize) -> bool {
    ctx.topology
        .current()
        .primary
        .as_ref()
        .is_some_and(|p| p.node_id == node_id)
}

/// The server's side of one attachment.
pub struct ServerSide {
    pub buf: BytesMut,
    pub scan: Scanner,
    pub out: BytesMut,
    /// The attached connection's pool, whose stats the session's counts go to.
    pub pool: Option<Arc<Pool>>,
    /// (the attached server's pid, the pid the client was told) when they differ: a
    /// NotificationResponse from the client's own server connection then carries the client's
    /// pid, so a driver recognizes its own notifications (transaction mode, or session mode
    /// after the client moved to a new primary).
    pub own_pid: Option<(i32, i32)>,
}

impl Default for ServerSide {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerSide {
    pub fn new() -> Self {
        ServerSide {
            // Allocated on first read: an idle client in transaction mode holds none.
            buf: BytesMut::new(),
            scan: Scanner::new(SERVER_MAX_MESSAGE),
            out: BytesMut::new(),
            pool: None,
            own_pid: None,
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn server_to_client<R, W>(
    server: &mut R,
    client: &mut W,
    side: &mut ServerSide,
    server_params: &mut HashMap<String, String>,
    client_params: &mut super::params::ClientParams,
    shared: &Shared,
    ctx: &Ctx,
    node_id: usize,
    mode: PoolMode,
) -> ServerEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Registered once per attachment, before the generation is read (registering on every
    // turn would take the waiter list's lock, shared by all sessions, on every server read).
    let changed = ctx.topology.notified();
    tokio::pin!(changed);
    changed.as_mut().enable();
    // Likewise the session's wake and the shutdown tokens: armed once per attachment, not per
    // read (the tokens' waiter lists are shared by every session).
    let wake = shared.wake.notified();
    tokio::pin!(wake);
    wake.as_mut().enable();
    let fast = ctx.shutdown.fast.cancelled();
    tokio::pin!(fast);
    let drain = ctx.shutdown.drain.cancelled();
    tokio::pin!(drain);
    let mut fast_fired = false;
    let mut generation = ctx.topology.generation();
    let mut draining = false;
    let mut server_fatal = false;
    let counters = ctx.topology.counters(node_id);
    loop {
        tokio::task::consume_budget().await;
        if shared.busy.load(Ordering::Relaxed) && side.buf.is_empty() && shared.quiescent() {
            shared.busy.store(false, Ordering::Relaxed);
        }

        // Safe point: everything read so far has been written out.
        let at_boundary = side.scan.at_boundary();
        shared.server_boundary.store(at_boundary, Ordering::Relaxed);
        let stop = if let Some(s) = shared.take_stop() {
            Some(s)
        } else if ctx.shutdown.fast.is_cancelled() || (draining && shared.quiescent()) {
            Some((
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection due to administrator command".to_string(),
            ))
        } else {
            None
        };
        if let Some((code, message)) = stop {
            if at_boundary {
                ctx.metrics.error_sent(Some(code));
                let _ = write_fatal(client, code, &message).await;
            }
            return ServerEnd::Stopped(code);
        }
        if ctx.topology.generation() != generation {
            generation = ctx.topology.generation();
            if !still_primary(ctx, node_id) {
                return ServerEnd::Demoted;
            }
        }
        if mode == PoolMode::Transaction && side.buf.is_empty() && shared.quiescent() {
            if shared.pinned().is_none() {
                return ServerEnd::Release;
            }
            if shared.params_reset_pending() {
                return ServerEnd::Resync;
            }
        }
        if shared.yield_wanted.load(Ordering::Relaxed) {
            if side.buf.is_empty() && shared.can_yield() {
                return ServerEnd::Yield;
            }
            tracing::trace!(
                pending = shared.pending(),
                unsynced = shared.unsynced.load(Ordering::Relaxed),
                settled = shared.prep().plan.is_settled(),
                buffered = side.buf.len(),
                "local answer waits for the server"
            );
        }

        buffers::make_room(&mut side.buf, 1024, SERVER_CHUNK);
        let read = tokio::select! {
            biased;
            _ = &mut wake => {
                wake.set(shared.wake.notified());
                wake.as_mut().enable();
                continue;
            }
            _ = &mut changed => {
                // Registered again before the generation is read at the top.
                changed.set(ctx.topology.notified());
                changed.as_mut().enable();
                continue;
            }
            _ = &mut fast, if !fast_fired => {
                fast_fired = true;
                continue;
            }
            _ = &mut drain, if !draining => {
                draining = true;
                continue;
            }
            r = server.read_buf(&mut side.buf) => r,
        };
        match read {
            Ok(0) | Err(_) => {
                return if server_fatal {
                    ServerEnd::ServerFatal
                } else {
                    ServerEnd::ServerLost
                };
            }
            Ok(_) => {}
        }
        let pos = match stage_server_bytes(
            side,
            shared,
            server_params,
            client_params,
            &mut server_fatal,
            counters,
            &ctx.metrics,
        ) {
            Ok(pos) => pos,
            Err(end) => return end,
        };
        if !side.out.is_empty() {
            if send(client, &side.out).await.is_err() {
                return ServerEnd::ClientGone;
            }
            shared.tally.bytes_out(side.out.len());
            shared
                .tally
                .flush_if_due(side.pool.as_deref().map(Pool::stats), &ctx.metrics);
        }
        side.buf.advance(pos);
    }
}

/// Writes `bytes` to the client and flushes: a TLS writer may keep the end of a reply queued
/// until it is flushed, and nothing else would flush it (for a plaintext socket the flush is a
/// no-op).
pub async fn send<W: AsyncWrite + Unpin>(client: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    client.write_all(bytes).await?;
    client.flush().await
}

/// Writes a FATAL ErrorResponse (bounded in time: a client that does not read is not waited for).
///
/// Boxed: it is awaited on rare paths of long-lived futures, which should not carry its state.
pub fn write_fatal<'a, W: AsyncWrite + Unpin>(
    client: &'a mut W,
    code: &'a str,
    message: &'a str,
) -> std::pin::Pin<Box<impl std::future::Future<Output = bool> + 'a>> {
    Box::pin(write_fatal_now(client, code, message))
}

async fn write_fatal_now<W: AsyncWrite + Unpin>(client: &mut W, code: &str, message: &str) -> bool {
    let mut out = BytesMut::with_capacity(128 + message.len());
    build::error_response(
        &mut out,
        &ErrorFields {
            severity: "FATAL",
            code,
            message,
            detail: None,
            hint: None,
        },
    );
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(1), async {
            send(client, &out).await
        })
        .await,
        Ok(Ok(()))
    )
}

#[cfg(test)]
mod send_tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::AsyncWrite;

    /// Like tokio-rustls when the socket is full: a write is accepted into a queue and only a
    /// flush (pending a few times first) sends it.
    #[derive(Default)]
    struct Queueing {
        queued: Vec<u8>,
        sent: Vec<u8>,
        stalls: usize,
    }

    impl AsyncWrite for Queueing {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.queued.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            if self.stalls > 0 {
                self.stalls -= 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let q = std::mem::take(&mut self.queued);
            self.sent.extend_from_slice(&q);
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn send_returns_once_a_queueing_writer_has_sent_everything() {
        let mut w = Queueing {
            stalls: 3,
            ..Default::default()
        };
        super::send(&mut w, b"reply").await.unwrap();
        assert_eq!(w.sent, b"reply");
        assert!(w.queued.is_empty());
        super::send(&mut w, b" more").await.unwrap();
        assert_eq!(w.sent, b"reply more");
    }
}
