//! `connect` against a scripted backend: the answers a real PostgreSQL rarely or never gives
//! (NegotiateProtocolVersion, authentication methods pgpivot cannot speak, no BackendKeyData).

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use pgpivot_protocol::build;
use pgpivot_protocol::startup::{parse_initial, InitialPacket, StartupMessage};
use pgpivot_protocol::views::ErrorView;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{connect, ConnectError, ServerConn};

/// A backend that reads the startup packet, answers `script` and keeps the socket open; the
/// startup packet it read comes back through the join handle.
async fn scripted(script: Vec<u8>) -> (String, tokio::task::JoinHandle<StartupMessage>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let startup = loop {
            if let Some(InitialPacket::Startup(m)) = parse_initial(&mut buf).unwrap() {
                break m;
            }
            assert!(s.read_buf(&mut buf).await.unwrap() > 0, "client hung up");
        };
        s.write_all(&script).await.unwrap();
        // Hold the connection until the client is done with it.
        let _ = s.read_buf(&mut buf).await;
        startup
    });
    (addr, task)
}

fn client_startup() -> StartupMessage {
    StartupMessage {
        major: 3,
        minor: 2,
        params: vec![
            ("user".into(), "app".into()),
            ("_pq_.test_option".into(), "1".into()),
            ("application_name".into(), "t".into()),
        ],
    }
}

fn auth(code: i32, rest: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u8(b'R');
    b.put_i32(8 + rest.len() as i32);
    b.put_i32(code);
    b.put_slice(rest);
    b.to_vec()
}

fn ready(with_key: bool) -> Vec<u8> {
    let mut b = BytesMut::new();
    build::parameter_status(&mut b, "server_version", "15.0");
    if with_key {
        build::backend_key_data(&mut b, 4242, &[9, 9, 9, 9]);
    }
    build::ready_for_query(&mut b, b'I');
    b.to_vec()
}

/// Logs in against `script`; the backend task is left to end when the connection is dropped.
async fn run(script: Vec<u8>) -> Result<ServerConn, ConnectError> {
    let (addr, _backend) = scripted(script).await;
    connect(&addr, &client_startup(), "pw", Duration::from_secs(5)).await
}

/// SQLSTATE and message of a refusal pgpivot made itself.
fn refusal(e: &ConnectError) -> (String, String) {
    let ConnectError::Refused(frame) = e else {
        panic!("expected a refusal, got {e:?}");
    };
    let v = ErrorView::new(&frame[5..]);
    (
        v.sqlstate().unwrap_or_default().to_string(),
        v.message().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn protocol_options_never_reach_the_backend_and_a_benign_negotiation_is_skipped() {
    let mut script = BytesMut::new();
    build::negotiate_protocol_version(&mut script, 0, &["_pq_.other"]);
    let mut script = script.to_vec();
    script.extend(auth(0, b""));
    script.extend(ready(true));
    let (addr, backend) = scripted(script).await;
    let conn = connect(&addr, &client_startup(), "pw", Duration::from_secs(5))
        .await
        .expect("a 3.0 negotiation is harmless");
    assert_eq!((conn.pid, conn.secret.clone()), (4242, vec![9, 9, 9, 9]));
    drop(conn);
    let sent = backend.await.unwrap();
    assert_eq!((sent.major, sent.minor), (3, 0));
    assert!(sent.protocol_options().is_empty(), "{:?}", sent.params);
    assert_eq!(sent.get("application_name"), Some("t"));
}

#[tokio::test]
async fn a_negotiation_to_another_major_version_is_refused() {
    let mut script = BytesMut::new();
    script.put_u8(b'v');
    script.put_i32(12);
    script.put_i32(4 << 16);
    script.put_i32(0);
    let r = run(script.to_vec()).await;
    match r {
        Err(ConnectError::Protocol(m)) => assert!(m.contains("4.0"), "{m}"),
        other => panic!("expected a protocol error, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn unsupported_methods_are_named_with_sqlstate_28000() {
    for (code, words) in [(7, "GSSAPI"), (9, "SSPI"), (2, "Kerberos V5"), (6, "SCM")] {
        let r = run(auth(code, b"")).await;
        let e = r.err().expect("must fail");
        assert!(!e.is_retryable(), "method {code}: not worth retrying");
        let (state, message) = refusal(&e);
        assert_eq!(state, "28000", "method {code}");
        assert!(message.contains(words), "{message}");
        assert!(message.contains(&format!("method {code}")), "{message}");
        assert!(
            !message.contains("Other("),
            "no Rust debug values: {message}"
        );
    }
    let r = run(auth(10, b"SCRAM-SHA-256-PLUS\0\0")).await;
    let (state, message) = refusal(&r.err().expect("must fail"));
    assert_eq!(state, "28000");
    assert_eq!(
        message,
        "none of the server's SASL authentication mechanisms (SCRAM-SHA-256-PLUS) are \
         supported by pgpivot"
    );
}

#[tokio::test]
async fn no_backend_key_data_means_no_cancel_key() {
    let mut script = auth(0, b"");
    script.extend(ready(false));
    let (addr, _backend) = scripted(script).await;
    let conn = connect(&addr, &client_startup(), "pw", Duration::from_secs(5))
        .await
        .expect("login");
    assert_eq!(conn.pid, 0);
    assert!(conn.secret.is_empty());
}
