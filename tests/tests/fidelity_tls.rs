//! Every TLS connection pgpivot ends, it ends as PostgreSQL does: with a TLS close_notify, so
//! the client reads a clean end of stream rather than OpenSSL's "unexpected eof while reading"
//! (which libpq 17+ reports as a failed cancel). Checked with a raw rustls client after a
//! CancelRequest inside TLS, a FATAL (wrong password, a refused direct TLS), a Terminate, a
//! shutdown and an admin console session; and with psycopg's TLS cancel (libpq's
//! PQcancelBlocking).

#[allow(dead_code)]
#[path = "tls/certs.rs"]
mod certs;
#[allow(dead_code)]
#[path = "tls/client.rs"]
mod client;

use std::time::Duration;

use certs::Certs;
use pgpivot_tests::e2e::{start_cluster, start_pivot, wait_active};
use pgpivot_tests::wire::{self, error_field};
use pgpivot_tests::PivotOptions;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(10);
const ADMIN_PASSWORD: &str = "admin-secret";

fn tls_opts(certs: &Certs) -> PivotOptions {
    PivotOptions {
        env: vec![
            ("PGPOOL_ENABLE_TLS".into(), "yes".into()),
            ("PGPOOL_TLS_CERT_FILE".into(), certs.path("server.crt")),
            ("PGPOOL_TLS_KEY_FILE".into(), certs.path("server.key")),
            ("PGPOOL_ADMIN_USERNAME".into(), "admin".into()),
            ("PGPOOL_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
            ("PGPIVOT_ADMIN_ADDR".into(), "127.0.0.1:0".into()),
        ],
        ..Default::default()
    }
}

/// Reads to the end: the bytes that came, once the peer closed with close_notify. Fails the
/// test if the stream ends without one (rustls: "peer closed connection without sending TLS
/// close_notify") or stays open.
async fn until_close_notify<S: AsyncRead + Unpin>(s: &mut S, what: &str) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(TIMEOUT, s.read(&mut buf)).await {
            Err(_) => panic!("{what}: still open after {TIMEOUT:?}"),
            Ok(Ok(0)) => return all,
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("{what}: {e} (after {} bytes)", all.len()),
        }
    }
}

/// The severity and SQLSTATE of the first message, if it is an ErrorResponse.
fn first_error(bytes: &[u8]) -> Option<(String, String)> {
    (bytes.first() == Some(&b'E')).then(|| {
        let body = &bytes[5..];
        (
            error_field(body, b'S').unwrap_or_default(),
            error_field(body, b'C').unwrap_or_default(),
        )
    })
}

/// A SCRAM-SHA-256 login (no channel binding) after the startup packet; the last message read
/// (ReadyForQuery, or the ErrorResponse).
async fn scram<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, password: &str) -> (u8, Vec<u8>) {
    let next = |m: Option<(u8, Vec<u8>)>| m.expect("a message");
    let offer = next(client::next(s).await);
    assert_eq!(offer.0, b'R', "SASL offer: {offer:?}");
    let mut sc = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&(sc.message().len() as i32).to_be_bytes());
    body.extend_from_slice(sc.message());
    s.write_all(&wire::message(b'p', &body)).await.unwrap();
    let cont = next(client::next(s).await);
    assert_eq!(cont.0, b'R', "SASLContinue: {cont:?}");
    sc.update(&cont.1[4..]).expect("server-first-message");
    s.write_all(&wire::message(b'p', sc.message()))
        .await
        .unwrap();
    let fin = next(client::next(s).await);
    if fin.0 == b'E' {
        return fin;
    }
    wire::read_until_ready(s, TIMEOUT)
        .await
        .expect("login")
        .pop()
        .expect("ReadyForQuery")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tls_end_sends_close_notify() {
    let certs = Certs::generate();
    let c = start_cluster();
    let p = start_pivot(&c, tls_opts(&certs)).await;
    let startup = wire::startup(&[("user", "app"), ("database", "bench")]);

    // A CancelRequest inside TLS (libpq 17+): nothing answered, then close_notify.
    let mut tls = client::ssl_request(p.addr, &certs, None).await.unwrap();
    tls.write_all(&wire::cancel_request(4242, &[1, 2, 3, 4]))
        .await
        .unwrap();
    assert!(until_close_notify(&mut tls, "cancel").await.is_empty());

    // A FATAL: a wrong password.
    let mut tls = client::ssl_request(p.addr, &certs, None).await.unwrap();
    tls.write_all(&startup).await.unwrap();
    let (tag, body) = scram(&mut tls, "wrong").await;
    assert_eq!(tag, b'E');
    assert_eq!(error_field(&body, b'C').as_deref(), Some("28P01"));
    assert!(until_close_notify(&mut tls, "wrong password")
        .await
        .is_empty());

    // A FATAL before the login: direct TLS without ALPN.
    let mut tls = client::direct(p.addr, &certs, None).await.unwrap();
    let rest = until_close_notify(&mut tls, "direct TLS without ALPN").await;
    assert_eq!(first_error(&rest), Some(("FATAL".into(), "08P01".into())));

    // A Terminate after a login.
    let mut tls = client::ssl_request(p.addr, &certs, None).await.unwrap();
    tls.write_all(&startup).await.unwrap();
    assert_eq!(scram(&mut tls, "secret").await.0, b'Z');
    tls.write_all(&wire::message(b'X', b"")).await.unwrap();
    assert!(until_close_notify(&mut tls, "Terminate").await.is_empty());

    // The admin console: a Terminate.
    let console = p.admin_addr.expect("console");
    let mut tls = client::ssl_request(console, &certs, None).await.unwrap();
    tls.write_all(&wire::startup(&[
        ("user", "admin"),
        ("database", "pgpivot"),
    ]))
    .await
    .unwrap();
    assert_eq!(scram(&mut tls, ADMIN_PASSWORD).await.0, b'Z');
    tls.write_all(&wire::message(b'X', b"")).await.unwrap();
    assert!(until_close_notify(&mut tls, "console Terminate")
        .await
        .is_empty());

    // A cancel of a running query from libpq over TLS (PQcancelBlocking): no error for the
    // canceller, the query cancelled.
    let conn = format!("{} sslmode=require", p.conn_string());
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args(["-c", TLS_CANCEL, &conn]).kill_on_drop(true);
    let run =
        tokio::spawn(
            async move { tokio::time::timeout(Duration::from_secs(60), cmd.output()).await },
        );
    wait_active(&c, "SELECT pg_sleep(20)", 1).await;
    let out = run
        .await
        .unwrap()
        .expect("python timed out")
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cancelled []\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A shutdown: FATAL 57P01, then close_notify.
    let mut tls = client::ssl_request(p.addr, &certs, None).await.unwrap();
    tls.write_all(&startup).await.unwrap();
    assert_eq!(scram(&mut tls, "secret").await.0, b'Z');
    let reader = tokio::spawn(async move { until_close_notify(&mut tls, "shutdown").await });
    p.stop().await;
    let rest = reader.await.unwrap();
    assert_eq!(first_error(&rest), Some(("FATAL".into(), "57P01".into())));
}

const TLS_CANCEL: &str = r#"
import sys, threading, psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True)
errors = []
def cancel():
    try:
        conn.cancel_safe()
    except Exception as e:
        errors.append(repr(e))
timer = threading.Timer(1.0, cancel)
timer.start()
try:
    conn.execute("SELECT pg_sleep(20)")
    result = "not cancelled"
except psycopg.errors.QueryCanceled:
    result = "cancelled"
timer.join()
print(result, errors)
"#;
