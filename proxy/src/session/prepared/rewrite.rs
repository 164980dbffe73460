//! The client→server half: one whole client message in, the bytes for the server out, and the
//! [`ResponsePlan`] told what to expect back. Transaction pooling's renaming is here; session
//! pooling's pass-through is in `pass_through.rs`, SQL that drops statements in `resets.rs`.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgpivot_protocol::build::{self, ErrorFields};

use super::special::{ServerKey, Special};
use super::{
    cstr, pass_through, put_frame, resets, ClientStatements, Naming, PrepError, ResponsePlan,
    ServerStatements, StatementDef, GLOBAL_PREFIX, MAX_STATEMENTS_PER_SERVER, PROBE_NAME,
};
use crate::session::sql::Reset;

/// The client messages that name a statement (Parse, Bind, Describe, Close): the caller's
/// scanner must hand these over whole. Everything else is forwarded by the caller untouched.
#[inline]
pub fn is_statement_message(tag: u8) -> bool {
    matches!(tag, b'P' | b'B' | b'D' | b'C')
}

/// What [`rewrite_client_message`] did. In every case `out` holds what to send to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Sent on, renamed if it named a statement, maybe preceded by a Parse for a statement this
    /// server connection lacks.
    Forwarded,
    /// Answered from the cache (Parse of a statement the server has, Close of a statement): a
    /// no-op Close probe went instead, and its reply becomes the client's answer.
    AnsweredLocally,
    /// PostgreSQL would refuse this message. A probe that fails on the server went instead, so
    /// the server skips to Sync (and aborts the transaction) exactly as PostgreSQL would, and the
    /// client gets this error in the probe's place. For logging only.
    Rejected(PrepError),
}

/// Handles ONE complete client message (`frame` = tag + length + body), any type.
///
/// Statement errors pgpivot must report itself — 42P05 and 26000 where the server knows the
/// statement under another name, 54000 past the per-client cap, and 08P01 for a malformed body
/// it has to read — are not returned as `Err`: they come back as [`Rewrite::Rejected`] and reach
/// the client through the response stream, in place, followed by the usual skip to Sync. `Err`
/// ([`PrepError::BadFrame`]) means `frame` is not one frame of type `tag`: a caller bug; end
/// the session.
pub fn rewrite_client_message(
    tag: u8,
    frame: &[u8],
    client: &mut ClientStatements,
    server: &mut ServerStatements,
    plan: &mut ResponsePlan,
    out: &mut BytesMut,
) -> Result<Rewrite, PrepError> {
    rewrite_with_resets(tag, frame, Vec::new(), client, server, plan, out)
}

/// [`rewrite_client_message`] for a Query or Parse whose text drops prepared statements
/// (`resets`, from [`crate::session::sql::resets`]; empty for any other message).
pub fn rewrite_with_resets(
    tag: u8,
    frame: &[u8],
    resets: Vec<Reset>,
    client: &mut ClientStatements,
    server: &mut ServerStatements,
    plan: &mut ResponsePlan,
    out: &mut BytesMut,
) -> Result<Rewrite, PrepError> {
    let body = client_body(tag, frame)?;
    match tag {
        b'Q' if resets.is_empty() => {
            client.forget_unnamed_watch();
            Ok(forward(tag, frame, plan, out))
        }
        b'Q' => {
            resets::query(frame, resets, client, server, plan, out)?;
            Ok(Rewrite::Forwarded)
        }
        b'P' if resets.is_empty() => {
            if let Some((name, _)) = cstr(body) {
                client.forget_watch(name);
            }
            dispatch(tag, frame, body, client, server, plan, out)
        }
        b'P' => {
            let name = cstr(body).map(|(n, _)| n.to_vec()).unwrap_or_default();
            let replaced = resets::parse(frame, &resets, client, server, plan, out);
            let r = match &replaced {
                Some(f) => dispatch(tag, f, client_body(tag, f)?, client, server, plan, out)?,
                None => dispatch(tag, frame, body, client, server, plan, out)?,
            };
            if !matches!(r, Rewrite::Rejected(_)) {
                client.set_watch(&name, resets);
            }
            Ok(r)
        }
        _ => dispatch(tag, frame, body, client, server, plan, out),
    }
}

/// A simple query too large to hold, streaming to the server: what [`rewrite_with_resets`]
/// does for a Query without drops, minus the bytes (the caller passes them on). Drops of
/// prepared statements inside such a query are not followed (its text is never held whole).
pub fn query_streamed(client: &mut ClientStatements, plan: &mut ResponsePlan) {
    client.forget_unnamed_watch();
    plan.on_client_message(b'Q');
}

