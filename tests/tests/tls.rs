//! Client TLS, the Bitnami way (`PGPOOL_ENABLE_TLS` and the `PGPOOL_TLS_*_FILE` variables), with
//! certificates the `openssl` CLI makes per test: psql with sslmode=require and verify-full,
//! client certificates against `PGPOOL_TLS_CA_FILE` (optional, but a foreign one is refused in
//! the handshake), the CVE-2021-23214 refusal on a raw socket, a second SSLRequest inside TLS,
//! PostgreSQL 17 direct TLS (ALPN required) from a rustls client, `PGPIVOT_TLS_REQUIRED`,
//! SHOW CLIENTS' `tls` column, RELOAD picking up a rotated certificate (and keeping it when the
//! new files are bad), pgbench over TLS, and configuration errors naming the variable.

#[path = "tls/certs.rs"]
mod certs;
#[path = "tls/client.rs"]
mod client;

use std::time::{Duration, Instant};

use certs::Certs;
use pgpivot_tests::e2e::{connect_err, psql, psql_ok, start_cluster, start_pivot};
use pgpivot_tests::wire::{self, error_field};
use pgpivot_tests::{pgbench, Pivot, PivotOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "admin-secret";

fn tls_opts(certs: &Certs, extra: &[(&str, &str)]) -> PivotOptions {
    let mut env: Vec<(String, String)> = vec![
        ("PGPOOL_ENABLE_TLS".into(), "yes".into()),
        ("PGPOOL_TLS_CERT_FILE".into(), certs.path("server.crt")),
        ("PGPOOL_TLS_KEY_FILE".into(), certs.path("server.key")),
        ("PGPOOL_TLS_CA_FILE".into(), certs.path("ca.crt")),
        ("PGPOOL_ADMIN_USERNAME".into(), ADMIN.into()),
        ("PGPOOL_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
        ("PGPIVOT_ADMIN_ADDR".into(), "127.0.0.1:0".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    PivotOptions {
        env,
        ..Default::default()
    }
}

/// psql `-c sql` with `conn`; (success, stdout, stderr).
async fn run_psql(conn: &str, sql: &str) -> (bool, String, String) {
    let out = psql(vec!["-d", conn, "-c", sql], &[]).await;
    (
        out.ok,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.stderr,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_client_certificates_show_clients_and_pgbench_over_tls() {
    let certs = Certs::generate();
    let c = start_cluster();
    let p = start_pivot(&c, tls_opts(&certs, &[])).await;
    let conn = p.conn_string();

    // sslmode=require: TLS, as psql itself reports.
    let require = format!("{conn} sslmode=require");
    let (ok, out, err) = run_psql(&require, "\\conninfo").await;
    assert!(ok, "sslmode=require: {err}");
    assert!(out.contains("SSL connection (protocol: TLSv1."), "{out}");
    assert_eq!(psql_ok(&require, "SELECT 40 + 2").await, "42\n");
    // A reply much larger than the socket buffers arrives whole: the last TLS records of a burst
    // must not stay queued in rustls after the socket was full.
    let big = psql_ok(&require, "SELECT repeat('x', 8000000), 'end'").await;
    assert_eq!(big.len(), 8_000_000 + "|end\n".len());
    // verify-full: the certificate chains to the CA and names localhost.
    let verify = format!(
        "{} sslmode=verify-full sslrootcert={}",
        conn.replace("host=127.0.0.1", "host=localhost"),
        certs.path("ca.crt")
    );
    assert_eq!(psql_ok(&verify, "SELECT 'verified'").await, "verified\n");
    // SCRAM-SHA-256-PLUS: libpq checks the tls-server-end-point binding (and refuses to bind
    // without TLS); channel_binding=prefer (libpq's default) above already used it.
    let bound = format!("{require} channel_binding=require");
    assert_eq!(psql_ok(&bound, "SELECT 'bound'").await, "bound\n");
    let unbound = format!("{require} channel_binding=disable");
    assert_eq!(psql_ok(&unbound, "SELECT 'unbound'").await, "unbound\n");
    let (ok, _, err) = run_psql(
        &format!("{conn} sslmode=disable channel_binding=require"),
        "SELECT 1",
    )
    .await;
    assert!(!ok && err.contains("channel binding"), "{err}");
    // A client certificate from the configured CA is accepted (the password is still asked).
    let with_cert = format!(
        "{require} sslcert={} sslkey={}",
        certs.path("client.crt"),
        certs.path("client.key")
    );
    assert_eq!(psql_ok(&with_cert, "SELECT 'cert ok'").await, "cert ok\n");
    // One from another CA is refused in the handshake: no query runs.
    let foreign = format!(
        "{require} sslcert={} sslkey={}",
        certs.path("foreign.crt"),
        certs.path("foreign.key")
    );
    let (ok, out, err) = run_psql(&foreign, "SELECT 'must not run'").await;
    assert!(!ok && out.is_empty(), "a foreign client certificate got in");
    assert!(
        err.contains("SSL") || err.contains("certificate") || err.contains("alert"),
        "unexpected error: {err}"
    );
    // Plaintext still allowed (PGPIVOT_TLS_REQUIRED is off).
    let plain = format!("{conn} sslmode=disable");
    assert_eq!(psql_ok(&plain, "SELECT 'plain'").await, "plain\n");

    // The admin console speaks the same TLS; SHOW CLIENTS tells a TLS client from a plain one.
    let admin = format!(
        "{} sslmode=require",
        p.admin_conn_string(ADMIN, ADMIN_PASSWORD)
    );
    let (ok, out, err) = run_psql(&admin, "\\conninfo").await;
    assert!(ok && out.contains("SSL connection"), "console: {out} {err}");
    let tls_client = hold_session(&require, "tls-holder");
    let plain_client = hold_session(&plain, "plain-holder");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = psql_ok(&admin, "SHOW CLIENTS").await;
        let tls_row = rows.lines().find(|l| l.contains("tls-holder"));
        let plain_row = rows.lines().find(|l| l.contains("plain-holder"));
        if let (Some(t), Some(pl)) = (tls_row, plain_row) {
            // `tls` is the last column: version/cipher suite, empty in plaintext.
            assert!(t.rsplit('|').next().unwrap().starts_with("TLSv1"), "{t}");
            assert_eq!(pl.rsplit('|').next().unwrap(), "", "{pl}");
            break;
        }
        assert!(Instant::now() < deadline, "holders not listed: {rows}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tls_client.abort();
    plain_client.abort();

    // pgbench over TLS: 4 clients, 3 s, no failure.
    pgpivot_tests::pgbench_init(&c, 1).expect("pgbench -i");
    let target = format!(
        "host=127.0.0.1 port={} user=app dbname=bench sslmode=require",
        p.addr.port()
    );
    let out = tokio::task::spawn_blocking(move || {
        pgbench("secret", ["-S", "-c", "4", "-j", "2", "-T", "3", &target])
    })
    .await
    .unwrap()
    .expect("pgbench");
    assert!(out.success(), "pgbench: {}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("number of failed transactions: 0 "),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout
            .contains("number of transactions actually processed: 0/"),
        "{}",
        out.stdout
    );
    p.stop().await;
}

/// A psql session over `conn` that stays connected (pg_sleep) until aborted.
fn hold_session(conn: &str, name: &str) -> tokio::task::JoinHandle<()> {
    let conn = format!("{conn} application_name={name}");
    tokio::spawn(async move {
        let _ = psql(vec!["-d", conn.as_str(), "-c", "SELECT pg_sleep(30)"], &[]).await;
    })
}

/// CVE-2021-23214, a second SSLRequest inside TLS, direct TLS with and without ALPN, and a
/// handshake that never comes (bounded by the authentication timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_handshakes() {
    let certs = Certs::generate();
    let c = start_cluster();
    let p = start_pivot(
        &c,
        tls_opts(&certs, &[("PGPIVOT_AUTHENTICATION_TIMEOUT_MS", "1500")]),
    )
    .await;

    // SSLRequest and StartupMessage in one plaintext write: 'S', then the refusal, then EOF.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let mut bytes = wire::untagged(client::SSL_REQUEST, b"");
    bytes.extend(wire::startup(&[("user", "app"), ("database", "bench")]));
    s.write_all(&bytes).await.unwrap();
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let (tag, body) = client::next(&mut s).await.expect("an error");
    assert_eq!(tag, b'E');
    assert_eq!(error_field(&body, b'C').as_deref(), Some("08P01"));
    assert_eq!(
        error_field(&body, b'M').as_deref(),
        Some("received unencrypted data after SSL request")
    );
    assert!(client::next(&mut s).await.is_none(), "not closed");

    // SSLRequest, TLS, then another SSLRequest inside: refused as a protocol version.
    let mut tls = client::ssl_request(p.addr, &certs, None).await.unwrap();
    tls.write_all(&wire::untagged(client::SSL_REQUEST, b""))
        .await
        .unwrap();
    let (tag, body) = client::next(&mut tls).await.expect("an error");
    assert_eq!(tag, b'E', "second SSLRequest");
    assert!(
        error_field(&body, b'M').unwrap().contains("1234.5679"),
        "{:?}",
        error_field(&body, b'M')
    );

    // Direct TLS with ALPN `postgresql`: the login starts (SASL offer, PLUS first as PostgreSQL).
    let mut tls = client::direct(p.addr, &certs, Some(b"postgresql"))
        .await
        .unwrap();
    tls.write_all(&wire::startup(&[("user", "app"), ("database", "bench")]))
        .await
        .unwrap();
    let (tag, body) = client::next(&mut tls).await.expect("auth request");
    assert_eq!(tag, b'R');
    assert_eq!(&body[..4], &10i32.to_be_bytes(), "SASL");
    assert_eq!(&body[4..], b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
    // Without ALPN: refused inside TLS.
    let mut tls = client::direct(p.addr, &certs, None).await.unwrap();
    let (tag, body) = client::next(&mut tls).await.expect("an error");
    assert_eq!(tag, b'E');
    assert_eq!(error_field(&body, b'C').as_deref(), Some("08P01"));
    assert!(error_field(&body, b'M').unwrap().contains("ALPN"));

    // 'S' answered, then silence: closed once the authentication timeout passes.
    let started = Instant::now();
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(&wire::untagged(client::SSL_REQUEST, b""))
        .await
        .unwrap();
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a silent handshake was never closed");
    assert!(started.elapsed() >= Duration::from_millis(1400));
    // GSSENCRequest is still declined.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(&wire::untagged(80_877_104, b"")).await.unwrap();
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    p.stop().await;
}

/// `PGPIVOT_TLS_REQUIRED=yes`: plaintext TCP clients (data port and console) get FATAL 28000;
/// the unix socket is exempt; TLS clients get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_refuses_plaintext_tcp() {
    let certs = Certs::generate();
    let c = start_cluster();
    let p = start_pivot(&c, tls_opts(&certs, &[("PGPIVOT_TLS_REQUIRED", "yes")])).await;
    let (code, severity, message) = connect_err(&p.conn_string()).await;
    assert_eq!((code.as_str(), severity.as_str()), ("28000", "FATAL"));
    assert!(
        message.starts_with("SSL required") && message.contains("no encryption"),
        "{message}"
    );
    let (ok, _, err) = run_psql(&format!("{} sslmode=disable", p.conn_string()), "SELECT 1").await;
    assert!(!ok && err.contains("SSL required"), "{err}");
    let (code, _, _) = connect_err(&p.admin_conn_string(ADMIN, ADMIN_PASSWORD)).await;
    assert_eq!(code, "28000");
    let require = format!("{} sslmode=require", p.conn_string());
    assert_eq!(psql_ok(&require, "SELECT 'in'").await, "in\n");
    let (dir, port) = (p.socket_dir.path().to_str().unwrap(), p.port.to_string());
    let out = psql(
        vec![
            "-h", dir, "-p", &port, "-U", "app", "-d", "bench", "-c", "SELECT 7",
        ],
        &[],
    )
    .await;
    assert!(out.ok, "unix socket: {}", out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "7\n");
    p.stop().await;
}

/// RELOAD re-reads certificate and key: new handshakes get the new certificate; bad new files
/// are refused (the error names the variable) and the last good certificate stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rotates_the_certificate() {
    let certs = Certs::generate();
    let c = start_cluster();
    let p: Pivot = start_pivot(&c, tls_opts(&certs, &[])).await;
    let first = certs.der("server.crt");
    assert_eq!(client::served_certificate(p.addr, &certs).await, first);

    certs.rotate_server(2002);
    let second = certs.der("server.crt");
    assert_ne!(first, second);
    // Before RELOAD the old certificate is still served.
    assert_eq!(client::served_certificate(p.addr, &certs).await, first);
    let running = p.running.as_ref().unwrap();
    running.reload().await.expect("reload");
    assert_eq!(client::served_certificate(p.addr, &certs).await, second);
    // channel_binding=require: the binding data follows the rotated certificate.
    let require = format!(
        "{} sslmode=require channel_binding=require",
        p.conn_string()
    );
    assert_eq!(psql_ok(&require, "SELECT 'rotated'").await, "rotated\n");

    // A broken key: RELOAD answers the error, naming the variable; the good certificate stays.
    std::fs::write(certs.dir.path().join("server.key"), "not a key").unwrap();
    let err = running
        .reload()
        .await
        .expect_err("a bad key must refuse the reload");
    assert!(err.contains("PGPOOL_TLS_KEY_FILE"), "{err}");
    assert_eq!(client::served_certificate(p.addr, &certs).await, second);
    assert_eq!(psql_ok(&require, "SELECT 'kept'").await, "kept\n");
    p.stop().await;
}

/// Bad or missing files fail the configuration (start, `--check`, RELOAD) naming the variable;
/// PKCS#8, SEC1 and PKCS#1 keys all load.
#[test]
fn configuration_errors_name_the_variable() {
    let certs = Certs::generate();
    let base = |extra: &[(&str, String)]| {
        let mut env: std::collections::HashMap<String, String> = [
            ("PGPOOL_BACKEND_NODES", "0:127.0.0.1:5432".to_string()),
            ("PGPOOL_SR_CHECK_USER", "checker".into()),
            ("PGPOOL_SR_CHECK_PASSWORD", "x".into()),
            ("PGPOOL_POSTGRES_USERNAME", "app".into()),
            ("PGPOOL_POSTGRES_PASSWORD", "secret".into()),
            ("PGPOOL_ENABLE_TLS", "yes".into()),
            ("PGPOOL_TLS_CERT_FILE", certs.path("server.crt")),
            ("PGPOOL_TLS_KEY_FILE", certs.path("server.key")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra {
            env.insert(k.to_string(), v.clone());
        }
        pgpivot::config::Config::from_sources(None, &env).map(|c| c.tls.is_some())
    };
    assert!(base(&[]).expect("PKCS#8 EC key"));
    assert!(base(&[("PGPOOL_TLS_KEY_FILE", certs.path("server.sec1.key"))]).expect("SEC1 key"));
    assert!(base(&[
        ("PGPOOL_TLS_CERT_FILE", certs.path("rsa.crt")),
        ("PGPOOL_TLS_KEY_FILE", certs.path("rsa.pkcs1.key")),
    ])
    .expect("PKCS#1 RSA key"));
    assert!(base(&[("PGPOOL_TLS_CA_FILE", certs.path("ca.crt"))]).unwrap());
    let cases: &[(&[(&str, String)], &str)] = &[
        (
            &[("PGPOOL_TLS_CERT_FILE", "/nonexistent.crt".into())],
            "PGPOOL_TLS_CERT_FILE",
        ),
        (
            &[("PGPOOL_TLS_CERT_FILE", certs.path("server.key"))],
            "PGPOOL_TLS_CERT_FILE",
        ),
        (
            &[("PGPOOL_TLS_KEY_FILE", certs.path("server.crt"))],
            "PGPOOL_TLS_KEY_FILE",
        ),
        (
            &[("PGPOOL_TLS_KEY_FILE", certs.path("client.key"))],
            "PGPOOL_TLS_KEY_FILE",
        ),
        (
            &[("PGPOOL_TLS_CA_FILE", "/nonexistent-ca.crt".into())],
            "PGPOOL_TLS_CA_FILE",
        ),
        (
            &[("PGPOOL_TLS_KEY_FILE", String::new())],
            "PGPOOL_TLS_KEY_FILE",
        ),
        (
            &[
                ("PGPOOL_ENABLE_TLS", "no".into()),
                ("PGPIVOT_TLS_REQUIRED", "yes".into()),
            ],
            "PGPIVOT_TLS_REQUIRED",
        ),
    ];
    for (extra, var) in cases {
        let err = base(extra).expect_err(var).to_string();
        assert!(err.contains(var), "{extra:?}: {err}");
    }
    assert!(!base(&[("PGPOOL_ENABLE_TLS", "no".into())]).unwrap());
}
