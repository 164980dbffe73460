//! The commands and the responder against a fake proxy state.

use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use futures::executor::block_on;
use postgres_protocol::message::backend::Message;

use super::*;

struct Fake;

impl Control for Fake {
    fn nodes(&self) -> Vec<NodeInfo> {
        let primary = NodeInfo {
            id: 0,
            host: "127.0.0.1".into(),
            port: 15432,
            weight: 1.0,
            reachable: Some(true),
            probed_role: "primary",
            routed_primary: true,
            last_status_change: Some(SystemTime::UNIX_EPOCH),
            ..Default::default()
        };
        let standby = NodeInfo {
            id: 1,
            port: 15433,
            probed_role: "standby",
            routed_primary: false,
            lag_bytes: Some(1234),
            replication_state: Some("streaming".into()),
            replication_sync_state: Some("sync".into()),
            ..primary.clone()
        };
        let hung = NodeInfo {
            id: 2,
            port: 15434,
            reachable: Some(false),
            probed_role: "unknown",
            routed_primary: false,
            ..primary.clone()
        };
        vec![primary, standby, hung]
    }
    fn pools(&self) -> Vec<PoolInfo> {
        vec![]
    }
    fn clients(&self) -> Vec<ClientInfo> {
        vec![ClientInfo {
            id: 7,
            user: "app".into(),
            database: "db".into(),
            state: "idle",
            idle_seconds: 42,
            ..Default::default()
        }]
    }
    fn servers(&self) -> Vec<ServerInfo> {
        vec![]
    }
    fn settings(&self) -> Vec<SettingInfo> {
        vec![]
    }
    fn failovers(&self) -> Vec<FailoverInfo> {
        vec![FailoverInfo {
            at: SystemTime::UNIX_EPOCH,
            from: Some(0),
            to: 1,
            generation: 4,
            gap: Some(Duration::from_millis(250)),
            clients_affected: 3,
        }]
    }
    fn process(&self) -> ProcessInfo {
        ProcessInfo {
            version: "0.1.0".into(),
            ..Default::default()
        }
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

/// Decoded backend messages as (tag, text-ish summary).
fn messages(mut buf: BytesMut) -> Vec<(u8, Vec<Option<String>>)> {
    let mut out = Vec::new();
    while let Some(m) = Message::parse(&mut buf).unwrap() {
        let (tag, vals) = match m {
            Message::RowDescription(d) => (
                b'T',
                d.fields()
                    .map(|f| Ok(Some(f.name().to_string())))
                    .collect()
                    .unwrap(),
            ),
            Message::DataRow(r) => {
                let body = r.buffer();
                let vals = r
                    .ranges()
                    .map(|r| Ok(r.map(|r| String::from_utf8_lossy(&body[r]).into_owned())))
                    .collect()
                    .unwrap();
                (b'D', vals)
            }
            Message::CommandComplete(c) => (b'C', vec![Some(c.tag().unwrap().to_string())]),
            Message::ReadyForQuery(r) => (b'Z', vec![Some((r.status() as char).to_string())]),
            Message::ErrorResponse(e) => {
                let f: Vec<Option<String>> = e
                    .fields()
                    .map(|f| {
                        Ok(Some(format!(
                            "{}={}",
                            f.type_() as char,
                            String::from_utf8_lossy(f.value_bytes())
                        )))
                    })
                    .collect()
                    .unwrap();
                (b'E', f)
            }
            Message::ParseComplete => (b'1', vec![]),
            Message::BindComplete => (b'2', vec![]),
            Message::CloseComplete => (b'3', vec![]),
            Message::ParameterDescription(_) => (b't', vec![]),
            Message::NoData => (b'n', vec![]),
            Message::NoticeResponse(_) => (b'N', vec![]),
            Message::EmptyQueryResponse => (b'I', vec![]),
            _ => (b'?', vec![]),
        };
        out.push((tag, vals));
    }
    out
}

fn q(text: &str) -> Vec<u8> {
    let mut b = text.as_bytes().to_vec();
    b.push(0);
    b
}

fn run(r: &mut Responder, tag: u8, body: &[u8], out: &mut BytesMut) -> Option<Flow> {
    block_on(r.handle(tag, body, &Fake, b'I', out))
}

#[test]
fn pool_nodes_has_pgpools_columns_in_order_and_reads_by_position() {
    let mut r = Responder::new(Surface::DataPort);
    let mut out = BytesMut::new();
    assert_eq!(
        run(&mut r, b'Q', &q("SHOW pool_nodes;"), &mut out),
        Some(Flow::Continue)
    );
    let m = messages(out);
    assert_eq!(m[0].0, b'T');
    let cols: Vec<String> = m[0].1.iter().map(|c| c.clone().unwrap()).collect();
    assert_eq!(cols.len(), 14);
    assert_eq!(cols[0], "node_id");
    assert_eq!(cols[3], "status");
    assert_eq!(cols[6], "role");
    assert_eq!(cols[13], "last_status_change");
    let row = |i: usize| -> Vec<String> { m[i].1.iter().map(|c| c.clone().unwrap()).collect() };
    assert_eq!(
        row(1),
        [
            "0",
            "127.0.0.1",
            "15432",
            "up",
            "up",
            "0.333333",
            "primary",
            "primary",
            "0",
            "true",
            "0",
            "",
            "",
            "1970-01-01 00:00:00"
        ]
    );
    assert_eq!(row(2)[3], "up");
    assert_eq!(row(2)[6], "standby");
    assert_eq!(row(2)[10], "1234");
    assert_eq!(row(2)[11], "streaming");
    assert_eq!(row(2)[12], "sync");
    assert_eq!(row(3)[3], "down");
    assert_eq!(row(3)[4], "down");
    assert_eq!(m[4], (b'C', vec![Some("SELECT 3".into())]));
    assert_eq!(m[5], (b'Z', vec![Some("I".into())]));
}

#[test]
fn pool_pools_shows_how_long_a_client_has_been_idle() {
    let mut r = Responder::new(Surface::DataPort);
    let mut out = BytesMut::new();
    run(&mut r, b'Q', &q("SHOW pool_pools"), &mut out);
    let m = messages(out);
    let cols: Vec<String> = m[0].1.iter().map(|c| c.clone().unwrap()).collect();
    let at = cols
        .iter()
        .position(|c| c == "client_idle_duration")
        .unwrap();
    assert_eq!(m[1].1[at].as_deref(), Some("42"));
    assert_eq!(m[1].1[0].as_deref(), Some("7"));
}

#[test]
fn the_data_port_claims_only_pool_commands() {
    assert!(Responder::is_local(None, b'Q', &q("show pool_version")));
    assert!(!Responder::is_local(None, b'Q', &q("SELECT 1")));
    assert!(!Responder::is_local(None, b'Q', &q("SHOW NODES")));
    assert!(!Responder::is_local(None, b'S', &[]));
    assert!(!Responder::is_local(None, b'E', b"\0\0\0\0\0"));
    let mut r = Responder::new(Surface::DataPort);
    let mut out = BytesMut::new();
    assert_eq!(run(&mut r, b'Q', &q("SELECT 1"), &mut out), None);
    assert!(out.is_empty());
}

#[test]
fn extended_protocol_prepare_then_execute() {
    let mut r = Responder::new(Surface::DataPort);
    let mut out = BytesMut::new();
    // tokio-postgres: Parse + Describe statement + Sync, then Bind + Execute + Sync.
    let mut parse = b"s1\0".to_vec();
    parse.extend_from_slice(&q("SHOW pool_version"));
    parse.extend_from_slice(&[0, 0]);
    assert!(Responder::is_local(Some(&r), b'P', &parse));
    run(&mut r, b'P', &parse, &mut out).unwrap();
    assert!(Responder::is_local(Some(&r), b'D', b"Ss1\0"));
    run(&mut r, b'D', b"Ss1\0", &mut out).unwrap();
    assert!(Responder::is_local(Some(&r), b'S', b""));
    run(&mut r, b'S', b"", &mut out).unwrap();
    assert!(!Responder::is_local(Some(&r), b'S', b""), "batch closed");
    let bind = b"p1\0s1\0\0\0\0\0\0\0";
    assert!(Responder::is_local(Some(&r), b'B', bind));
    run(&mut r, b'B', bind, &mut out).unwrap();
    run(&mut r, b'E', b"p1\0\0\0\0\0", &mut out).unwrap();
    run(&mut r, b'S', b"", &mut out).unwrap();
    let tags: Vec<u8> = messages(out.clone()).iter().map(|m| m.0).collect();
    assert_eq!(tags, b"1tTZ2DCZ");
    let m = messages(out);
    assert_eq!(
        m[5].1,
        vec![Some("4.5.0 (pgpivot 0.1.0)".to_string())],
        "version row"
    );
}

#[test]
fn a_postgres_statement_reusing_a_local_name_is_forwarded_and_the_name_forgotten() {
    let mut r = Responder::new(Surface::DataPort);
    let mut out = BytesMut::new();
    let mut parse = b"\0".to_vec();
    parse.extend_from_slice(&q("SHOW pool_nodes"));
    parse.extend_from_slice(&[0, 0]);
    run(&mut r, b'P', &parse, &mut out).unwrap();
    run(&mut r, b'S', b"", &mut out).unwrap();
    let mut other = b"\0".to_vec();
    other.extend_from_slice(&q("SELECT 1"));
    other.extend_from_slice(&[0, 0]);
    assert!(Responder::is_local(Some(&r), b'P', &other));
    assert_eq!(run(&mut r, b'P', &other, &mut out), None);
    assert!(!Responder::is_local(Some(&r), b'B', b"\0\0\0\0\0\0\0\0"));
    assert!(!r.has_names());
}

#[test]
fn errors_in_a_batch_skip_to_sync_and_unknown_commands_list_the_valid_ones() {
    let mut r = Responder::new(Surface::Console);
    let mut out = BytesMut::new();
    run(&mut r, b'B', b"\0nope\0\0\0\0\0\0\0", &mut out).unwrap();
    run(&mut r, b'E', b"\0\0\0\0\0", &mut out).unwrap();
    run(&mut r, b'S', b"", &mut out).unwrap();
    let tags: Vec<u8> = messages(out).iter().map(|m| m.0).collect();
    assert_eq!(tags, b"EZ", "one error, Execute skipped");
    let mut out = BytesMut::new();
    run(&mut r, b'Q', &q("SELECT 1"), &mut out).unwrap();
    let m = messages(out);
    assert_eq!(m[0].0, b'E');
    let fields = m[0].1.join_fields();
    assert!(fields.contains("C=42601"), "{fields}");
    assert!(fields.contains("SHOW HELP"), "{fields}");
}

#[test]
fn actions_report_their_outcome_and_refusals_have_a_sqlstate() {
    let mut r = Responder::new(Surface::Console);
    let mut out = BytesMut::new();
    run(&mut r, b'Q', &q("PAUSE; DETACH NODE 0; RESUME"), &mut out).unwrap();
    let m = messages(out);
    let tags: Vec<u8> = m.iter().map(|m| m.0).collect();
    assert_eq!(tags, b"NCEZ", "the error stops the rest");
    assert_eq!(m[1].1, vec![Some("PAUSE".into())]);
    assert!(m[2].1.join_fields().contains("C=55000"));
}

#[test]
fn console_only_commands_are_refused_on_the_data_port() {
    let r = Responder::new(Surface::DataPort);
    assert!(matches!(r.parse("PAUSE"), Err(AdminError::ConsoleOnly(_))));
    assert!(r.parse("show pool_pools").is_ok());
}

#[test]
fn failovers_and_clients_render() {
    let mut r = Responder::new(Surface::Console);
    let mut out = BytesMut::new();
    run(
        &mut r,
        b'Q',
        &q("show failovers; show clients; show help"),
        &mut out,
    )
    .unwrap();
    let m = messages(out);
    assert_eq!(
        m[1].1,
        ["1970-01-01 00:00:00", "0", "1", "4", "250.000", "3"]
            .map(|s| Some(s.to_string()))
            .to_vec()
    );
    assert_eq!(m[4].1[0].as_deref(), Some("7"));
    assert!(m.iter().filter(|x| x.0 == b'D').count() > 10);
}

trait JoinFields {
    fn join_fields(&self) -> String;
}

impl JoinFields for Vec<Option<String>> {
    fn join_fields(&self) -> String {
        self.iter().flatten().cloned().collect::<Vec<_>>().join(" ")
    }
}