fn dispatch(
    tag: u8,
    frame: &[u8],
    body: &[u8],
    client: &mut ClientStatements,
    server: &mut ServerStatements,
    plan: &mut ResponsePlan,
    out: &mut BytesMut,
) -> Result<Rewrite, PrepError> {
    // Binding a statement whose text drops statements: its Execute will. Applied once the Bind
    // itself is rewritten (it still needs the statement; a `DISCARD ALL` drops its own).
    let drops = if tag == b'B' && client.has_watches() {
        let stmt = cstr(body).and_then(|(_, rest)| cstr(rest)).map(|(s, _)| s);
        stmt.and_then(|s| client.watch_for(s))
    } else {
        None
    };
    let r = match client.naming() {
        Naming::PassThrough => pass_through::rewrite(tag, frame, body, client, server, plan, out),
        Naming::Global => {
            if matches!(tag, b'P' | b'B' | b'D') && server.len() > MAX_STATEMENTS_PER_SERVER {
                evict(client, server, plan, out);
            }
            rewrite(tag, frame, body, client, server, plan, out)
        }
    };
    match r {
        // Checked before anything was changed or written.
        Err(e) if !e.is_fatal() => Ok(reject(e, client, server, plan, out)),
        Ok(Rewrite::Forwarded) => {
            if let Some(drops) = drops {
                resets::bind(&drops, client, server, plan);
            }
            Ok(Rewrite::Forwarded)
        }
        other => other,
    }
}

/// Closes the server's least recently used global statements past the cap, ahead of the
/// client's message. Only between transactions with nothing in flight: no portal of the
/// client's can depend on them then.
fn evict(
    client: &mut ClientStatements,
    server: &mut ServerStatements,
    plan: &mut ResponsePlan,
    out: &mut BytesMut,
) {
    if !plan.is_idle() {
        return;
    }
    for hash in server.evict_over(MAX_STATEMENTS_PER_SERVER) {
        put_named(out, b'C', format!("{GLOBAL_PREFIX}{hash:016x}").as_bytes());
        plan.push_special(Special::Evict { hash }, client, server);
    }
}

fn rewrite(
    tag: u8,
    frame: &[u8],
    body: &[u8],
    client: &mut ClientStatements,
    server: &mut ServerStatements,
    plan: &mut ResponsePlan,
    out: &mut BytesMut,
) -> Result<Rewrite, PrepError> {
    match tag {
        b'P' => parse(frame, body, client, server, plan, out),
        b'B' => {
            let malformed = PrepError::Malformed("Bind");
            let (portal, rest) = cstr(body).ok_or(malformed.clone())?;
            let (name, rest) = cstr(rest).ok_or(malformed)?;
            let Some(def) = resolve(name, client, server, plan, out)? else {
                return Ok(forward(tag, frame, plan, out));
            };
            put_frame(
                out,
                b'B',
                &[portal, b"\0", def.global_name.as_bytes(), b"\0", rest],
            )
            .map_err(|_| PrepError::BadFrame)?;
            plan.push_unit();
            Ok(Rewrite::Forwarded)
        }
        b'D' | b'C' => {
            let Some((b'S', name)) = target(body) else {
                return Ok(forward(tag, frame, plan, out));
            };
            let what = if tag == b'D' { "Describe" } else { "Close" };
            let name = match cstr(name) {
                Some((name, [])) => name,
                _ => return Err(PrepError::Malformed(what)),
            };
            if name.is_empty() {
                return Ok(forward(tag, frame, plan, out));
            }
            if tag == b'C' {
                // Kept on the server for other clients (and this one, if it parses it again).
                let removed = client.remove(name);
                put_probe(out, b'C');
                let closed = Special::Closed {
                    name: name.to_vec(),
                    removed,
                };
                plan.push_special(closed, client, server);
                return Ok(Rewrite::AnsweredLocally);
            }
            let Some(def) = resolve(name, client, server, plan, out)? else {
                return Ok(forward(tag, frame, plan, out));
            };
            put_named(out, b'D', def.global_name.as_bytes());
            plan.push_unit();
            Ok(Rewrite::Forwarded)
        }
        _ => Ok(forward(tag, frame, plan, out)),
    }
}

