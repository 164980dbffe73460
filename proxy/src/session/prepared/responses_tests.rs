//! Unit tests of the reply plan (kept apart: the plan itself is long enough).
use super::super::rewrite::tests::{bind, describe_s, execute, msg, parse, sync};
use super::super::*;
use super::*;

/// Server replies.
fn reply(tag: u8) -> Vec<u8> {
    msg(tag, b"")
}
fn error(code: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    pgpivot_protocol::build::error_response(
        &mut b,
        &pgpivot_protocol::build::ErrorFields {
            severity: "ERROR",
            code,
            message: "boom",
            detail: None,
            hint: None,
        },
    );
    b.to_vec()
}
fn ready() -> Vec<u8> {
    msg(b'Z', b"I")
}
fn row() -> Vec<u8> {
    msg(b'D', b"\0\x01\0\0\0\x011")
}
fn complete() -> Vec<u8> {
    msg(b'C', b"SELECT 1\0")
}

struct Client {
    stmts: ClientStatements,
    plan: ResponsePlan,
    /// Bytes the server received.
    sent: BytesMut,
    /// Bytes the client received.
    got: Vec<u8>,
    /// How often the server-side scanner had to stop.
    stops: usize,
}

impl Client {
    fn new() -> Self {
        Client {
            stmts: ClientStatements::new(),
            plan: ResponsePlan::new(),
            sent: BytesMut::new(),
            got: Vec::new(),
            stops: 0,
        }
    }
    fn send(&mut self, server: &mut ServerStatements, frame: &[u8]) -> Rewrite {
        let tag = frame[0];
        if is_statement_message(tag) {
            rewrite_client_message(
                tag,
                frame,
                &mut self.stmts,
                server,
                &mut self.plan,
                &mut self.sent,
            )
            .unwrap()
        } else {
            self.plan.on_client_message(tag);
            self.sent.extend_from_slice(frame);
            Rewrite::Forwarded
        }
    }
    /// Feeds whole server messages the way the pump does.
    fn recv(&mut self, server: &mut ServerStatements, frames: &[Vec<u8>]) {
        for f in frames {
            if self.plan.wants(f[0]) {
                self.stops += 1;
                let mut out = BytesMut::new();
                self.plan
                    .on_server_message(f[0], f, &mut out, &mut self.stmts, server)
                    .unwrap();
                self.got.extend_from_slice(&out);
            } else {
                self.got.extend_from_slice(f);
            }
        }
    }
    fn take_sent(&mut self) -> Vec<u8> {
        self.sent.split().to_vec()
    }
    fn take_got(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.got)
    }
}

fn cat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

fn close_probe() -> Vec<u8> {
    let mut b = vec![b'S'];
    b.extend_from_slice(PROBE_NAME);
    b.push(0);
    msg(b'C', &b)
}

fn global(sql: &str) -> String {
    StatementDef::new(sql.as_bytes(), &[0, 0])
        .unwrap()
        .global_name
}

#[test]
fn second_client_parse_is_answered_from_cache_in_place() {
    let mut server = ServerStatements::new();
    let mut a = Client::new();
    a.send(&mut server, &parse("a1", "SELECT 1"));
    a.send(&mut server, &sync());
    let g = global("SELECT 1");
    assert_eq!(a.take_sent(), cat(&[parse(&g, "SELECT 1"), sync()]));
    a.recv(&mut server, &[reply(b'1'), ready()]);
    assert_eq!(a.take_got(), cat(&[reply(b'1'), ready()]));
    assert!(a.plan.is_settled());

    // Client B, same server, same SQL under another name, in one pipeline.
    let mut b = Client::new();
    assert_eq!(
        b.send(&mut server, &parse("b1", "SELECT 1")),
        Rewrite::AnsweredLocally
    );
    b.send(&mut server, &bind("", "b1", &[]));
    b.send(&mut server, &execute());
    b.send(&mut server, &sync());
    assert_eq!(
        b.take_sent(),
        cat(&[close_probe(), bind("", &g, &[]), execute(), sync()])
    );
    assert!(!b.plan.is_empty());
    // The server answers the probe with CloseComplete; the client sees ParseComplete.
    b.recv(
        &mut server,
        &[reply(b'3'), reply(b'2'), row(), complete(), ready()],
    );
    assert_eq!(
        b.take_got(),
        cat(&[reply(b'1'), reply(b'2'), row(), complete(), ready()])
    );
    assert!(b.plan.is_settled());
    assert_eq!((server.len(), b.stmts.len()), (1, 1));
}

