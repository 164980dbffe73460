//! The client→server half: one whole client message in, the bytes for the server out, and the
//! [`ResponsePlan`] told what to expect back.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgpivot_protocol::build::{self, ErrorFields};

use super::responses::Special;
use super::{
    cstr, put_frame, ClientStatements, PrepError, ResponsePlan, ServerStatements, StatementDef,
    PROBE_NAME,
};

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
/// Statement errors PostgreSQL would report — 42P05, 26000, 54000, and 08P01 for a malformed
/// body — are not returned as `Err`: they come back as [`Rewrite::Rejected`] and reach the
/// client through the response stream, in place, followed by the usual skip to Sync. `Err`
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
    let body = client_body(tag, frame)?;
    match rewrite(tag, frame, body, client, server, plan, out) {
        // Checked before anything was changed or written.
        Err(e) if !e.is_fatal() => Ok(reject(e, client, server, plan, out)),
        other => other,
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
            if name.is_empty() {
                return Ok(forward(tag, frame, plan, out));
            }
            let def = resolve(name, client, server, plan, out)?;
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
            let def = resolve(name, client, server, plan, out)?;
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
    if server.contains(def.hash) {
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

/// Prepares `def` on this server connection ahead of the client's Bind/Describe; its
/// ParseComplete is not the client's and is swallowed.
/// The client's statement `name`, prepared on this server connection first if it lacks it.
fn resolve(
    name: &[u8],
    client: &mut ClientStatements,
    server: &mut ServerStatements,
    plan: &mut ResponsePlan,
    out: &mut BytesMut,
) -> Result<Arc<StatementDef>, PrepError> {
    let def = Arc::clone(client.get(name).ok_or_else(|| does_not_exist(name))?);
    if !server.contains(def.hash) {
        prepare(&def, client, server, plan, out);
    }
    Ok(def)
}

fn prepare(
    def: &StatementDef,
    client: &mut ClientStatements,
    server: &mut ServerStatements,
    plan: &mut ResponsePlan,
    out: &mut BytesMut,
) {
    server.insert(def.hash);
    out.extend_from_slice(&def.parse_frame);
    plan.push_special(Special::Prepare { hash: def.hash }, client, server);
}

fn forward(tag: u8, frame: &[u8], plan: &mut ResponsePlan, out: &mut BytesMut) -> Rewrite {
    out.extend_from_slice(frame);
    plan.on_client_message(tag);
    Rewrite::Forwarded
}

fn does_not_exist(name: &[u8]) -> PrepError {
    PrepError::DoesNotExist(String::from_utf8_lossy(name).into_owned())
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

/// A Describe/Close of statement `name`.
fn put_named(out: &mut BytesMut, tag: u8, name: &[u8]) {
    out.reserve(name.len() + 7);
    out.put_u8(tag);
    // Names here are pgpivot's own, a few dozen bytes: no overflow.
    out.put_i32(name.len() as i32 + 6);
    out.put_u8(b'S');
    out.put_slice(name);
    out.put_u8(0);
}

/// Describe/Close body: (kind byte, rest).
fn target(body: &[u8]) -> Option<(u8, &[u8])> {
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
pub(super) mod tests {
    use super::*;

    pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// Parse without parameter types.
    pub fn parse(name: &str, sql: &str) -> Vec<u8> {
        let mut b = Vec::new();
        for s in [name, sql] {
            b.extend_from_slice(s.as_bytes());
            b.push(0);
        }
        b.extend_from_slice(&[0, 0]);
        msg(b'P', &b)
    }

    /// Bind with text parameters and no result formats, built by postgres-protocol.
    pub fn bind(portal: &str, stmt: &str, params: &[&[u8]]) -> Vec<u8> {
        let mut b = BytesMut::new();
        postgres_protocol::message::frontend::bind(
            portal,
            stmt,
            [0i16],
            params.iter(),
            |p, buf| {
                buf.put_slice(p);
                Ok::<_, Box<dyn std::error::Error + Sync + Send>>(postgres_protocol::IsNull::No)
            },
            [1i16],
            &mut b,
        )
        .map_err(|_| ())
        .unwrap();
        b.to_vec()
    }

    pub fn execute() -> Vec<u8> {
        msg(b'E', b"\0\0\0\0\0")
    }

    pub fn sync() -> Vec<u8> {
        msg(b'S', b"")
    }

    pub fn describe_s(name: &str) -> Vec<u8> {
        let mut b = vec![b'S'];
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        msg(b'D', &b)
    }

    fn run(
        frame: &[u8],
        client: &mut ClientStatements,
        server: &mut ServerStatements,
        plan: &mut ResponsePlan,
    ) -> (Result<Rewrite, PrepError>, Vec<u8>) {
        let mut out = BytesMut::new();
        let tag = frame.first().copied().unwrap_or(b'P');
        let r = rewrite_client_message(tag, frame, client, server, plan, &mut out);
        (r, out.to_vec())
    }

    /// Splits a Bind frame into (length field, portal, statement, rest of body).
    fn split_bind(f: &[u8]) -> (usize, &[u8], &[u8], &[u8]) {
        assert_eq!(f[0], b'B');
        let len = i32::from_be_bytes(f[1..5].try_into().unwrap()) as usize;
        let (portal, rest) = cstr(&f[5..]).unwrap();
        let (stmt, rest) = cstr(rest).unwrap();
        (len, portal, stmt, rest)
    }

    #[test]
    fn rewritten_bind_is_byte_exact() {
        let (mut c, mut s, mut p) = (
            ClientStatements::new(),
            ServerStatements::new(),
            ResponsePlan::new(),
        );
        let (r, out) = run(&parse("stmt_1", "SELECT $1"), &mut c, &mut s, &mut p);
        assert_eq!((r, out[0]), (Ok(Rewrite::Forwarded), b'P'));
        let g = c.get(b"stmt_1").unwrap().global_name.clone();
        let big = vec![7u8; 100_000];
        let params: [&[u8]; 3] = [b"1", b"", &big];
        for portal in ["", "portal_with_a_long_name"] {
            let original = bind(portal, "stmt_1", &params);
            let (r, out) = run(&original, &mut c, &mut s, &mut p);
            assert_eq!(r, Ok(Rewrite::Forwarded));
            let (len, po, st, rest) = split_bind(&out);
            assert_eq!(len + 1, out.len(), "length field");
            assert_eq!((po, st), (portal.as_bytes(), g.as_bytes()));
            let (_, po0, st0, rest0) = split_bind(&original);
            assert_eq!((po0, st0, rest0), (portal.as_bytes(), &b"stmt_1"[..], rest));
            // Parsing the renamed frame with the original name restored gives the original.
            assert_eq!(bind(portal, &g, &params), out);
        }
        // The unnamed statement is passed as is.
        let unnamed = bind("", "", &params);
        let (r, out) = run(&unnamed, &mut c, &mut s, &mut p);
        assert_eq!((r, out), (Ok(Rewrite::Forwarded), unnamed));
    }

    #[test]
    fn statement_errors_become_probes() {
        let (mut c, mut s, mut p) = (
            ClientStatements::with_limit(1),
            ServerStatements::new(),
            ResponsePlan::new(),
        );
        let probe = |tag: u8| {
            let mut b = BytesMut::new();
            put_probe(&mut b, tag);
            b.to_vec()
        };
        let (r, out) = run(&bind("", "nope", &[]), &mut c, &mut s, &mut p);
        assert_eq!(
            r,
            Ok(Rewrite::Rejected(PrepError::DoesNotExist("nope".into())))
        );
        assert_eq!(out, probe(b'D'));
        let (r, out) = run(&describe_s("nope"), &mut c, &mut s, &mut p);
        assert!(matches!(
            r,
            Ok(Rewrite::Rejected(PrepError::DoesNotExist(_)))
        ));
        assert_eq!(out, probe(b'D'));
        run(&parse("a", "SELECT 1"), &mut c, &mut s, &mut p)
            .0
            .unwrap();
        let (r, _) = run(&parse("a", "SELECT 2"), &mut c, &mut s, &mut p);
        assert_eq!(
            r,
            Ok(Rewrite::Rejected(PrepError::AlreadyExists("a".into())))
        );
        let (r, out) = run(&parse("b", "SELECT 2"), &mut c, &mut s, &mut p);
        assert_eq!(r, Ok(Rewrite::Rejected(PrepError::TooMany(1))));
        assert_eq!(out, probe(b'D'));
        assert_eq!(c.len(), 1);
        // Close of an unknown name is fine in PostgreSQL.
        let (r, out) = run(&msg(b'C', b"Snope\0"), &mut c, &mut s, &mut p);
        assert_eq!((r, out), (Ok(Rewrite::AnsweredLocally), probe(b'C')));
    }

    #[test]
    fn other_messages_pass_untouched() {
        let (mut c, mut s, mut p) = (
            ClientStatements::new(),
            ServerStatements::new(),
            ResponsePlan::new(),
        );
        for f in [
            execute(),
            sync(),
            msg(b'H', b""),
            msg(b'Q', b"SELECT 1\0"),
            msg(b'd', b"1\t2\n"),
            msg(b'D', b"Pportal\0"),
            msg(b'D', b"S\0"),
            msg(b'C', b"Pportal\0"),
            msg(b'C', b"S\0"),
            parse("", "SELECT 1"),
            // Unknown Describe kind: the server reports it, as PostgreSQL does.
            msg(b'D', b"Xwhat\0"),
        ] {
            let (r, out) = run(&f, &mut c, &mut s, &mut p);
            assert_eq!((r, out), (Ok(Rewrite::Forwarded), f));
        }
        assert!(p.is_empty());
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let (mut c, mut s, mut p) = (
            ClientStatements::new(),
            ServerStatements::new(),
            ResponsePlan::new(),
        );
        let mut probe = BytesMut::new();
        put_probe(&mut probe, b'D');
        let mut bad_count = parse("s", "SELECT 1");
        let n = bad_count.len();
        bad_count[n - 1] = 1; // claims one parameter type, carries none
                              // A malformed body is an ordinary ERROR 08P01 in PostgreSQL: rejected in the stream.
        let bodies: Vec<Vec<u8>> = vec![
            msg(b'P', b"s"),
            msg(b'P', b"s\0SELECT 1"),
            msg(b'P', b"s\0SELECT 1\0\0"),
            msg(b'P', b"s\0SELECT 1\0\0\0\0"),
            bad_count,
            msg(b'B', b"portal"),
            msg(b'B', b"\0stmt"),
            msg(b'D', b"Ss"),
            msg(b'D', b"Ss\0extra"),
            msg(b'C', b"Ss\0\0"),
        ];
        for f in bodies {
            let (r, out) = run(&f, &mut c, &mut s, &mut p);
            assert!(
                matches!(&r, Ok(Rewrite::Rejected(e)) if e.sqlstate() == "08P01" && !e.is_fatal()),
                "{f:?}: {r:?}"
            );
            assert_eq!(out, probe, "nothing of it reaches the server");
        }
        assert!(c.is_empty() && s.is_empty());
        // The client gets the 08P01 error in place of the probe's 26000.
        let mut server_error = BytesMut::new();
        build::error_response(
            &mut server_error,
            &ErrorFields {
                severity: "ERROR",
                code: "26000",
                message: "prepared statement \"pgpivot_none\" does not exist",
                detail: None,
                hint: None,
            },
        );
        let mut got = BytesMut::new();
        p.on_server_message(b'E', &server_error, &mut got, &mut c, &mut s)
            .unwrap();
        let e = pgpivot_protocol::views::ErrorView::new(&got[5..]);
        assert_eq!(e.sqlstate(), Some("08P01"));
        assert_eq!(e.message(), Some("invalid Parse message format"));

        // A broken frame is a caller bug: fatal, and nothing is written or recorded.
        let mut wrong_len = bind("", "s", &[]);
        wrong_len[4] += 1;
        let frames: Vec<Vec<u8>> = vec![
            vec![],
            vec![b'P', 0, 0, 0],
            wrong_len,
            vec![b'B', 0xff, 0xff, 0xff, 0xff],
            vec![b'B', 0, 0, 0, 3],
        ];
        let mut p = ResponsePlan::new();
        for f in frames {
            let (r, out) = run(&f, &mut c, &mut s, &mut p);
            assert!(
                matches!(&r, Err(e) if e.is_fatal() && e.sqlstate() == "08P01"),
                "{f:?}: {r:?}"
            );
            assert!(out.is_empty());
        }
        // A frame of another type than announced.
        let mut out = BytesMut::new();
        let f = sync();
        let r = rewrite_client_message(b'B', &f, &mut c, &mut s, &mut p, &mut out);
        assert_eq!(r, Err(PrepError::BadFrame));
        assert!(c.is_empty() && s.is_empty() && out.is_empty() && p.is_settled());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut c, mut s, mut p) = (
            ClientStatements::new(),
            ServerStatements::new(),
            ResponsePlan::new(),
        );
        for i in 0..20_000 {
            let tag = [b'P', b'B', b'D', b'C'][i % 4];
            let len = (next() % 24) as usize;
            let body: Vec<u8> = (0..len)
                .map(|_| match next() % 4 {
                    0 => 0,
                    1 => b'S',
                    _ => (next() % 8) as u8 + b'a',
                })
                .collect();
            let frame = msg(tag, &body);
            let mut out = BytesMut::new();
            if rewrite_client_message(tag, &frame, &mut c, &mut s, &mut p, &mut out).is_ok() {
                // Whatever was produced is a sequence of exact frames.
                let mut rest = &out[..];
                while !rest.is_empty() {
                    let len = i32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
                    rest = &rest[len + 1..];
                }
            }
            if i % 64 == 0 {
                p.reset();
                s.clear();
                c.clear();
            }
        }
    }
}
