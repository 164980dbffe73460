//! Unit tests of the client→server half.
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
    // A name the client never prepared goes to the server as it is: its error names it in
    // PostgreSQL's words (and a statement from SQL PREPARE is found).
    for f in [bind("", "nope", &[]), describe_s("nope")] {
        let (r, out) = run(&f, &mut c, &mut s, &mut p);
        assert_eq!((r, out), (Ok(Rewrite::Forwarded), f));
    }
    // One in pgpivot's own namespace could reach another client's statement: refused.
    let (r, out) = run(
        &bind("", "pgpivot_0123456789abcdef", &[]),
        &mut c,
        &mut s,
        &mut p,
    );
    assert_eq!(
        r,
        Ok(Rewrite::Rejected(PrepError::DoesNotExist(
            "pgpivot_0123456789abcdef".into()
        )))
    );
    assert_eq!(out, probe(b'D'));
    let (r, out) = run(&describe_s("pgpivot_none"), &mut c, &mut s, &mut p);
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

#[test]
fn server_statements_past_the_cap_are_closed_between_transactions() {
    let (mut c, mut s, mut p) = (
        ClientStatements::new(),
        ServerStatements::new(),
        ResponsePlan::new(),
    );
    let cap = MAX_STATEMENTS_PER_SERVER as u64;
    for h in 0..cap {
        s.insert(h);
    }
    let server_says = |p: &mut ResponsePlan, c: &mut _, s: &mut _, frames: &[Vec<u8>]| {
        let mut got = Vec::new();
        for f in frames {
            let mut out = BytesMut::new();
            if p.wants(f[0]) {
                p.on_server_message(f[0], f, &mut out, c, s).unwrap();
                got.extend_from_slice(&out);
            } else {
                got.extend_from_slice(f);
            }
        }
        got
    };
    // Inside a transaction block nothing is closed (a portal may still need it).
    p.on_client_message(b'Q');
    server_says(
        &mut p,
        &mut c,
        &mut s,
        &[msg(b'C', b"BEGIN\0"), msg(b'Z', b"T")],
    );
    let (r, out) = run(&parse("a", "SELECT 1"), &mut c, &mut s, &mut p);
    assert_eq!(r, Ok(Rewrite::Forwarded));
    assert_eq!(out, c.get(b"a").unwrap().parse_frame.to_vec());
    p.on_client_message(b'S');
    server_says(&mut p, &mut c, &mut s, &[msg(b'1', b""), msg(b'Z', b"I")]);
    assert_eq!(s.len() as u64, cap + 1);
    // Between transactions, the least recently used go first, ahead of the client's message.
    let (r, out) = run(&bind("", "a", &[]), &mut c, &mut s, &mut p);
    assert_eq!(r, Ok(Rewrite::Forwarded));
    let evicted = (cap + 1 - (cap - cap / 8)) as usize;
    let mut expect = Vec::new();
    for h in 0..evicted as u64 {
        let mut b = vec![b'S'];
        b.extend_from_slice(format!("pgpivot_{h:016x}\0").as_bytes());
        expect.extend(msg(b'C', &b));
    }
    let g = c.get(b"a").unwrap().global_name.clone();
    expect.extend(bind("", &g, &[]));
    assert_eq!(out, expect);
    assert!(s.contains(c.get(b"a").unwrap().hash) && s.len() as u64 == cap - cap / 8);
    p.on_client_message(b'S');
    let mut replies = vec![msg(b'3', b""); evicted];
    replies.extend([msg(b'2', b""), msg(b'Z', b"I")]);
    let got = server_says(&mut p, &mut c, &mut s, &replies);
    assert_eq!(got, [msg(b'2', b""), msg(b'Z', b"I")].concat());
    assert!(p.is_settled());
}