#[test]
fn lazy_prepare_on_a_fresh_server_swallows_exactly_one_parse_complete() {
    let mut first = ServerStatements::new();
    let mut c = Client::new();
    c.send(&mut first, &parse("s", "SELECT 1"));
    c.send(&mut first, &sync());
    c.recv(&mut first, &[reply(b'1'), ready()]);
    c.take_sent();
    c.take_got();

    // Next transaction lands on another server connection.
    let mut fresh = ServerStatements::new();
    let g = global("SELECT 1");
    for _ in 0..2 {
        c.send(&mut fresh, &bind("", "s", &[]));
        c.send(&mut fresh, &execute());
    }
    c.send(&mut fresh, &sync());
    assert_eq!(
        c.take_sent(),
        cat(&[
            parse(&g, "SELECT 1"),
            bind("", &g, &[]),
            execute(),
            bind("", &g, &[]),
            execute(),
            sync()
        ])
    );
    assert!(fresh.contains(StatementDef::new(b"SELECT 1", &[0, 0]).unwrap().hash));
    let answer = [row(), complete()];
    c.recv(&mut fresh, &[reply(b'1'), reply(b'2')]);
    c.recv(&mut fresh, &answer);
    c.recv(&mut fresh, &[reply(b'2')]);
    c.recv(&mut fresh, &answer);
    c.recv(&mut fresh, &[ready()]);
    assert_eq!(
        c.take_got(),
        cat(&[
            reply(b'2'),
            row(),
            complete(),
            reply(b'2'),
            row(),
            complete(),
            ready()
        ])
    );
    assert!(c.plan.is_settled());
}

#[test]
fn describe_statement_prepares_lazily_and_is_renamed() {
    let mut server = ServerStatements::new();
    let mut c = Client::new();
    c.send(&mut server, &parse("s", "SELECT 1"));
    c.send(&mut server, &sync());
    c.recv(&mut server, &[reply(b'1'), ready()]);
    c.take_sent();
    c.take_got();

    let mut other = ServerStatements::new();
    c.send(&mut other, &describe_s("s"));
    c.send(&mut other, &sync());
    let g = global("SELECT 1");
    assert_eq!(
        c.take_sent(),
        cat(&[parse(&g, "SELECT 1"), describe_s(&g), sync()])
    );
    let t = msg(b't', b"\0\0");
    let rd = msg(b'T', b"\0\0");
    c.recv(&mut other, &[reply(b'1'), t.clone(), rd.clone(), ready()]);
    assert_eq!(c.take_got(), cat(&[t, rd, ready()]));
    assert!(c.plan.is_settled());

    // Already there: just renamed, no tracking at all.
    c.send(&mut other, &describe_s("s"));
    assert!(c.plan.is_empty());
    assert_eq!(c.take_sent(), describe_s(&g));
}

#[test]
fn close_is_answered_locally_and_the_statement_stays_on_the_server() {
    let mut server = ServerStatements::new();
    let mut c = Client::new();
    c.send(&mut server, &parse("s", "SELECT 1"));
    c.send(&mut server, &sync());
    c.recv(&mut server, &[reply(b'1'), ready()]);
    c.take_sent();
    c.take_got();

    let close = msg(b'C', b"Ss\0");
    assert_eq!(c.send(&mut server, &close), Rewrite::AnsweredLocally);
    c.send(&mut server, &sync());
    assert_eq!(c.take_sent(), cat(&[close_probe(), sync()]));
    assert!(c.stmts.is_empty());
    assert_eq!(server.len(), 1);
    c.recv(&mut server, &[reply(b'3'), ready()]);
    assert_eq!(c.take_got(), cat(&[reply(b'3'), ready()]));
    assert!(c.plan.is_settled());
    // Closing a portal is the server's business.
    let close_portal = msg(b'C', b"Pp\0");
    c.send(&mut server, &close_portal);
    assert_eq!(c.take_sent(), close_portal);
    assert!(c.plan.is_empty());
}

