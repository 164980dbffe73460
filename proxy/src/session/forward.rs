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

use bytes::{Buf, BytesMut};
use pgpivot_protocol::build::{self, ErrorFields};
use pgpivot_protocol::frame::{Scan, Scanner};
use pgpivot_protocol::sqlstate;
use pgpivot_protocol::views::{self, ErrorView};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::prepared;
pub use super::shared::{PrepState, Shared};
use super::sql::{self, Effect};
use super::Ctx;
use crate::config::PoolMode;

const CLIENT_CHUNK: usize = 8 * 1024;
const SERVER_CHUNK: usize = 16 * 1024;
/// Server messages are bounded by PostgreSQL itself (1 GB fields); this only guards against a
/// corrupt length.
const SERVER_MAX_MESSAGE: usize = i32::MAX as usize;
/// PostgreSQL reads Terminate with its 10 kB small-message limit; a larger one is a violation.
const MAX_TERMINATE: usize = 10_000;

/// The client's side of a session: its buffer and stream state, kept across attachments.
pub struct ClientSide {
    pub buf: BytesMut,
    pub scan: Scanner,
    pub out: BytesMut,
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
        }
    }
}

fn client_interesting(tag: u8) -> bool {
    tag == b'X' || tag == b'Q' || prepared::is_statement_message(tag)
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
    loop {
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
        let (pos, terminate) = match stage_client_bytes(side, shared, max_message) {
            Ok(staged) => staged,
            Err(end) => return end,
        };
        if shared.pinned().is_some() && !shared.pin_counted.swap(true, Ordering::Relaxed) {
            ctx.pinned_total.fetch_add(1, Ordering::Relaxed);
        }
        shared
            .client_boundary
            .store(side.scan.at_boundary(), Ordering::Relaxed);
        if !side.out.is_empty() {
            shared.in_flight.store(pos, Ordering::Relaxed);
            let wrote = server.write_all(&side.out).await;
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
        if terminate {
            return ClientEnd::Terminated;
        }
        if side.buf.capacity() - side.buf.len() < 1024 {
            side.buf.reserve(CLIENT_CHUNK);
        }
        match client.read_buf(&mut side.buf).await {
            Ok(0) | Err(_) => return ClientEnd::Closed,
            Ok(_) => {}
        }
    }
}

/// Scans what the client sent and stages it (rewritten where prepared statements need it) in
/// `side.out`. Synchronous, so the prepared-statement lock is never held across an await.
/// Returns how many input bytes were consumed and whether the client sent Terminate.
fn stage_client_bytes(
    side: &mut ClientSide,
    shared: &Shared,
    max_message: usize,
) -> Result<(usize, bool), ClientEnd> {
    let mut pos = 0;
    let mut terminate = false;
    side.out.clear();
    let mut prep = shared.prep();
    loop {
        let PrepState { plan, .. } = &mut *prep;
        let scan = side.scan.scan(&side.buf[pos..], |tag| {
            if client_interesting(tag) {
                return true;
            }
            match tag {
                b'S' => {
                    shared.pending.fetch_add(1, Ordering::Relaxed);
                    shared.syncs_since_execute.fetch_add(1, Ordering::Relaxed);
                    shared.unsynced.store(false, Ordering::Relaxed);
                }
                b'F' => {
                    shared.pending.fetch_add(1, Ordering::Relaxed);
                }
                b'E' => {
                    shared.syncs_since_execute.store(0, Ordering::Relaxed);
                    shared.unsynced.store(true, Ordering::Relaxed);
                }
                b'H' => shared.unsynced.store(true, Ordering::Relaxed),
                b'c' | b'f' => {
                    let ignored = shared.syncs_since_execute.swap(0, Ordering::Relaxed);
                    if ignored > 0 {
                        let _ = shared.pending.fetch_update(
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                            |p| Some(p.saturating_sub(ignored)),
                        );
                        plan.forget_syncs(ignored);
                    }
                }
                _ => {}
            }
            plan.on_client_message(tag);
            false
        });
        match scan {
            Ok(Scan::Pass(n)) => {
                side.out.extend_from_slice(&side.buf[pos..pos + n]);
                pos += n;
            }
            Ok(Scan::Message { tag, len }) => {
                side.scan.consume(len);
                let frame = &side.buf[pos..pos + len];
                pos += len;
                if tag == b'X' {
                    terminate = true;
                    break;
                }
                if tag == b'Q' {
                    shared.syncs_since_execute.store(0, Ordering::Relaxed);
                    shared.pending.fetch_add(1, Ordering::Relaxed);
                    shared.unsynced.store(false, Ordering::Relaxed);
                    pin_effects(views::query_text(&frame[5..]), shared);
                } else {
                    shared.unsynced.store(true, Ordering::Relaxed);
                    if tag == b'P' {
                        pin_effects(parse_query_text(&frame[5..]), shared);
                    }
                }
                let PrepState {
                    plan,
                    client,
                    server,
                } = &mut *prep;
                let r = prepared::rewrite_client_message(
                    tag,
                    frame,
                    client,
                    server,
                    plan,
                    &mut side.out,
                );
                tracing::trace!(tag = %(tag as char), result = ?r, settled = plan.is_settled(), "client message");
                if let Err(e) = r {
                    shared.request_stop(e.sqlstate(), e.to_string());
                    return Err(ClientEnd::Handover);
                }
            }
            Ok(Scan::NeedMore { wanted }) => {
                let have = side.buf.len() - pos;
                let limit = match side.buf.get(pos) {
                    Some(b'X') => MAX_TERMINATE,
                    _ => max_message,
                };
                if wanted > limit {
                    shared.request_stop(
                        sqlstate::PROTOCOL_VIOLATION,
                        format!("invalid message length {}", wanted - 1),
                    );
                    return Err(ClientEnd::Handover);
                }
                side.buf.reserve(wanted.saturating_sub(have));
                break;
            }
            Err(e) => {
                shared.request_stop(e.sqlstate(), e.to_string());
                return Err(ClientEnd::Handover);
            }
        }
    }
    Ok((pos, terminate))
}

/// Session-bound statements pin the client (prepared-statement resets are the plan's business:
/// it sees their CommandComplete).
fn pin_effects(text: Option<&[u8]>, shared: &Shared) {
    let Some(text) = text else { return };
    for e in sql::effects(text) {
        if let Effect::Pin(why) = e {
            shared.pin(why);
        }
    }
}

/// The query text of a Parse body: name\0 query\0 ...
fn parse_query_text(body: &[u8]) -> Option<&[u8]> {
    let name_end = body.iter().position(|&b| b == 0)?;
    let rest = body.get(name_end + 1..)?;
    let q_end = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..q_end])
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
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn server_to_client<R, W>(
    server: &mut R,
    client: &mut W,
    side: &mut ServerSide,
    server_params: &mut HashMap<String, String>,
    client_params: &mut HashMap<String, String>,
    shared: &Shared,
    ctx: &Ctx,
    node_id: usize,
    mode: PoolMode,
) -> ServerEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut generation = ctx.topology.generation();
    let mut draining = false;
    let mut server_fatal = false;
    loop {
        let changed = ctx.topology.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();

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
        if mode == PoolMode::Transaction
            && shared.pinned().is_none()
            && side.buf.is_empty()
            && shared.quiescent()
        {
            return ServerEnd::Release;
        }

        if side.buf.capacity() - side.buf.len() < 1024 {
            side.buf.reserve(SERVER_CHUNK);
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
        ) {
            Ok(pos) => pos,
            Err(end) => return end,
        };
        if !side.out.is_empty() && client.write_all(&side.out).await.is_err() {
            return ServerEnd::ClientGone;
        }
        side.buf.advance(pos);
    }
}

