//! Bad input gets a clean ErrorResponse with the right SQLSTATE, or a closed socket: never a
//! panic, never a hang, never unbounded memory. Afterwards pgpivot still serves normal queries.

use std::time::{Duration, Instant};

use pgpivot_tests::e2e::{active_queries, login_unix, start_cluster, start_pivot, wait_active};
use pgpivot_tests::wire::{self, error_field};
use pgpivot_tests::{Cluster, Pivot, PivotOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

async fn pivot(c: &Cluster, auth_timeout_ms: Option<u64>) -> Pivot {
    let env = auth_timeout_ms
        .map(|ms| ("PGPIVOT_AUTHENTICATION_TIMEOUT_MS".into(), ms.to_string()))
        .into_iter()
        .collect();
    start_pivot(
        c,
        PivotOptions {
            env,
            ..Default::default()
        },
    )
    .await
}

/// pgpivot still works: a normal login and query over TCP.
async fn still_serves(p: &Pivot) {
    let client = p.client().await.expect("login after bad input");
    let row = client
        .query_one("SELECT 6 * 7", &[])
        .await
        .expect("query after bad input");
    assert_eq!(row.get::<_, i32>(0), 42);
}

/// Sends `bytes` (write errors ignored: pgpivot may already have hung up) and expects, within
/// `within`, either EOF or a FATAL ErrorResponse whose SQLSTATE is in `codes` followed by EOF.
/// Returns the SQLSTATE seen (if any) and how long it took.
async fn expect_refusal<S>(
    mut s: S,
    bytes: &[u8],
    codes: &[&str],
    within: Duration,
    what: &str,
) -> (Option<String>, Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let _ = s.write_all(bytes).await;
    let (first, closed) = wire::answer_then_close(&mut s, within).await;
    assert!(
        closed,
        "{what}: connection still open after {within:?} (answer: {first:?})"
    );
    let code = first.map(|(tag, body)| {
        assert_eq!(
            tag, b'E',
            "{what}: expected an ErrorResponse, got {:?}",
            tag as char
        );
        assert_eq!(error_field(&body, b'S').as_deref(), Some("FATAL"), "{what}");
        let code = error_field(&body, b'C').unwrap_or_default();
        assert!(
            codes.contains(&code.as_str()),
            "{what}: SQLSTATE {code}, wanted one of {codes:?}"
        );
        code
    });
    (code, start.elapsed())
}

async fn tcp(p: &Pivot) -> TcpStream {
    TcpStream::connect(p.addr)
        .await
        .expect("connect to pgpivot")
}

async fn logged_in(p: &Pivot) -> UnixStream {
    login_unix(p).await.0
}

/// Deterministic pseudo-random bytes.
fn garbage(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (*seed >> 33) as u8
        })
        .collect()
}