#[test]
fn error_mid_pipeline_drops_pending_replies_until_sync() {
    let mut server = ServerStatements::new();
    let mut a = Client::new();
    for sql in ["SELECT 1", "SELECT 2"] {
        a.send(&mut server, &parse(sql, sql));
    }
    a.send(&mut server, &sync());
    a.recv(&mut server, &[reply(b'1'), reply(b'1'), ready()]);

    // Client c: Bind/Execute (fails), then Parse of a cached statement, Close, Bind, Sync.
    let mut c = Client::new();
    c.send(&mut server, &parse("keep", "SELECT 1"));
    c.send(&mut server, &sync());
    c.recv(&mut server, &[reply(b'3'), ready()]);
    c.take_got();
    c.send(&mut server, &bind("", "keep", &[]));
    c.send(&mut server, &execute());
    c.send(&mut server, &parse("s2", "SELECT 2"));
    c.send(&mut server, &msg(b'C', b"Skeep\0"));
    c.send(&mut server, &bind("", "s2", &[]));
    c.send(&mut server, &execute());
    c.send(&mut server, &sync());
    assert!(!c.plan.is_empty());
    // The server fails the Execute and skips everything else up to Sync.
    c.recv(&mut server, &[reply(b'2'), error("22012"), ready()]);
    assert_eq!(c.take_got(), cat(&[reply(b'2'), error("22012"), ready()]));
    assert!(c.plan.is_empty() && c.plan.is_settled());
    // PostgreSQL never ran the Parse or the Close: "s2" does not exist, "keep" still does.
    assert!(c.stmts.get(b"s2").is_none());
    assert!(c.stmts.get(b"keep").is_some());
    assert_eq!(server.len(), 2);
}

#[test]
fn failed_parse_is_undone_on_client_and_server() {
    let mut server = ServerStatements::new();
    let mut c = Client::new();
    c.send(&mut server, &parse("s", "SELEC 1"));
    c.send(&mut server, &bind("", "s", &[]));
    c.send(&mut server, &sync());
    assert_eq!(server.len(), 1);
    c.recv(&mut server, &[error("42601"), ready()]);
    assert_eq!(c.take_got(), cat(&[error("42601"), ready()]));
    assert!(c.stmts.is_empty() && server.is_empty() && c.plan.is_settled());
    // So the client can define it again, and it is sent again.
    c.take_sent();
    assert_eq!(
        c.send(&mut server, &parse("s", "SELEC 1")),
        Rewrite::Forwarded
    );
}

#[test]
fn error_before_the_sync_is_sent_skips_later_messages_too() {
    let mut server = ServerStatements::new();
    let mut a = Client::new();
    a.send(&mut server, &parse("x", "SELECT 1"));
    a.send(&mut server, &sync());
    a.recv(&mut server, &[reply(b'1'), ready()]);

    let mut c = Client::new();
    // A name in pgpivot's own namespace is refused with a probe.
    c.send(&mut server, &bind("", "pgpivot_nope", &[]));
    // The probe's 26000 comes back before the client has finished the batch.
    c.recv(&mut server, &[error("26000")]);
    let got = c.take_got();
    assert!(
        got.windows(12).any(|w| w == b"pgpivot_nope"),
        "client's own name"
    );
    // Everything now is skipped by the server: nothing may be expected or kept.
    assert_eq!(
        c.send(&mut server, &parse("p", "SELECT 1")),
        Rewrite::AnsweredLocally
    );
    assert!(c.stmts.is_empty(), "undone at once");
    c.send(&mut server, &execute());
    c.send(&mut server, &msg(b'Q', b"SELECT 1\0"));
    assert!(c.plan.is_empty());
    c.send(&mut server, &sync());
    c.recv(&mut server, &[ready()]);
    assert_eq!(c.take_got(), ready());
    assert!(c.plan.is_settled());
}

