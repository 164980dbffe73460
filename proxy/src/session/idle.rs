//! A client without a server connection (between transactions, or with its connection set
//! aside): wait for its next request and answer locally what needs no server — `SHOW pool_*`,
//! an error owed from a transaction lost to a failover, stray COPY data, Terminate.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use pgpivot_protocol::build::{self, ErrorFields};
use pgpivot_protocol::frame::header;
use pgpivot_protocol::sqlstate;
use tokio::io::{AsyncReadExt, AsyncWrite};

use super::buffers;
use super::forward::{send, write_fatal, ClientSide, Shared};
use super::local::{self, Local};
use super::prepared::parse_offline;
use super::streaming::WHOLE_MESSAGE;
use super::{Ctx, Readable};

/// The first read of a request after an idle period (larger requests grow the buffer).
const IDLE_READ_CHUNK: usize = 2048;

pub enum Idle {
    /// The client sent a request that needs a server.
    Request,
    End(&'static str),
}

/// The client holds no server: wait for its next request, answering locally what needs no
/// server (an owed error, stray COPY data, Terminate).
pub async fn idle_turn<R, W>(
    ctx: &Ctx,
    cr: &mut R,
    cw: &mut W,
    client: &mut ClientSide,
    shared: &Shared,
    debt: &mut Debt,
    parked: bool,
) -> Idle
where
    R: tokio::io::AsyncRead + Readable + Unpin,
    W: AsyncWrite + Unpin,
{
    let Debt { owed, lost_tx } = debt;
    // Bytes of a message too large to hold that are still to be dropped as they arrive (stray
    // COPY data, or a request answered with an owed error).
    let mut discard = 0usize;
    loop {
        tokio::task::consume_budget().await;
        if discard > 0 {
            let n = discard.min(client.buf.len());
            client.buf.advance(n);
            discard -= n;
        }
        let header = if discard > 0 {
            Ok(None)
        } else {
            header(&client.buf, ctx.config.load().max_message_bytes)
        };
        match header {
            Err(e) => {
                ctx.metrics.error_sent(Some(e.sqlstate()));
                write_fatal(cw, e.sqlstate(), &e.to_string()).await;
                return Idle::End("protocol violation");
            }
            Ok(Some((tag, len))) => {
                if owed.is_none()
                    && tag != b'X'
                    && client.buf.len() >= len
                    && local::claims(&client.buf, len, shared)
                {
                    let status = if parked {
                        shared.status.load(Ordering::Relaxed)
                    } else {
                        b'I'
                    };
                    // Boxed: rarely taken, and an idle client's future should stay small.
                    match Box::pin(local::answer(ctx, cw, &mut client.buf, len, shared, status))
                        .await
                    {
                        Local::Answered => {
                            if parked && client.buf.is_empty() && !local::batch_open(shared) {
                                // Take the connection up again (its notifications flow).
                                return Idle::Request;
                            }
                            continue;
                        }
                        Local::Forward => {}
                        Local::ClientGone => return Idle::End("client gone"),
                    }
                }
                let have = client.buf.len();
                if have < len && !matches!(tag, b'X') {
                    let droppable = matches!(tag, b'd' | b'c' | b'f' | b'H') || owed.is_some();
                    if have >= WHOLE_MESSAGE && droppable {
                        // Too large to hold, and never sent on: drop it as it arrives.
                        if let Some(o) = owed.clone().filter(|_| matches!(tag, b'Q' | b'F')) {
                            let status = if *lost_tx { b'E' } else { b'I' };
                            ctx.metrics.error_sent(Some(o.code));
                            if !*lost_tx {
                                *owed = None;
                            }
                            if !answer_errors(cw, &o, 1, status).await {
                                return Idle::End("client gone");
                            }
                        }
                        discard = len - have;
                        client.buf.clear();
                        continue;
                    }
                    if have >= WHOLE_MESSAGE {
                        // A large request: the pumps take it from here (a simple query streams).
                        return Idle::Request;
                    }
                    // A request is attached for only once it is all here (or large): a server
                    // connection is not held for a slow client's first bytes.
                    client
                        .buf
                        .reserve(len.min(WHOLE_MESSAGE).saturating_sub(have));
                }
                match tag {
                    _ if have < len && tag != b'X' => {}
                    b'X' if len > super::forward::MAX_TERMINATE => {
                        let msg = format!("invalid message length {}", len - 1);
                        ctx.metrics.error_sent(Some(sqlstate::PROTOCOL_VIOLATION));
                        write_fatal(cw, sqlstate::PROTOCOL_VIOLATION, &msg).await;
                        return Idle::End("protocol violation");
                    }
                    b'X' => return Idle::End("client terminated"),
                    // Left over from a COPY whose server is gone: PostgreSQL drops these too.
                    b'd' | b'c' | b'f' | b'H' if client.buf.len() >= len => {
                        client.buf.advance(len);
                        continue;
                    }
                    b'd' | b'c' | b'f' | b'H' => {}
                    b'P' if owed.is_none() && client.buf.len() >= len + 5 => {
                        if client.buf[len..len + 5] == [b'S', 0, 0, 0, 4]
                            && parse_offline(&client.buf[..len], &mut shared.prep().client, |h| {
                                ctx.known_statements.contains(&h)
                            })
                        {
                            client.buf.advance(len + 5);
                            let mut out = BytesMut::with_capacity(11);
                            out.extend_from_slice(&[b'1', 0, 0, 0, 4]);
                            build::ready_for_query(&mut out, b'I');
                            if send(cw, &out).await.is_err() {
                                return Idle::End("client gone");
                            }
                            continue;
                        }
                        return Idle::Request;
                    }
                    _ => {
                        let Some(o) = owed.clone() else {
                            return Idle::Request;
                        };
                        if client.buf.len() < len {
                            // Need the whole message to skip it.
                        } else {
                            let ends = if tag == b'Q' {
                                ends_transaction(&client.buf[5..len])
                            } else {
                                None
                            };
                            client.buf.advance(len);
                            if tag == b'Q' || tag == b'S' || tag == b'F' {
                                if ends != Some(false) {
                                    ctx.metrics.error_sent(Some(o.code));
                                }
                                tracing::debug!(tag = %(tag as char), ?ends, lost_tx = *lost_tx, "answering a request of a lost transaction");
                                let sent = match ends {
                                    // Truthful: the lost transaction is rolled back.
                                    Some(false) => {
                                        *owed = None;
                                        *lost_tx = false;
                                        let mut out = BytesMut::with_capacity(32);
                                        build::command_complete(&mut out, "ROLLBACK");
                                        build::ready_for_query(&mut out, b'I');
                                        send(cw, &out).await.is_ok()
                                    }
                                    // A COMMIT of a lost transaction fails, visibly.
                                    Some(true) => {
                                        *owed = None;
                                        *lost_tx = false;
                                        answer_errors(cw, &o, 1, b'I').await
                                    }
                                    None if *lost_tx => answer_errors(cw, &o, 1, b'E').await,
                                    None => {
                                        *owed = None;
                                        answer_errors(cw, &o, 1, b'I').await
                                    }
                                };
                                if !sent {
                                    return Idle::End("client gone");
                                }
                            }
                            continue;
                        }
                    }
                }
            }
            Ok(None) => {}
        }
        if ctx.shutdown.drain.is_cancelled() || ctx.shutdown.fast.is_cancelled() {
            ctx.metrics.error_sent(Some(sqlstate::ADMIN_SHUTDOWN));
            write_fatal(
                cw,
                sqlstate::ADMIN_SHUTDOWN,
                "terminating connection due to administrator command",
            )
            .await;
            return Idle::End("shutdown");
        }
        // Idle: hold no buffer; one is taken when the next request arrives.
        buffers::give(&mut client.buf);
        let woken = shared.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if let Some((code, message)) = shared.take_stop() {
            ctx.metrics.error_sent(Some(code));
            write_fatal(cw, code, &message).await;
            return Idle::End("ended by pgpivot (idle limit or KILL CLIENT)");
        }
        let buf = &mut client.buf;
        let next_bytes = async {
            if buf.capacity() - buf.len() < 128 {
                if buf.is_empty() {
                    cr.wait_readable().await?;
                }
                buffers::make_room(buf, 128, IDLE_READ_CHUNK);
            }
            cr.read_buf(buf).await
        };
        // (A fast shutdown always follows a drain: waiting for the drain covers both.)
        let read = tokio::select! {
            r = next_bytes => r,
            _ = ctx.shutdown.drain.cancelled() => continue,
            _ = &mut woken => continue,
        };
        match read {
            Ok(0) | Err(_) => return Idle::End("client left"),
            Ok(_) => shared.last_active.store(ctx.clock.now(), Ordering::Relaxed),
        }
    }
}

/// Whether a simple Query ends a transaction: Some(true) commits (COMMIT / END), Some(false)
/// rolls back (ROLLBACK / ABORT), None otherwise.
fn ends_transaction(body: &[u8]) -> Option<bool> {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    let t = text.trim_matches(|c: char| c.is_whitespace() || c == ';' || c == '\0');
    let first = t.split_whitespace().next().unwrap_or("");
    match first {
        "commit" | "end" => Some(true),
        "rollback" | "abort" if !t.contains(" to ") => Some(false),
        _ => None,
    }
}

/// What a session owes its client after losing a transaction with its server.
#[derive(Debug, Default)]
pub struct Debt {
    /// The error for the client's next request(s).
    pub owed: Option<Owed>,
    /// The error is for a transaction the client still thinks is open (aborted): every request
    /// gets it until the client ends that transaction.
    pub lost_tx: bool,
}

/// An error owed to the client: its transaction was lost with its server connection (or no
/// server could be had for it). Answered in place of the requests it was waiting on, and of
/// its next ones until it ends the transaction.
#[derive(Debug, Clone)]
pub struct Owed {
    pub code: &'static str,
    /// The server's own words when its FATAL said why (never altered), else pgpivot's.
    pub message: String,
    /// pgpivot's explanation, when the message is the server's.
    pub detail: Option<&'static str>,
}

impl Owed {
    pub fn new(code: &'static str, message: String) -> Self {
        Owed {
            code,
            message,
            detail: None,
        }
    }
}

/// Sends `n` × (ErrorResponse, ReadyForQuery with `status`). Returns false if the client is
/// gone.
/// (Boxed, as `write_fatal`: a rare path of a long-lived future.)
pub fn answer_errors<'a, W: AsyncWrite + Unpin>(
    cw: &'a mut W,
    owed: &'a Owed,
    n: u32,
    status: u8,
) -> std::pin::Pin<Box<impl std::future::Future<Output = bool> + 'a>> {
    Box::pin(answer_errors_now(cw, owed, n, status))
}

async fn answer_errors_now<W: AsyncWrite + Unpin>(
    cw: &mut W,
    owed: &Owed,
    n: u32,
    status: u8,
) -> bool {
    let mut out = BytesMut::with_capacity(256);
    for _ in 0..n {
        build::error_response(
            &mut out,
            &ErrorFields {
                severity: "ERROR",
                code: owed.code,
                message: &owed.message,
                detail: owed.detail,
                hint: Some(
                    "pgpivot moved this connection to the new primary; retry the transaction",
                ),
            },
        );
        build::ready_for_query(&mut out, status);
    }
    tokio::time::timeout(Duration::from_secs(5), send(cw, &out))
        .await
        .is_ok_and(|r| r.is_ok())
}
