use super::*;

fn error_with_position(p: &str) -> BytesMut {
    let mut out = BytesMut::new();
    let parts: [&[u8]; 10] = [
        b"S",
        b"ERROR\0",
        b"C",
        b"42703\0",
        b"M",
        b"boom\0",
        b"P",
        p.as_bytes(),
        b"\0",
        b"\0",
    ];
    put_frame(&mut out, b'E', &parts).unwrap();
    out
}

#[test]
fn positions_after_a_rewrite_move_back() {
    let w = WatchSet {
        items: VecDeque::new(),
        shifts: vec![
            Shift {
                after: 20,
                delta: 30,
            },
            Shift {
                after: 90,
                delta: 25,
            },
        ],
    };
    assert_eq!(w.shift_position(&error_with_position("5")), None);
    assert_eq!(
        w.shift_position(&error_with_position("60")),
        Some(error_with_position("30"))
    );
    assert_eq!(
        w.shift_position(&error_with_position("100")),
        Some(error_with_position("45"))
    );
    // Not a number, or no position: left alone.
    assert_eq!(w.shift_position(&error_with_position("x")), None);
    assert_eq!(
        WatchSet::default().shift_position(&error_with_position("60")),
        None
    );
}

/// One client's session as the pumps drive it: Query and Parse texts are looked at for drops
/// (as staging does), statement messages and Queries go through the rewriter.
pub(crate) struct Session {
    pub(crate) client: ClientStatements,
    pub(crate) server: ServerStatements,
    pub(crate) plan: ResponsePlan,
    sent: BytesMut,
    got: Vec<u8>,
}

impl Session {
    pub(crate) fn new(naming: Naming) -> Self {
        let mut client = ClientStatements::new();
        client.set_naming(naming);
        Session {
            client,
            server: ServerStatements::new(),
            plan: ResponsePlan::new(),
            sent: BytesMut::new(),
            got: Vec::new(),
        }
    }

    pub(crate) fn send(&mut self, frame: &[u8]) {
        let tag = frame[0];
        if !(super::super::is_statement_message(tag) || tag == b'Q') {
            self.plan.on_client_message(tag);
            self.sent.extend_from_slice(frame);
            return;
        }
        let text = match tag {
            b'Q' => super::super::cstr(&frame[5..]).map(|(q, _)| q),
            b'P' => super::super::cstr(&frame[5..])
                .and_then(|(_, rest)| super::super::cstr(rest))
                .map(|(q, _)| q),
            _ => None,
        };
        let resets = text.map(crate::session::sql::resets).unwrap_or_default();
        super::super::rewrite_with_resets(
            tag,
            frame,
            resets,
            &mut self.client,
            &mut self.server,
            &mut self.plan,
            &mut self.sent,
        )
        .unwrap();
    }

    pub(crate) fn recv(&mut self, frames: &[Vec<u8>]) {
        for f in frames {
            if self.plan.wants(f[0]) {
                let mut out = BytesMut::new();
                self.plan
                    .on_server_message(f[0], f, &mut out, &mut self.client, &mut self.server)
                    .unwrap();
                self.got.extend_from_slice(&out);
            } else {
                self.got.extend_from_slice(f);
            }
        }
    }

    pub(crate) fn take_sent(&mut self) -> Vec<u8> {
        self.sent.split().to_vec()
    }

    pub(crate) fn take_got(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.got)
    }

    pub(crate) fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = (self.client.by_name.keys())
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        v.sort();
        v
    }

    /// Prepares `names` (as `SELECT '<name>'`) and lets the server confirm them.
    pub(crate) fn prepare(&mut self, names: &[&str]) {
        for n in names {
            self.send(&parse(n, &format!("SELECT '{n}'")));
        }
        self.send(&sync());
        let mut replies = vec![msg(b'1', b""); names.len()];
        replies.push(ready());
        self.recv(&replies);
        self.take_sent();
        self.take_got();
    }
}

use super::super::rewrite::tests::{bind, execute, msg, parse, sync};

pub(crate) fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', format!("{sql}\0").as_bytes())
}