#[test]
fn pgbench_prepared_loop_stays_in_counting_mode() {
    let mut server = ServerStatements::new();
    let mut c = Client::new();
    c.send(
        &mut server,
        &parse("P0_1", "SELECT abalance FROM pgbench_accounts"),
    );
    c.send(&mut server, &sync());
    c.recv(&mut server, &[reply(b'1'), ready()]);
    assert!(c.plan.is_empty());
    c.stops = 0;
    let rounds = 1000;
    for i in 0..rounds {
        c.send(&mut server, &bind("", "P0_1", &[b"42"]));
        c.send(&mut server, &execute());
        c.send(&mut server, &sync());
        assert!(c.plan.is_empty(), "round {i}");
        c.recv(&mut server, &[reply(b'2'), row()]);
        assert!(c.plan.is_empty(), "round {i}");
        c.recv(&mut server, &[complete(), ready()]);
        assert!(c.plan.is_empty() && c.plan.is_settled(), "round {i}");
    }
    // The server→client pump only stopped at ReadyForQuery, as it does without the plan,
    // and no queue entry was made (the queue is empty after every single message).
    assert_eq!(c.stops, rounds);
}

#[test]
fn tracking_starts_mid_batch_after_replies_were_already_forwarded() {
    let mut server = ServerStatements::new();
    let mut a = Client::new();
    a.send(&mut server, &parse("x", "SELECT 2"));
    a.send(&mut server, &sync());
    a.recv(&mut server, &[reply(b'1'), ready()]);

    let mut c = Client::new();
    c.send(&mut server, &parse("s", "SELECT 1"));
    c.send(&mut server, &sync());
    c.recv(&mut server, &[reply(b'1'), ready()]);
    c.take_got();
    // Bind/Execute/Describe, plain; part of their replies already passed (Flush, big rows).
    c.send(&mut server, &bind("", "s", &[]));
    c.send(&mut server, &execute());
    c.send(&mut server, &describe_s("s"));
    c.send(&mut server, &msg(b'H', b""));
    c.recv(&mut server, &[reply(b'2'), row(), row()]);
    assert!(c.plan.is_empty());
    // Now a cached Parse: its reply belongs after Execute's and Describe's.
    c.send(&mut server, &parse("y", "SELECT 2"));
    c.send(&mut server, &sync());
    let t = msg(b't', b"\0\0");
    c.recv(
        &mut server,
        &[
            row(),
            complete(),
            t.clone(),
            reply(b'n'),
            reply(b'3'),
            ready(),
        ],
    );
    assert_eq!(
        c.take_got(),
        cat(&[
            reply(b'2'),
            row(),
            row(),
            row(),
            complete(),
            t,
            reply(b'n'),
            reply(b'1'),
            ready()
        ])
    );
    assert!(c.plan.is_settled());
}

#[test]
fn tracking_starts_behind_batches_still_in_flight() {
    let mut server = ServerStatements::new();
    let mut c = Client::new();
    c.send(&mut server, &parse("s", "SELECT 1"));
    c.send(&mut server, &sync());
    c.recv(&mut server, &[reply(b'1'), ready()]);
    c.take_got();
    // A batch and a simple query are sent; no reply has arrived yet (counting mode).
    c.send(&mut server, &bind("", "s", &[]));
    c.send(&mut server, &execute());
    c.send(&mut server, &sync());
    c.send(&mut server, &msg(b'Q', b"SELECT 1; SELECT 2\0"));
    assert!(c.plan.is_empty());
    // Then Close and a cached Parse: their replies come after two ReadyForQuery.
    c.send(&mut server, &msg(b'C', b"Ss\0"));
    c.send(&mut server, &parse("s", "SELECT 1"));
    c.send(&mut server, &sync());
    assert!(!c.plan.is_empty());
    let mut replies = vec![reply(b'2'), row(), complete(), ready()];
    replies.extend([
        reply(b'T'),
        row(),
        complete(),
        reply(b'T'),
        row(),
        complete(),
    ]);
    replies.extend([error("22012"), ready()]);
    c.recv(&mut server, &replies);
    c.recv(&mut server, &[reply(b'3'), reply(b'3'), ready()]);
    replies.extend([reply(b'3'), reply(b'1'), ready()]);
    assert_eq!(c.take_got(), cat(&replies));
    assert!(c.plan.is_settled());
    assert!(c.stmts.get(b"s").is_some());
}

