//! The probe against a scripted fake server: how errors are sorted, and that a probe cut off by
//! its timeout leaves no connection behind.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{parse_senders, probe};
use crate::config::CheckSettings;
use crate::topology::ProbeOutcome;

#[test]
fn wal_senders_are_read_line_by_line_and_names_may_hold_spaces() {
    assert_eq!(
        parse_senders("node1\tsync\nmy standby\tasync"),
        [
            ("node1".to_string(), "sync".to_string()),
            ("my standby".to_string(), "async".to_string())
        ]
    );
    assert!(parse_senders("").is_empty());
    assert!(parse_senders("no state here").is_empty());
}

fn check(timeout_ms: u64) -> CheckSettings {
    CheckSettings {
        user: "checker".into(),
        password: Some("pw".into()),
        database: "postgres".into(),
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(timeout_ms),
        max_retries: 2,
    }
}

/// Reads one length-prefixed message without a type byte (startup, SSLRequest).
async fn read_startup(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = s.read_i32().await?;
    let mut body = vec![0; (len as usize).saturating_sub(4)];
    s.read_exact(&mut body).await?;
    Ok(body)
}

/// Accepts one client and reads its startup message (declining TLS if asked).
async fn accept_startup(l: &TcpListener) -> TcpStream {
    let (mut s, _) = l.accept().await.unwrap();
    loop {
        let body = read_startup(&mut s).await.unwrap();
        // SSLRequest / GSSENCRequest: "no", then the real startup message follows.
        if body.len() == 4 && body[..2] == [0x04, 0xd2] {
            s.write_all(b"N").await.unwrap();
            continue;
        }
        return s;
    }
}

fn error_response(code: &str, message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (k, v) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        fields.push(k);
        fields.extend_from_slice(v.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut msg = vec![b'E'];
    msg.extend_from_slice(&(fields.len() as i32 + 4).to_be_bytes());
    msg.extend_from_slice(&fields);
    msg
}

/// A server that refuses the login with `code`.
async fn refusing_server(code: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut s = accept_startup(&l).await;
        s.write_all(&error_response(code, "scripted"))
            .await
            .unwrap();
    });
    port
}

#[tokio::test]
async fn server_errors_are_sorted_into_down_at_once_and_retry_budget() {
    for (code, down_at_once) in [
        ("57P03", true),
        ("57P02", true),
        ("57P01", false),
        ("53300", false),
        ("28P01", false),
        ("3D000", false),
    ] {
        let port = refusing_server(code).await;
        let outcome = probe("127.0.0.1", port, &check(2000)).await;
        assert_eq!(
            outcome.is_down_at_once(),
            down_at_once,
            "{code}: {outcome:?}"
        );
        match outcome {
            ProbeOutcome::Unavailable(e) | ProbeOutcome::Error(e) => {
                assert!(e.starts_with(code), "{e}")
            }
            other => panic!("{code}: {other:?}"),
        }
    }
    // Nothing listening: refused, down at once.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let outcome = probe("127.0.0.1", port, &check(2000)).await;
    assert!(matches!(outcome, ProbeOutcome::Refused(_)), "{outcome:?}");
}

#[tokio::test]
async fn a_probe_cut_off_by_its_timeout_leaves_no_connection_behind() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let mut s = accept_startup(&l).await;
        // AuthenticationOk, ReadyForQuery: logged in.
        s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0, b'Z', 0, 0, 0, 5, b'I'])
            .await
            .unwrap();
        // The probe query arrives and is never answered (a hung backend).
        assert_eq!(s.read_u8().await.unwrap(), b'Q');
        // The probe's side must close: EOF (or a reset), not silence.
        let mut buf = [0u8; 1024];
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    });
    let outcome = probe("127.0.0.1", port, &check(300)).await;
    assert_eq!(outcome, ProbeOutcome::Timeout);
    assert!(
        server.await.unwrap(),
        "the timed-out probe's connection stayed open"
    );
}

#[tokio::test]
async fn a_probe_session_terminated_mid_query_counts_toward_the_budget() {
    // pg_terminate_backend on the probe's own session: FATAL 57P01, then the server closes.
    // That says nothing about the node (design section 3): not "refused", not down at once.
    for _ in 0..5 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut s = accept_startup(&l).await;
            s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0, b'Z', 0, 0, 0, 5, b'I'])
                .await
                .unwrap();
            assert_eq!(s.read_u8().await.unwrap(), b'Q');
            let reply = error_response(
                "57P01",
                "terminating connection due to administrator command",
            );
            s.write_all(&reply).await.unwrap();
            drop(s);
        });
        let outcome = probe("127.0.0.1", port, &check(2000)).await;
        assert!(!outcome.is_down_at_once(), "{outcome:?}");
        assert!(
            matches!(&outcome, ProbeOutcome::Error(e) if e.starts_with("57P01")),
            "{outcome:?}"
        );
    }
}