fn parse(
    frame: &[u8],
    body: &[u8],
    client: &mut ClientStatements,
    server: &mut ServerStatements,
    plan: &mut ResponsePlan,
    out: &mut BytesMut,
) -> Result<Rewrite, PrepError> {
    let malformed = PrepError::Malformed("Parse");
    let (name, rest) = cstr(body).ok_or(malformed.clone())?;
    if name.is_empty() {
        // The unnamed statement lives and dies within one batch: the server's business.
        return Ok(forward(b'P', frame, plan, out));
    }
    let (query, params) = cstr(rest).ok_or(malformed.clone())?;
    let (count, oids) = params.split_first_chunk::<2>().ok_or(malformed.clone())?;
    if oids.len() != 4 * usize::from(u16::from_be_bytes(*count)) {
        return Err(malformed);
    }
    if client.get(name).is_some() {
        let name = String::from_utf8_lossy(name).into_owned();
        return Err(PrepError::AlreadyExists(name));
    }
    if client.len() >= client.limit() {
        return Err(PrepError::TooMany(client.limit()));
    }
    let def = Arc::new(StatementDef::new(query, params)?);
    client.insert(name, Arc::clone(&def));
    let name = name.to_vec();
    if server.touch(def.hash) {
        put_probe(out, b'C');
        plan.push_special(Special::ParseCached { name, def }, client, server);
        Ok(Rewrite::AnsweredLocally)
    } else {
        server.insert(def.hash);
        out.extend_from_slice(&def.parse_frame);
        plan.push_special(Special::ParseSent { name, def }, client, server);
        Ok(Rewrite::Forwarded)
    }
}

/// The client's statement `name`, prepared on this server connection first if it lacks it.
/// `None`: the unnamed statement, or a name the client has not prepared — the caller forwards
/// the message as it is, and the server answers as PostgreSQL does (its error names the
/// client's statement; a statement the client made with SQL `PREPARE` is found). A name in
/// pgpivot's own namespace is refused here instead: it would reach another client's statement.
fn resolve(
    name: &[u8],
    client: &mut ClientStatements,
    server: &mut ServerStatements,
    plan: &mut ResponsePlan,
    out: &mut BytesMut,
) -> Result<Option<Arc<StatementDef>>, PrepError> {
    if name.is_empty() {
        return Ok(None);
    }
    let Some(def) = client.get(name).map(Arc::clone) else {
        if name.starts_with(GLOBAL_PREFIX.as_bytes()) {
            return Err(PrepError::DoesNotExist(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
        return Ok(None);
    };
    if !server.touch(def.hash) {
        server.insert(def.hash);
        out.extend_from_slice(&def.parse_frame);
        let key = Some(ServerKey::Global(def.hash));
        plan.push_special(Special::Prepare { key }, client, server);
    }
    Ok(Some(def))
}

pub(super) fn forward(
    tag: u8,
    frame: &[u8],
    plan: &mut ResponsePlan,
    out: &mut BytesMut,
) -> Rewrite {
    out.extend_from_slice(frame);
    plan.on_client_message(tag);
    Rewrite::Forwarded
}

/// Sends a Describe probe (always 26000 on the server) and has its error replaced by `err`.
fn reject(
    err: PrepError,
    client: &mut ClientStatements,
    server: &mut ServerStatements,
    plan: &mut ResponsePlan,
    out: &mut BytesMut,
) -> Rewrite {
    let mut error = BytesMut::new();
    build::error_response(
        &mut error,
        &ErrorFields {
            severity: "ERROR",
            code: err.sqlstate(),
            message: &err.to_string(),
            detail: None,
            hint: None,
        },
    );
    put_probe(out, b'D');
    let error = error.freeze();
    plan.push_special(Special::Reject { error }, client, server);
    Rewrite::Rejected(err)
}

/// `tag` 'S' + [`PROBE_NAME`]: Close of it is a no-op, Describe of it fails with 26000.
fn put_probe(out: &mut BytesMut, tag: u8) {
    put_named(out, tag, PROBE_NAME);
}

/// A Describe/Close of statement `name` (pgpivot's own names: a few dozen bytes).
fn put_named(out: &mut BytesMut, tag: u8, name: &[u8]) {
    out.reserve(name.len() + 7);
    out.put_u8(tag);
    out.put_i32(name.len() as i32 + 6);
    out.put_u8(b'S');
    out.put_slice(name);
    out.put_u8(0);
}

/// Describe/Close body: (kind byte, rest).
pub(super) fn target(body: &[u8]) -> Option<(u8, &[u8])> {
    body.split_first().map(|(&k, rest)| (k, rest))
}

/// Checks the frame's tag and length field against its size; returns the body. Frames within
/// a few bytes of the `i32` limit are refused too, so renaming can never overflow the length.
fn client_body(tag: u8, frame: &[u8]) -> Result<&[u8], PrepError> {
    let (head, body) = frame.split_first_chunk::<5>().ok_or(PrepError::BadFrame)?;
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if head[0] != tag || usize::try_from(len).ok() != Some(body.len() + 4) || len > i32::MAX - 64 {
        return Err(PrepError::BadFrame);
    }
    Ok(body)
}

#[cfg(test)]
#[path = "rewrite_tests.rs"]
pub(super) mod tests;
