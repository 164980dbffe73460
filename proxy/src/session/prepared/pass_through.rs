//! Session pooling: the server connection is the client's, so its statement names go to the
//! server unchanged and the server judges every message itself (its errors name the client's
//! statements in its own words). pgpivot only keeps the client's statements, so that a
//! connection that lacks one — the new primary's, after a transparent failover — gets it
//! prepared under the client's name right before the message that needs it.

use std::sync::Arc;

use bytes::BytesMut;

use super::rewrite::{forward, target};
use super::special::{ServerKey, Special};
use super::{
    cstr, put_frame, ClientStatements, PrepError, ResponsePlan, Rewrite, ServerStatements,
    StatementDef,
};

/// One client message (see [`super::rewrite_client_message`]); `body` is `frame` minus its
/// header. Only 54000 (past the per-client cap) is refused here.
pub(super) fn rewrite(
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
            if let Some((_, rest)) = cstr(body) {
                if let Some((name, _)) = cstr(rest) {
                    ensure(name, client, server, plan, out)?;
                }
            }
            Ok(forward(tag, frame, plan, out))
        }
        b'D' | b'C' => {
            let name = match target(body) {
                Some((b'S', rest)) => match cstr(rest) {
                    Some((name, [])) => name,
                    _ => return Ok(forward(tag, frame, plan, out)),
                },
                _ => return Ok(forward(tag, frame, plan, out)),
            };
            if tag == b'D' {
                ensure(name, client, server, plan, out)?;
                return Ok(forward(tag, frame, plan, out));
            }
            close(name, frame, client, server, plan, out)
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
    let Some((name, rest)) = cstr(body) else {
        return Ok(forward(b'P', frame, plan, out));
    };
    let Some((query, params)) = cstr(rest) else {
        return Ok(forward(b'P', frame, plan, out));
    };
    let well_formed = params
        .split_first_chunk::<2>()
        .is_some_and(|(n, oids)| oids.len() == 4 * usize::from(u16::from_be_bytes(*n)));
    if name.is_empty() || !well_formed {
        // The server reports a malformed body in its own words.
        return Ok(forward(b'P', frame, plan, out));
    }
    let previous = client.get(name).map(Arc::clone);
    if previous.is_none() && client.len() >= client.limit() {
        return Err(PrepError::TooMany(client.limit()));
    }
    // A name the client has: the server must have it too, to refuse the Parse as PostgreSQL.
    ensure(name, client, server, plan, out)?;
    let def = Arc::new(StatementDef::new(query, params)?);
    let server_had = !server.insert_named(name);
    client.insert(name, Arc::clone(&def));
    out.extend_from_slice(frame);
    let parsed = Special::ParseNamed {
        name: name.to_vec(),
        def,
        previous,
        server_had,
    };
    plan.push_special(parsed, client, server);
    Ok(Rewrite::Forwarded)
}

fn close(
    name: &[u8],
    frame: &[u8],
    client: &mut ClientStatements,
    server: &mut ServerStatements,
    plan: &mut ResponsePlan,
    out: &mut BytesMut,
) -> Result<Rewrite, PrepError> {
    let removed = client.remove(name);
    let server_had = server.remove_named(name);
    out.extend_from_slice(frame);
    if removed.is_none() && !server_had {
        plan.push_unit();
    } else {
        let closed = Special::CloseNamed {
            name: name.to_vec(),
            removed,
            server_had,
        };
        plan.push_special(closed, client, server);
    }
    Ok(Rewrite::Forwarded)
}