/// Scans what the server sent and stages what the client must see in `side.out` (the plan may
/// rewrite replies). Synchronous, so the prepared-statement lock is never held across an await.
/// Returns how many input bytes were consumed.
fn stage_server_bytes(
    side: &mut ServerSide,
    shared: &Shared,
    server_params: &mut HashMap<String, String>,
    client_params: &mut HashMap<String, String>,
    server_fatal: &mut bool,
) -> Result<usize, ServerEnd> {
    let mut pos = 0;
    side.out.clear();
    let mut prep = shared.prep();
    loop {
        let PrepState {
            plan,
            client: cst,
            server: sst,
        } = &mut *prep;
        let scan = side.scan.scan(&side.buf[pos..], |t| {
            matches!(t, b'Z' | b'E' | b'S') || plan.wants(t)
        });
        match scan {
            Ok(Scan::Pass(n)) => {
                side.out.extend_from_slice(&side.buf[pos..pos + n]);
                pos += n;
            }
            Ok(Scan::Message { tag, len }) => {
                side.scan.consume(len);
                let frame = &side.buf[pos..pos + len];
                pos += len;
                let forward = observe(
                    tag,
                    &frame[5..],
                    shared,
                    server_params,
                    client_params,
                    server_fatal,
                );
                // A held-back FATAL of a dying server is not part of the client stream.
                tracing::trace!(tag = %(tag as char), len, "server message");
                if forward
                    && plan
                        .on_server_message(tag, frame, &mut side.out, cst, sst)
                        .is_err()
                {
                    tracing::error!(
                        "server reply out of step with the client's requests; closing session"
                    );
                    return Err(ServerEnd::ServerLost);
                }
            }
            Ok(Scan::NeedMore { wanted }) => {
                side.buf
                    .reserve(wanted.saturating_sub(side.buf.len() - pos));
                break;
            }
            Err(e) => {
                tracing::error!(error = %e, "malformed message from server; closing session");
                return Err(ServerEnd::ServerLost);
            }
        }
    }
    Ok(pos)
}

/// Bookkeeping for the server messages the pump reads: transaction state, session parameters,
/// FATALs. Returns whether the message goes on to the client.
fn observe(
    tag: u8,
    body: &[u8],
    shared: &Shared,
    server_params: &mut HashMap<String, String>,
    client_params: &mut HashMap<String, String>,
    server_fatal: &mut bool,
) -> bool {
    match tag {
        b'Z' => {
            let _ = shared
                .pending
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                    Some(p.saturating_sub(1))
                });
            shared
                .idle
                .store(body.first() == Some(&b'I'), Ordering::Relaxed);
        }
        b'E' => {
            let v = ErrorView::new(body);
            if matches!(v.severity(), Some("FATAL" | "PANIC")) {
                if shared.pinned().is_some() {
                    // Its session state dies with this connection: the client must know.
                    *server_fatal = true;
                    return true;
                }
                let held = (
                    v.sqlstate()
                        .unwrap_or(sqlstate::CONNECTION_FAILURE)
                        .to_string(),
                    v.message().unwrap_or("server connection lost").to_string(),
                );
                *shared
                    .server_fatal
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(held);
                return false;
            }
        }
        b'S' => {
            if let Some((k, v)) = views::parameter_status(body) {
                let (k, v) = (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                );
                server_params.insert(k.clone(), v.clone());
                client_params.insert(k, v);
            }
        }
        _ => {}
    }
    true
}

/// Writes a FATAL ErrorResponse (bounded in time: a client that does not read is not waited for).
pub async fn write_fatal<W: AsyncWrite + Unpin>(client: &mut W, code: &str, message: &str) -> bool {
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
            client.write_all(&out).await?;
            client.flush().await
        })
        .await,
        Ok(Ok(()))
    )
}