#[test]
fn probe_error_is_replaced_only_when_it_is_the_expected_26000() {
    let mut server = ServerStatements::new();
    let mut c = Client::new();
    c.send(&mut server, &bind("", "pgpivot_ghost", &[]));
    c.send(&mut server, &sync());
    // In an aborted transaction PostgreSQL reports 25P02 first, so does the server: pass it.
    c.recv(&mut server, &[error("25P02"), ready()]);
    assert_eq!(c.take_got(), cat(&[error("25P02"), ready()]));
    c.send(&mut server, &bind("", "pgpivot_ghost", &[]));
    c.send(&mut server, &sync());
    c.recv(&mut server, &[error("26000"), ready()]);
    let got = c.take_got();
    let body = &got[5..got.len() - 6];
    let e = ErrorView::new(body);
    assert_eq!(e.sqlstate(), Some("26000"));
    assert_eq!(
        e.message(),
        Some("prepared statement \"pgpivot_ghost\" does not exist")
    );
}

#[test]
fn random_traffic_never_panics() {
    let mut seed = 0x0bad_cafe_dead_beefu64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut server = ServerStatements::new();
    let mut c = Client::new();
    let names = ["a", "b", "c"];
    for _ in 0..50_000 {
        let name = names[next(3) as usize];
        if next(2) == 0 {
            let frame = match next(8) {
                0 => parse(name, ["SELECT 1", "SELECT 2"][next(2) as usize]),
                1 => bind("", name, &[]),
                2 => describe_s(name),
                3 => msg(b'C', format!("S{name}\0").as_bytes()),
                4 => sync(),
                5 => msg(b'Q', b"SELECT 1\0"),
                6 => execute(),
                _ => msg(b'H', b""),
            };
            c.send(&mut server, &frame);
        } else {
            let tag = b"123TnCIsZEtDNSAGHdc"[next(19) as usize];
            let frame = match tag {
                b'E' => error(["26000", "22012"][next(2) as usize]),
                b'Z' => ready(),
                t => reply(t),
            };
            let mut out = BytesMut::new();
            let (p, s) = (&mut c.plan, &mut c.stmts);
            if p.wants(tag)
                && p.on_server_message(tag, &frame, &mut out, s, &mut server)
                    .is_err()
            {
                p.reset();
            }
        }
        c.take_sent();
    }
}

#[test]
fn desynchronised_or_malformed_server_messages_are_errors() {
    let mut server = ServerStatements::new();
    let mut c = Client::new();
    c.send(&mut server, &parse("s", "SELECT 1"));
    let mut out = BytesMut::new();
    let (p, s) = (&mut c.plan, &mut c.stmts);
    assert!(matches!(
        p.on_server_message(b'2', &reply(b'2'), &mut out, s, &mut server),
        Err(PlanError::Unexpected { tag: '2', .. })
    ));
    assert!(matches!(
        p.on_server_message(b'Z', &ready(), &mut out, s, &mut server),
        Err(PlanError::Unexpected { tag: 'Z', .. })
    ));
    for bad in [
        &b""[..],
        b"Z\0\0",
        b"Z\0\0\0\x05",
        b"Z\0\0\0\x07I!",
        b"1\xff\xff\xff\xff",
    ] {
        let tag = bad.first().copied().unwrap_or(b'Z');
        assert!(matches!(
            p.on_server_message(tag, bad, &mut out, s, &mut server),
            Err(PlanError::Malformed(_))
        ));
    }
    assert!(matches!(
        p.on_server_message(b'1', &ready(), &mut out, s, &mut server),
        Err(PlanError::Malformed('1'))
    ));
    assert!(out.is_empty());
    assert_eq!(PlanError::Malformed('x').sqlstate(), "08P01");
}