/// Prepares the client's statement `name` on this server connection, under that name, if the
/// client has it and the connection does not.
fn ensure(
    name: &[u8],
    client: &mut ClientStatements,
    server: &mut ServerStatements,
    plan: &mut ResponsePlan,
    out: &mut BytesMut,
) -> Result<(), PrepError> {
    if name.is_empty() || server.has_named(name) {
        return Ok(());
    }
    let Some(def) = client.get(name) else {
        return Ok(());
    };
    put_frame(out, b'P', &[name, b"\0", def.definition()]).map_err(|_| PrepError::BadFrame)?;
    server.insert_named(name);
    let key = Some(ServerKey::Named(name.to_vec()));
    plan.push_special(Special::Prepare { key }, client, server);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::resets::tests::{complete, error, query, ready, Session};
    use super::super::rewrite::tests::{bind, describe_s, msg, parse, sync};
    use super::super::Naming;

    fn close_s(name: &str) -> Vec<u8> {
        msg(b'C', format!("S{name}\0").as_bytes())
    }

    #[test]
    fn names_reach_the_server_unchanged() {
        let mut s = Session::new(Naming::PassThrough);
        let frames = [
            parse("s1", "SELECT $1"),
            bind("p", "s1", &[b"1"]),
            describe_s("s1"),
            close_s("s1"),
            // Unknown or malformed: the server answers in its own words.
            bind("", "nope", &[]),
            describe_s("nope"),
            close_s("nope"),
            msg(b'P', b"s2\0SELECT 1\0\0\x01"),
            sync(),
        ];
        for f in &frames {
            s.send(f);
        }
        assert_eq!(s.take_sent(), frames.concat());
        assert!(s.names().is_empty() && !s.server.has_named(b"s1"));
        let replies = [
            msg(b'1', b""),
            msg(b'2', b""),
            msg(b't', b"\0\0"),
            msg(b'n', b""),
            msg(b'3', b""),
            error("26000", None),
            ready(),
        ];
        s.recv(&replies);
        assert_eq!(s.take_got(), replies.concat());
        assert!(s.names().is_empty() && s.plan.is_settled());
    }

    #[test]
    fn a_new_server_gets_the_clients_statements_under_their_names_before_use() {
        let mut s = Session::new(Naming::PassThrough);
        s.prepare(&["a", "b"]);
        // A transparent failover: the client is moved to a connection that has none.
        s.server = super::ServerStatements::new();
        s.plan.reset();
        s.send(&bind("", "a", &[]));
        s.send(&describe_s("a"));
        s.send(&close_s("b"));
        // Parse of a name the client has: the server must refuse it, so it gets it first.
        s.send(&parse("a", "SELECT 'other'"));
        s.send(&sync());
        assert_eq!(
            s.take_sent(),
            [
                parse("a", "SELECT 'a'"),
                bind("", "a", &[]),
                describe_s("a"),
                close_s("b"),
                parse("a", "SELECT 'other'"),
                sync(),
            ]
            .concat()
        );
        s.recv(&[
            msg(b'1', b""),
            msg(b'2', b""),
            msg(b't', b"\0\0"),
            msg(b'T', b"\0\0"),
            msg(b'3', b""),
            error("42P05", None),
            ready(),
        ]);
        let got = s.take_got();
        assert_eq!(
            &got[..5],
            b"2\0\0\0\x04",
            "pgpivot's ParseComplete is not the client's"
        );
        assert_eq!(s.names(), ["a"]);
        let def = s.client.get(b"a").unwrap();
        assert_eq!(
            def.definition(),
            b"SELECT 'a'\0\0\0",
            "the refused Parse changed nothing"
        );
        assert!(s.server.has_named(b"a") && !s.server.has_named(b"b"));
        // Once there, nothing more is sent ahead of it.
        s.send(&bind("", "a", &[]));
        assert_eq!(s.take_sent(), bind("", "a", &[]));
    }

    #[test]
    fn failed_or_skipped_messages_are_undone() {
        let mut s = Session::new(Naming::PassThrough);
        s.prepare(&["a"]);
        s.send(&parse("b", "SELEC 1"));
        s.send(&close_s("a"));
        s.send(&sync());
        assert_eq!(s.names(), ["b"], "as sent");
        s.recv(&[error("42601", None), ready()]);
        assert_eq!(s.names(), ["a"]);
        assert!(s.server.has_named(b"a") && !s.server.has_named(b"b"));
        // A statement the server has but pgpivot did not see made (SQL PREPARE): refused.
        s.send(&parse("p", "SELECT 1"));
        s.send(&sync());
        s.recv(&[error("42P05", None), ready()]);
        assert!(!s.server.has_named(b"p") && s.client.get(b"p").is_none());
        s.send(&query("DISCARD ALL"));
        s.recv(&[complete("DISCARD ALL"), ready()]);
        assert!(s.names().is_empty() && s.server.is_empty());
    }
}