const PROMPT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_malformed_startup_packets() {
    let c = start_cluster();
    let p = pivot(&c, None).await; // 30 s authentication timeout: answers must be prompt
    let short = pivot(&c, Some(1000)).await;

    // A bad length is closed at once without a reply, as PostgreSQL does (fidelity_startup.rs
    // compares the two).
    let (code, _) = expect_refusal(
        tcp(&p).await,
        b"GET / HTTP/1.1\r\n\r\n",
        &[],
        PROMPT,
        "HTTP",
    )
    .await;
    assert_eq!(code, None, "HTTP request: closed by the length check");

    for len in [1_000_000, -1, i32::MIN, 0, 4, 7, 10_005] {
        let mut packet = len.to_be_bytes().to_vec();
        packet.extend_from_slice(&wire::PROTOCOL_3_0.to_be_bytes());
        packet.extend_from_slice(b"user\0app\0\0");
        let what = format!("startup length {len}");
        let (code, _) = expect_refusal(tcp(&p).await, &packet, &[], PROMPT, &what).await;
        assert_eq!(code, None, "{what}");
    }

    // Protocol 2.0: a fixed 296-byte packet with version 2.0.
    let mut v2 = wire::untagged(2 << 16, &[0; 288]);
    v2[8..11].copy_from_slice(b"app");
    // PostgreSQL answers in that protocol's format: 'E' and one line, no length word.
    let mut s = tcp(&p).await;
    s.write_all(&v2).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PROMPT, s.read_to_end(&mut answer))
        .await
        .expect("protocol 2.0: closed promptly")
        .expect("read");
    assert_eq!(
        String::from_utf8_lossy(&answer),
        "EFATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.0\n\0",
        "protocol 2.0 must get an error it can read, not just a closed socket"
    );

    // During the SCRAM exchange: a password message claiming 2 GB, or not a password message.
    let mut huge_p = vec![b'p'];
    huge_p.extend_from_slice(&i32::MAX.to_be_bytes());
    for (what, bytes) in [
        ("2 GB password message", huge_p),
        ("query during login", wire::query("SELECT 1")),
    ] {
        let mut s = tcp(&p).await;
        s.write_all(&wire::startup(&[("user", "app"), ("database", "bench")]))
            .await
            .unwrap();
        let (tag, _) = wire::read_message(&mut s)
            .await
            .expect("read")
            .expect("auth request");
        assert_eq!(tag, b'R', "{what}");
        let (code, _) = expect_refusal(s, &bytes, &["54000", "08P01"], PROMPT, what).await;
        assert!(code.is_some(), "{what}: expected an ErrorResponse");
    }

    // Random bytes: an error or a close, never a panic or a hang. Some random lengths look
    // plausible and wait for more bytes, so these go to the pgpivot with the 1 s login timeout.
    let mut seed = 0x5eed;
    for i in 0..30 {
        let len = 1 + (garbage(&mut seed, 2)[0] as usize) * 2;
        let bytes = garbage(&mut seed, len);
        let what = format!("garbage #{i} ({len} bytes)");
        let codes = ["08P01", "0A000", "28000"];
        expect_refusal(
            tcp(&short).await,
            &bytes,
            &codes,
            Duration::from_secs(4),
            &what,
        )
        .await;
    }

    // A truncated startup packet, then silence; and silence only: closed after the login timeout.
    let full = wire::startup(&[("user", "app"), ("database", "bench")]);
    for (what, bytes) in [
        ("truncated startup", &full[..full.len() - 5]),
        ("silence", &[][..]),
    ] {
        let (_, took) = expect_refusal(
            tcp(&short).await,
            bytes,
            &["08P01"],
            Duration::from_secs(5),
            what,
        )
        .await;
        assert!(
            took >= Duration::from_millis(900),
            "{what}: closed after {took:?}, before the 1 s timeout"
        );
    }

    still_serves(&p).await;
    still_serves(&short).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_after_login() {
    let c = start_cluster();
    let p = pivot(&c, None).await;
    let mut huge_q = vec![b'Q'];
    huge_q.extend_from_slice(&i32::MAX.to_be_bytes()); // claims 2 GB; never sent
    let mut negative = vec![b'Q'];
    negative.extend_from_slice(&i32::MIN.to_be_bytes());
    let mut huge_x = vec![b'X'];
    huge_x.extend_from_slice(&100_000_000_i32.to_be_bytes()); // a 100 MB Terminate
    let cases: [(&str, Vec<u8>, &[&str]); 5] = [
        ("Query with length 2", vec![b'Q', 0, 0, 0, 2], &["08P01"]),
        ("Query claiming 2 GB", huge_q, &["54000", "08P01"]),
        ("negative length", negative, &["08P01"]),
        ("Terminate claiming 100 MB", huge_x, &["08P01"]),
        (
            "HTTP after login",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            &["08P01", "54000"],
        ),
    ];
    for (what, bytes, codes) in cases {
        let s = logged_in(&p).await;
        let (code, _) = expect_refusal(s, &bytes, codes, PROMPT, what).await;
        assert!(
            code.is_some(),
            "{what}: expected an ErrorResponse before the close"
        );
    }
    // A valid message after a valid one, then garbage: the valid one is still answered.
    let mut s = logged_in(&p).await;
    s.write_all(&wire::query("SELECT 1")).await.unwrap();
    let answer = wire::read_until_ready(&mut s, PROMPT)
        .await
        .expect("answer");
    assert!(answer.iter().any(|(t, _)| *t == b'D'));
    let bytes = garbage(&mut 7, 64);
    expect_refusal(
        s,
        &bytes,
        &["08P01", "54000"],
        Duration::from_secs(5),
        "garbage after a query",
    )
    .await;
    still_serves(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_query_cancels_it() {
    let c = start_cluster();
    let p = pivot(&c, None).await;
    let sleep = "SELECT pg_sleep(20)";
    // Over TCP with tokio-postgres: the connection task is aborted, the socket just closes.
    let (client, connection) = tokio_postgres::connect(&p.conn_string(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    let conn_task = tokio::spawn(connection);
    let query = tokio::spawn(async move { client.simple_query(sleep).await });
    // Raw over the unix socket: the stream is dropped mid-query.
    let mut raw = logged_in(&p).await;
    raw.write_all(&wire::query(&format!("{sleep} -- raw")))
        .await
        .unwrap();
    wait_active(&c, sleep, 2).await;
    conn_task.abort();
    drop(raw);
    let gone = Instant::now();
    while active_queries(&c, sleep) != 0 {
        assert!(
            gone.elapsed() < Duration::from_secs(5),
            "queries still running after the clients left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        query.await.unwrap().is_err(),
        "the aborted client's query cannot succeed"
    );
    still_serves(&p).await;
}
