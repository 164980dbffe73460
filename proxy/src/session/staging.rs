//! The synchronous half of the pumps: scanning what one side sent, the bookkeeping pooling
//! needs (requests in flight, transaction state, parameters, pinning, statement counts), and
//! staging what goes on to the other side. No awaits here, so the prepared-statement lock is
//! never held across one.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use pgpivot_protocol::frame::Scan;
use pgpivot_protocol::sqlstate;
use pgpivot_protocol::views::{self, ErrorView};

use super::buffers;
use super::forward::{ClientEnd, ClientSide, ServerEnd, ServerSide, MAX_TERMINATE};
use super::prepared;
use super::shared::{PrepState, Shared};
use super::sql::{self, Effect};
use super::streaming::{self, WHOLE_MESSAGE};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::topology::counters::{classify, NodeCounters};

fn client_interesting(tag: u8) -> bool {
    tag == b'X' || tag == b'Q' || prepared::is_statement_message(tag)
}

/// Why staging stopped.
pub(super) enum Stop {
    /// Everything complete was staged; read more.
    NeedInput,
    /// The client sent Terminate.
    Terminate,
    /// A command pgpivot answers itself is next in the buffer.
    Local,
}

/// Scans what the client sent and stages it (rewritten where prepared statements need it) in
/// `side.out`. Synchronous, so the prepared-statement lock is never held across an await.
/// Returns how many input bytes were consumed and why it stopped.
pub(super) fn stage_client_bytes(
    side: &mut ClientSide,
    shared: &Shared,
    max_message: usize,
    counters: Option<&NodeCounters>,
) -> Result<(usize, Stop), ClientEnd> {
    let mut pos = 0;
    let mut stop = Stop::NeedInput;
    side.out.clear();
    buffers::ensure(&mut side.out);
    let mut prep = shared.prep();
    loop {
        // Bytes of a message streaming through still to pass, before this scan.
        let streaming = side.scan.remaining();
        let PrepState { plan, .. } = &mut *prep;
        let scan = side.scan.scan(&side.buf[pos..], |tag| {
            if client_interesting(tag) {
                return true;
            }
            match tag {
                b'S' => {
                    shared.request_sent();
                    shared.syncs_since_execute.fetch_add(1, Ordering::Relaxed);
                    shared.unsynced.store(false, Ordering::Relaxed);
                }
                b'F' => {
                    shared.request_sent();
                }
                b'E' => {
                    shared.tally.query();
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
                let mut from = pos;
                if side.stream.is_some() {
                    from += streaming::passing(side, shared, pos, n.min(streaming), streaming);
                }
                side.out.extend_from_slice(&side.buf[from..pos + n]);
                pos += n;
            }
            Ok(Scan::Message { tag, len }) => {
                if tag != b'X'
                    && !shared.unsynced.load(Ordering::Relaxed)
                    && pgpivot_admin::Responder::is_local(
                        prep.local.as_deref(),
                        tag,
                        &side.buf[pos + 5..pos + len],
                    )
                {
                    // Answered by pgpivot once what precedes it has been answered.
                    if pos == 0 {
                        shared.yield_wanted.store(true, Ordering::Relaxed);
                        shared.wake.notify_one();
                        return Err(ClientEnd::Yield);
                    }
                    stop = Stop::Local;
                    break;
                }
                side.scan.consume(len);
                let frame = &side.buf[pos..pos + len];
                pos += len;
                if tag == b'X' {
                    stop = Stop::Terminate;
                    break;
                }
                let mut resets = Vec::new();
                if tag == b'Q' {
                    shared.syncs_since_execute.store(0, Ordering::Relaxed);
                    shared.tally.query();
                    shared.request_sent();
                    shared.unsynced.store(false, Ordering::Relaxed);
                    let text = views::query_text(&frame[5..]);
                    count_statement(text, counters);
                    let (drops, resets_params) = text_effects(text, shared);
                    resets = drops;
                    if resets_params {
                        shared.note_params_reset();
                    }
                } else {
                    shared.unsynced.store(true, Ordering::Relaxed);
                    if tag == b'P' {
                        let text = parse_query_text(&frame[5..]);
                        count_statement(text, counters);
                        let (drops, resets_params) = text_effects(text, shared);
                        resets = drops;
                        note_param_resetter(&mut prep, &frame[5..], resets_params, shared);
                    } else if tag == b'B' {
                        bind_of_param_resetter(&prep, &frame[5..], shared);
                    }
                }
                let PrepState {
                    plan,
                    client,
                    server,
                    ..
                } = &mut *prep;
                let r = prepared::rewrite_with_resets(
                    tag,
                    frame,
                    resets,
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
                let tag = side.buf.get(pos).copied();
                let limit = match tag {
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
                let large = matches!(tag, Some(b'Q' | b'B')) && wanted > WHOLE_MESSAGE;
                if large && have >= WHOLE_MESSAGE {
                    if let Some(head) =
                        streaming::start(side, shared, &mut prep, pos, wanted, counters)?
                    {
                        pos += head;
                        continue;
                    }
                }
                let hold = if large && have < WHOLE_MESSAGE {
                    WHOLE_MESSAGE
                } else {
                    wanted
                };
                side.buf.reserve(hold.saturating_sub(have));
                break;
            }
            Err(e) => {
                shared.request_stop(e.sqlstate(), e.to_string());
                return Err(ClientEnd::Handover);
            }
        }
    }
    Ok((pos, stop))
}

pub(super) fn count_statement(text: Option<&[u8]>, counters: Option<&NodeCounters>) {
    if let (Some(text), Some(c)) = (text, counters) {
        c.statement(classify(text));
    }
}

/// Session-bound statements pin the client, schema changes invalidate shared plans; returns
/// the statements that drop prepared statements, for `prepared` (which applies them as sent and
/// has their CommandComplete confirm them), and whether the text resets parameters.
fn text_effects(text: Option<&[u8]>, shared: &Shared) -> (Vec<sql::Reset>, bool) {
    let Some(text) = text else {
        return (Vec::new(), false);
    };
    if sql::is_plain(text) {
        return (Vec::new(), false);
    }
    let resets_params = pin_all(sql::effects(text), shared);
    (sql::resets(text), resets_params)
}

/// Pins for session-bound statements, a new plan epoch for a schema change; returns whether
/// parameters are reset (`RESET`, `DISCARD ALL`, `SET … TO DEFAULT`).
pub(super) fn pin_all(effects: Vec<Effect>, shared: &Shared) -> bool {
    let mut resets_params = false;
    for e in effects {
        match e {
            Effect::Pin(why) => shared.pin(why),
            Effect::ResetParams | Effect::DiscardAll => resets_params = true,
            // Noted as sent: a spurious early bump costs only preparing again.
            Effect::SchemaChange => prepared::plans_invalidated(),
            _ => {}
        }
    }
    resets_params
}

/// A Parse whose text resets parameters: the unnamed statement runs in this batch (noted now);
/// a named one is noted when a portal is bound to it (see [`bind_of_param_resetter`]).
fn note_param_resetter(prep: &mut PrepState, body: &[u8], resets: bool, shared: &Shared) {
    let Some(name) = body.iter().position(|&b| b == 0).map(|n| &body[..n]) else {
        return;
    };
    if name.is_empty() {
        if resets {
            shared.note_params_reset();
        }
    } else if resets {
        prep.param_resetters
            .get_or_insert_with(Default::default)
            .insert(name.to_vec());
    } else if let Some(set) = prep.param_resetters.as_mut() {
        set.remove(name);
    }
}

/// A Bind of a statement that resets parameters: its Execute will.
pub(super) fn bind_of_param_resetter(prep: &PrepState, body: &[u8], shared: &Shared) {
    let Some(set) = prep.param_resetters.as_ref() else {
        return;
    };
    let mut parts = body.splitn(3, |&b| b == 0);
    let (_portal, statement) = (parts.next(), parts.next());
    if statement.is_some_and(|s| set.contains(s)) {
        shared.note_params_reset();
    }
}

/// The query text of a Parse body: name\0 query\0 ...
fn parse_query_text(body: &[u8]) -> Option<&[u8]> {
    let name_end = body.iter().position(|&b| b == 0)?;
    let rest = body.get(name_end + 1..)?;
    let q_end = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..q_end])
}

/// Scans what the server sent and stages what the client must see in `side.out` (the plan may
/// rewrite replies). Synchronous, so the prepared-statement lock is never held across an await.
/// Returns how many input bytes were consumed.
pub(super) fn stage_server_bytes(
    side: &mut ServerSide,
    shared: &Shared,
    server_params: &mut HashMap<String, String>,
    client_params: &mut super::params::ClientParams,
    server_fatal: &mut bool,
    counters: Option<&NodeCounters>,
    metrics: &Metrics,
) -> Result<usize, ServerEnd> {
    let mut pos = 0;
    side.out.clear();
    buffers::ensure(&mut side.out);
    let mut prep = shared.prep();
    let own_pid = side.own_pid;
    loop {
        let PrepState {
            plan,
            client: cst,
            server: sst,
            ..
        } = &mut *prep;
        let scan = side.scan.scan(&side.buf[pos..], |t| {
            matches!(t, b'Z' | b'E' | b'S' | b'C')
                || (t == b'A' && own_pid.is_some())
                || plan.wants(t)
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
                if tag == b'E' {
                    if let Some(c) = counters {
                        c.error(ErrorView::new(&frame[5..]).severity().unwrap_or("ERROR"));
                    }
                }
                let forward = observe(
                    tag,
                    &frame[5..],
                    shared,
                    server_params,
                    client_params,
                    server_fatal,
                );
                if tag == b'E' && !forward {
                    *shared
                        .server_fatal
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(Bytes::copy_from_slice(frame));
                }
                // A held-back FATAL of a dying server is not part of the client stream.
                tracing::trace!(tag = %(tag as char), len, "server message");
                match tag {
                    b'Z' => shared.tally.ready(
                        frame.get(5).copied().unwrap_or(b'I'),
                        shared.pending(),
                        side.pool.as_deref().map(Pool::stats),
                        metrics,
                    ),
                    b'E' if forward => metrics.error_sent(ErrorView::new(&frame[5..]).sqlstate()),
                    _ => {}
                }
                let at = side.out.len();
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
                if let (b'A', Some((server, client))) = (tag, own_pid) {
                    own_notification(&mut side.out[at..], server, client);
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

/// A NotificationResponse just staged (`staged`) whose sender is the client's own server
/// connection (`server`) names the pid the client was told (`client`) instead.
fn own_notification(staged: &mut [u8], server: i32, client: i32) {
    if staged.first() == Some(&b'A') && staged.get(5..9) == Some(&server.to_be_bytes()[..]) {
        staged[5..9].copy_from_slice(&client.to_be_bytes());
    }
}

/// Bookkeeping for the server messages the pump reads: transaction state, session parameters,
/// FATALs. Returns whether the message goes on to the client.
fn observe(
    tag: u8,
    body: &[u8],
    shared: &Shared,
    server_params: &mut HashMap<String, String>,
    client_params: &mut super::params::ClientParams,
    server_fatal: &mut bool,
) -> bool {
    match tag {
        b'Z' => {
            shared.ready_sent();
            let _ = shared
                .pending
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                    Some(p.saturating_sub(1))
                });
            shared
                .idle
                .store(body.first() == Some(&b'I'), Ordering::Relaxed);
            if let Some(&status) = body.first() {
                shared.status.store(status, Ordering::Relaxed);
            }
        }
        b'E' => {
            let v = ErrorView::new(body);
            if v.sqlstate() == Some("0A000")
                && v.message() == Some("cached plan must not change result type")
            {
                prepared::plans_invalidated();
            }
            if matches!(v.severity(), Some("FATAL" | "PANIC")) {
                if shared.pinned().is_some() {
                    // Its session state dies with this connection: the client must know.
                    *server_fatal = true;
                    return true;
                }
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