pub(crate) fn complete(tag: &str) -> Vec<u8> {
    msg(b'C', format!("{tag}\0").as_bytes())
}

pub(crate) fn ready() -> Vec<u8> {
    msg(b'Z', b"I")
}

pub(crate) fn error(code: &str, position: Option<&str>) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = vec![b"S", b"ERROR\0", b"C", code.as_bytes(), b"\0"];
    parts.extend_from_slice(&[b"M", b"boom\0"]);
    if let Some(p) = position {
        parts.extend_from_slice(&[b"P", p.as_bytes(), b"\0"]);
    }
    parts.push(b"\0");
    let mut out = BytesMut::new();
    put_frame(&mut out, b'E', &parts).unwrap();
    out.to_vec()
}

/// The text of the one Query in `sent`.
fn query_text(sent: &[u8]) -> String {
    assert_eq!(sent[0], b'Q');
    String::from_utf8_lossy(&sent[5..sent.len() - 1]).into_owned()
}

#[test]
fn a_drop_of_everything_applies_as_sent_and_stays_when_confirmed() {
    for naming in [Naming::Global, Naming::PassThrough] {
        let mut s = Session::new(naming);
        s.prepare(&["s1", "s2"]);
        s.send(&query("DEALLOCATE ALL"));
        // Pipelined behind it, the Bind is judged as PostgreSQL will: `s1` is gone, the
        // server says so in its own words.
        s.send(&bind("", "s1", &[]));
        s.send(&sync());
        assert!(s.names().is_empty() && s.server.is_empty(), "{naming:?}");
        let sent = s.take_sent();
        assert_eq!(
            sent,
            [query("DEALLOCATE ALL"), bind("", "s1", &[]), sync()].concat()
        );
        let replies = [
            complete("DEALLOCATE ALL"),
            ready(),
            error("26000", None),
            ready(),
        ];
        s.recv(&replies);
        assert_eq!(s.take_got(), replies.concat());
        assert!(s.names().is_empty() && s.plan.is_settled());
    }
}

#[test]
fn drops_the_server_did_not_run_are_undone() {
    let mut s = Session::new(Naming::Global);
    s.prepare(&["s1"]);
    s.send(&query("DEALLOCATE nope; DEALLOCATE s1"));
    assert!(s.names().is_empty(), "applied when sent");
    let text = query_text(&s.take_sent());
    assert!(
        text.starts_with("DEALLOCATE nope; PREPARE pgpivot_drop_")
            && text.contains(" AS SELECT;DEALLOCATE pgpivot_drop_"),
        "{text}"
    );
    // The first statement fails: the second never runs.
    s.recv(&[error("26000", None), ready()]);
    assert_eq!(s.names(), ["s1"]);
    // In an extended batch that fails before the Execute, the drop is undone as well.
    s.send(&parse("", "DEALLOCATE s1"));
    s.send(&bind("", "", &[]));
    s.send(&execute());
    s.send(&sync());
    assert!(s.names().is_empty());
    s.recv(&[error("25P02", None), ready()]);
    assert_eq!(s.names(), ["s1"]);
    assert!(s.plan.is_settled());
}

#[test]
fn transaction_mode_drops_a_placeholder_and_hides_its_prepare() {
    let mut s = Session::new(Naming::Global);
    s.prepare(&["s1", "s2"]);
    let global = s.client.get(b"s1").unwrap().global_name.clone();
    s.send(&query("SELECT 1; deallocate prepare s1; SELECT x"));
    let text = query_text(&s.take_sent());
    let ph = text
        .split_whitespace()
        .find(|w| w.starts_with("pgpivot_drop_"))
        .unwrap()
        .to_string();
    assert_eq!(
        text,
        format!("SELECT 1; PREPARE {ph} AS SELECT;DEALLOCATE {ph}; SELECT x")
    );
    // `x` is unknown: the server's position counts in what was sent, the client's in its text.
    let at = |t: &str| (t.rfind('x').unwrap() + 1).to_string();
    let (sent_at, client_at) = (at(&text), at("SELECT 1; deallocate prepare s1; SELECT x"));
    let replies = [
        complete("SELECT 1"),
        complete("PREPARE"),
        complete("DEALLOCATE"),
        error("42703", Some(&sent_at)),
        ready(),
    ];
    s.recv(&replies);
    assert_eq!(
        s.take_got(),
        [
            complete("SELECT 1"),
            complete("DEALLOCATE"),
            error("42703", Some(&client_at)),
            ready()
        ]
        .concat()
    );
    assert_eq!(s.names(), ["s2"]);
    // The shared statement stays on the server for other clients.
    assert!(s
        .server
        .hashes()
        .any(|h| format!("pgpivot_{h:016x}") == global));
    // A name the client does not have is left for the server to refuse, in its words.
    s.send(&query("DEALLOCATE s1"));
    assert_eq!(s.take_sent(), query("DEALLOCATE s1"));
}

