//! `admin_command`: the admin crate's command parser (`admin/src/command.rs`) on arbitrary text,
//! and its `Responder` (simple and extended protocol, data port and console) on an arbitrary
//! sequence of client messages.
//!
//! Input: `[text up to a NUL][messages: tag, body length (one byte), body ...]`.
//!
//! Invariants: parsing ignores case, surrounding white space and a trailing `;`; what the data
//! port's fast check claims parses to the same Pgpool command; statements are trimmed and hold
//! no `;`. The data port answers only what `is_local` claims and writes nothing otherwise;
//! every answer is whole, well-formed messages, and a Query's ends with ReadyForQuery.

use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use pgpivot_admin::command::{self, Command};
use pgpivot_admin::{
    Action, ActionFuture, ClientInfo, Control, FailoverInfo, Flow, NodeInfo, PoolInfo, ProcessInfo,
    Responder, ServerInfo, SettingInfo, Surface,
};

use super::common::{assert_frames, Input};

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let text = String::from_utf8_lossy(input.until(0)).into_owned();
    parse_text(&text);
    let mut messages = Vec::new();
    while !input.is_empty() {
        let tag = input.byte();
        let len = usize::from(input.byte());
        messages.push((tag, input.take(len)));
    }
    respond(Surface::DataPort, &messages);
    respond(Surface::Console, &messages);
}

fn parse_text(text: &str) {
    let parsed = command::parse(text);
    let padded = command::parse(&format!(" \t{text} ;\n"));
    assert_eq!(
        format!("{parsed:?}"),
        format!("{padded:?}"),
        "padding changed {text:?}"
    );
    if let Ok(cmd) = &parsed {
        for other in [text.to_ascii_uppercase(), text.to_ascii_lowercase()] {
            assert_eq!(
                command::parse(&other).ok().as_ref(),
                Some(cmd),
                "case of {text:?}"
            );
        }
    }
    if let Some(p) = command::pool_show(text.as_bytes()) {
        assert_eq!(parsed.as_ref().ok(), Some(&Command::Pool(p)));
    }
    if let Err(e) = &parsed {
        assert_eq!(e.sqlstate().len(), 5);
    }
    let statements = command::statements(text);
    assert!(!statements.is_empty());
    for s in &statements {
        assert!(!s.contains(';') && s.trim() == *s);
        let _ = command::parse(s);
    }
    if statements.iter().any(|s| s.is_empty()) {
        assert_eq!(statements, [""]);
    }
}

fn respond(surface: Surface, messages: &[(u8, &[u8])]) {
    let mut r = Responder::new(surface);
    let mut out = BytesMut::new();
    for &(tag, body) in messages {
        let local = Responder::is_local(Some(&r), tag, body);
        out.clear();
        let flow = now(r.handle(tag, body, &Fake, b'I', &mut out));
        match (surface, flow) {
            (Surface::DataPort, None) | (Surface::Console, Some(_)) => {}
            (Surface::DataPort, Some(_)) => {
                assert!(local, "answered {:?} it did not claim", tag as char)
            }
            (Surface::Console, None) => panic!("the console answers everything"),
        }
        if flow.is_none() {
            assert!(out.is_empty(), "wrote an answer to a message it gave back");
            // The message goes to PostgreSQL, as the data port's forwarding path does.
            r.end_batch();
            continue;
        }
        assert_frames(&out, false);
        if tag == b'Q' || tag == b'S' {
            assert!(
                out.ends_with(&[b'Z', 0, 0, 0, 5, b'I']),
                "ends with ReadyForQuery"
            );
        }
        if tag == b'X' {
            assert_eq!(flow, Some(Flow::Terminate));
        }
    }
}

/// Polls a future that never waits (the commands read snapshots; `Fake` acts at once).
fn now<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an admin command waited"),
    }
}

/// A proxy with one of everything, so every result set has a row to encode.
struct Fake;

impl Control for Fake {
    fn nodes(&self) -> Vec<NodeInfo> {
        vec![NodeInfo {
            host: "db".into(),
            ..Default::default()
        }]
    }
    fn pools(&self) -> Vec<PoolInfo> {
        vec![PoolInfo::default()]
    }
    fn clients(&self) -> Vec<ClientInfo> {
        vec![ClientInfo::default()]
    }
    fn servers(&self) -> Vec<ServerInfo> {
        vec![ServerInfo::default()]
    }
    fn settings(&self) -> Vec<SettingInfo> {
        vec![SettingInfo {
            key: "port".into(),
            value: "5432".into(),
            source: "default".into(),
            help: "listen port".into(),
        }]
    }
    fn failovers(&self) -> Vec<FailoverInfo> {
        vec![FailoverInfo {
            at: SystemTime::UNIX_EPOCH,
            from: Some(0),
            to: 1,
            generation: 2,
            gap: Some(Duration::from_millis(5)),
            clients_affected: 1,
        }]
    }
    fn process(&self) -> ProcessInfo {
        ProcessInfo::default()
    }
    fn act(&self, action: Action) -> ActionFuture<'_> {
        Box::pin(async move {
            match action {
                Action::DetachNode(0) => Err("node 0 is the primary".to_string()),
                a => Ok(format!("done: {a:?}")),
            }
        })
    }
}