#[test]
fn extended_drops_apply_at_bind_and_are_confirmed_by_execute() {
    let mut s = Session::new(Naming::Global);
    s.prepare(&["s1"]);
    // Prepared in one batch, executed in the next (as tokio-postgres does).
    s.send(&parse("", "DEALLOCATE s1"));
    s.send(&sync());
    let sent = s.take_sent();
    // The placeholder's Parse, then the client's, rewritten to drop it.
    let (first, rest) =
        sent.split_at(1 + u32::from_be_bytes(sent[1..5].try_into().unwrap()) as usize);
    assert!(first.windows(13).any(|w| w == b"pgpivot_drop_"));
    let ph =
        String::from_utf8_lossy(&first[5..first.iter().skip(5).position(|&b| b == 0).unwrap() + 5])
            .into_owned();
    assert_eq!(
        rest,
        [parse("", &format!("DEALLOCATE {ph}")), sync()].concat()
    );
    s.recv(&[msg(b'1', b""), msg(b'1', b""), ready()]);
    assert_eq!(s.take_got(), [msg(b'1', b""), ready()].concat());
    assert_eq!(s.names(), ["s1"], "nothing dropped before it runs");
    s.send(&bind("", "", &[]));
    s.send(&execute());
    s.send(&sync());
    assert!(s.names().is_empty());
    s.recv(&[msg(b'2', b""), complete("DEALLOCATE"), ready()]);
    assert!(s.names().is_empty() && s.plan.is_settled());
    // ROLLBACK does not bring a statement back, in PostgreSQL or here.
    s.prepare(&["s2"]);
    for q in ["BEGIN", "DEALLOCATE s2", "ROLLBACK"] {
        s.send(&query(q));
    }
    s.recv(&[
        complete("BEGIN"),
        msg(b'Z', b"T"),
        complete("PREPARE"),
        complete("DEALLOCATE"),
        msg(b'Z', b"T"),
        complete("ROLLBACK"),
        ready(),
    ]);
    assert!(s.names().is_empty() && s.plan.is_settled());
}

#[test]
fn session_mode_rewrites_only_for_a_server_that_lacks_the_name() {
    let mut s = Session::new(Naming::PassThrough);
    s.prepare(&["s1", "s2"]);
    // The server has it under the client's name: the query goes as it is.
    s.send(&query("DEALLOCATE s1"));
    assert_eq!(s.take_sent(), query("DEALLOCATE s1"));
    s.recv(&[complete("DEALLOCATE"), ready()]);
    s.take_got();
    assert_eq!(s.names(), ["s2"]);
    assert!(!s.server.has_named(b"s1") && s.server.has_named(b"s2"));
    // A transparent failover: a fresh connection that has none of them yet.
    s.server = ServerStatements::new();
    s.plan.reset();
    s.send(&query("DEALLOCATE s2"));
    let text = query_text(&s.take_sent());
    assert!(text.starts_with("PREPARE pgpivot_drop_"), "{text}");
    s.recv(&[complete("PREPARE"), complete("DEALLOCATE"), ready()]);
    assert_eq!(s.take_got(), [complete("DEALLOCATE"), ready()].concat());
    assert!(s.names().is_empty());
}
