//! The login on the wire, as PostgreSQL 15 does it: NegotiateProtocolVersion for protocol 3.2
//! and `_pq_.*` options, one SSLRequest and one GSSENCRequest, the SCRAM offer (MD5 when
//! configured), unknown users answered like wrong passwords, a SASLInitialResponse without data,
//! non-UTF-8 and over-long startup values. Each raw exchange is compared with what the fixture's
//! PostgreSQL answers to the same bytes.

use std::net::SocketAddr;
use std::time::Duration;

use pgpivot_tests::e2e::{start_cluster, start_pivot};
use pgpivot_tests::wire::{self, error_field};
use pgpivot_tests::{connect, Cluster, PivotOptions};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

const TIMEOUT: Duration = Duration::from_secs(10);
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;

type Msg = (u8, Vec<u8>);

async fn next<S: AsyncRead + Unpin>(s: &mut S) -> Msg {
    tokio::time::timeout(TIMEOUT, wire::read_message(s))
        .await
        .expect("an answer in time")
        .expect("read")
        .expect("a message, not EOF")
}

/// The code of an Authentication request.
fn auth_code(m: &Msg) -> i32 {
    assert_eq!(m.0, b'R', "expected an authentication request, got {m:?}");
    i32::from_be_bytes([m.1[0], m.1[1], m.1[2], m.1[3]])
}

/// A message as a comparable line: `R10`, `E FATAL 28P01 <message>`, or its tag.
fn shape(m: &Msg) -> String {
    match m.0 {
        b'R' => format!("R{}", auth_code(m)),
        b'E' => format!(
            "E {} {} {}",
            error_field(&m.1, b'S').unwrap_or_default(),
            error_field(&m.1, b'C').unwrap_or_default(),
            error_field(&m.1, b'M').unwrap_or_default()
        ),
        t => (t as char).to_string(),
    }
}

/// A StartupMessage for protocol 3.`minor` with raw parameter values.
fn startup(minor: u16, params: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v);
        body.push(0);
    }
    body.push(0);
    wire::untagged((3 << 16) | i32::from(minor), &body)
}

fn app_startup() -> Vec<u8> {
    startup(0, &[("user", b"app"), ("database", b"bench")])
}

/// SASLInitialResponse for SCRAM-SHA-256; `None` sends the data length -1.
fn sasl_initial(data: Option<&[u8]>) -> Vec<u8> {
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    match data {
        Some(d) => {
            body.extend_from_slice(&(d.len() as i32).to_be_bytes());
            body.extend_from_slice(d);
        }
        None => body.extend_from_slice(&(-1i32).to_be_bytes()),
    }
    wire::message(b'p', &body)
}

/// Runs the SCRAM exchange after AuthenticationSASL was read and returns every message read
/// (SASLContinue, SASLFinal, AuthenticationOk, ... ReadyForQuery), or up to the ErrorResponse.
/// `deferred`: send no initial data and answer the empty challenge with it, as PostgreSQL allows.
async fn scram<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    password: &str,
    deferred: bool,
) -> Vec<Msg> {
    let mut sc = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let mut seen = Vec::new();
    if deferred {
        s.write_all(&sasl_initial(None)).await.unwrap();
        let m = next(s).await;
        assert_eq!(
            (auth_code(&m), &m.1[4..]),
            (11, &b""[..]),
            "empty challenge"
        );
        seen.push(m);
        s.write_all(&wire::message(b'p', sc.message()))
            .await
            .unwrap();
    } else {
        s.write_all(&sasl_initial(Some(sc.message())))
            .await
            .unwrap();
    }
    let m = next(s).await;
    seen.push(m.clone());
    if m.0 == b'E' {
        return seen;
    }
    assert_eq!(auth_code(&m), 11, "SASLContinue");
    sc.update(&m.1[4..]).expect("server-first-message");
    s.write_all(&wire::message(b'p', sc.message()))
        .await
        .unwrap();
    let m = next(s).await;
    seen.push(m.clone());
    if m.0 == b'E' {
        return seen;
    }
    assert_eq!(auth_code(&m), 12, "SASLFinal");
    sc.finish(&m.1[4..]).expect("server signature");
    seen.extend(wire::read_until_ready(s, TIMEOUT).await.expect("login"));
    seen
}

/// The DataRow values of a simple query, as text.
async fn query<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, sql: &str) -> Vec<Vec<String>> {
    s.write_all(&wire::query(sql)).await.unwrap();
    let answer = wire::read_until_ready(s, TIMEOUT).await.expect("answer");
    assert!(
        !answer.iter().any(|m| m.0 == b'E'),
        "`{sql}` failed: {answer:?}"
    );
    answer
        .iter()
        .filter(|m| m.0 == b'D')
        .map(|(_, b)| data_row(b))
        .collect()
}

fn data_row(body: &[u8]) -> Vec<String> {
    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut rest = &body[2..];
    (0..n)
        .map(|_| {
            let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let len = usize::try_from(len).unwrap_or(0);
            let v = String::from_utf8_lossy(&rest[4..4 + len]).into_owned();
            rest = &rest[4 + len..];
            v
        })
        .collect()
}

fn direct(c: &Cluster) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], c.port(0)))
}

async fn tcp(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// The primary's own unix socket (trusted by the fixture's pg_hba; and PostgreSQL refuses GSS
/// encryption there, where over TCP its GSSAPI build would answer 'G').
async fn direct_unix(c: &Cluster) -> UnixStream {
    let n = c.node(0);
    let path = n.socket_dir.join(format!(".s.PGSQL.{}", n.port));
    UnixStream::connect(path).await.expect("unix socket")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_negotiation_like_postgres() {
    let c = start_cluster();
    let p = start_pivot(&c, PivotOptions::default()).await;
    let params = |extra: &[(&'static str, &'static str)],
                  first: Option<(&'static str, &'static str)>| {
        let mut v: Vec<(&str, &[u8])> = first.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        v.extend([("user", &b"app"[..]), ("database", &b"bench"[..])]);
        v.extend(extra.iter().map(|(k, v)| (*k, v.as_bytes())));
        v
    };
    let cases = [
        (2, params(&[], None)),
        (0, params(&[("_pq_.test_option", "on")], None)),
        (
            2,
            params(
                &[("application_name", "neg"), ("_pq_.other", "x")],
                Some(("_pq_.test_option", "on")),
            ),
        ),
    ];
    for (minor, params) in cases {
        let what = format!(
            "3.{minor} with {:?}",
            params.iter().map(|p| p.0).collect::<Vec<_>>()
        );
        let packet = startup(minor, &params);
        let mut answers = Vec::new();
        for addr in [direct(&c), p.addr] {
            let mut s = tcp(addr).await;
            s.write_all(&packet).await.unwrap();
            let v = next(&mut s).await;
            assert_eq!(v.0, b'v', "{what} at {addr}: {v:?}");
            let offer = next(&mut s).await;
            assert_eq!(auth_code(&offer), 10, "{what} at {addr}");
            let login = scram(&mut s, "secret", false).await;
            assert_eq!(login.last().map(|m| m.0), Some(b'Z'), "{what}: {login:?}");
            let sql = "SELECT current_user, current_setting('application_name')";
            let rows = query(&mut s, sql).await;
            answers.push((v.1, rows));
        }
        // PostgreSQL 15: newest version 3.0, then the options it did not recognise, in order.
        let mut want = (3i32 << 16).to_be_bytes().to_vec();
        let options: Vec<&str> = params
            .iter()
            .map(|p| p.0)
            .filter(|k| k.starts_with("_pq_."))
            .collect();
        want.extend_from_slice(&(options.len() as i32).to_be_bytes());
        for o in &options {
            want.extend_from_slice(o.as_bytes());
            want.push(0);
        }
        assert_eq!(answers[0].0, want, "{what}: PostgreSQL's own answer");
        assert_eq!(
            answers[1], answers[0],
            "{what}: pgpivot answers as PostgreSQL"
        );
    }
}

/// Sends `packets` one at a time (encryption requests get one byte back, anything else a
/// message) and describes what came back, ending with "EOF" if the peer closed.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    packets: &[Vec<u8>],
) -> Vec<String> {
    let mut out = Vec::new();
    for packet in packets {
        s.write_all(packet).await.unwrap();
        let code = i32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        if code == SSL_REQUEST || code == GSSENC_REQUEST {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(TIMEOUT, s.read(&mut b))
                .await
                .expect("answer in time")
                .unwrap_or(0);
            if n == 0 {
                out.push("EOF".into());
                return out;
            }
            if b[0] != b'E' {
                out.push((b[0] as char).to_string());
                continue;
            }
            // Not a one-byte answer: an ErrorResponse, whose tag was just read.
            let mut len = [0u8; 4];
            s.read_exact(&mut len).await.unwrap();
            let mut body = vec![0; i32::from_be_bytes(len) as usize - 4];
            s.read_exact(&mut body).await.unwrap();
            out.push(shape(&(b'E', body)));
        } else {
            let m = next(s).await;
            out.push(shape(&m));
            if m.0 != b'E' {
                return out;
            }
        }
        let (rest, closed) = wire::answer_then_close(s, TIMEOUT).await;
        assert!(rest.is_none() && closed, "closed after the error: {rest:?}");
        out.push("EOF".into());
        return out;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ssl_and_one_gssenc_request_like_postgres() {
    let c = start_cluster();
    let p = start_pivot(
        &c,
        PivotOptions {
            env: vec![
                ("PGPOOL_ADMIN_USERNAME".into(), "admin".into()),
                ("PGPOOL_ADMIN_PASSWORD".into(), "adminpw".into()),
                ("PGPIVOT_ADMIN_ADDR".into(), "127.0.0.1:0".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    let console = p.admin_addr.expect("admin console");
    let ssl = wire::untagged(SSL_REQUEST, b"");
    let gss = wire::untagged(GSSENC_REQUEST, b"");
    let fatal = |code: i32| {
        format!(
            "E FATAL 0A000 unsupported frontend protocol 1234.{}: server supports 3.0 to 3.0",
            code & 0xffff
        )
    };
    let cases = [
        (
            "SSL twice",
            vec![ssl.clone(), ssl.clone()],
            vec!["N".into(), fatal(SSL_REQUEST), "EOF".into()],
        ),
        (
            "GSS twice",
            vec![gss.clone(), gss.clone()],
            vec!["N".into(), fatal(GSSENC_REQUEST), "EOF".into()],
        ),
        (
            "SSL, GSS, startup",
            vec![ssl.clone(), gss.clone(), app_startup()],
            vec![],
        ),
        (
            "GSS, SSL, startup",
            vec![gss.clone(), ssl.clone(), app_startup()],
            vec![],
        ),
        ("GSS, startup", vec![gss.clone(), app_startup()], vec![]),
    ];
    for (what, packets, want) in cases {
        // PostgreSQL's unix socket trusts the user (R0); pgpivot over TCP offers SCRAM (R10).
        let mut pg = direct_unix(&c).await;
        let from_pg = exchange(&mut pg, &packets).await;
        let mut pv = tcp(p.addr).await;
        let from_pivot = exchange(&mut pv, &packets).await;
        if want.is_empty() {
            let n = packets.len() - 1;
            assert_eq!(from_pg[..n], vec!["N"; n][..], "{what}: PostgreSQL");
            assert_eq!(from_pg[n], "R0", "{what}: PostgreSQL");
            assert_eq!(from_pivot[..n], from_pg[..n], "{what}: pgpivot");
            assert_eq!(from_pivot[n], "R10", "{what}: pgpivot");
            // The session works after the refused encryption.
            let login = scram(&mut pv, "secret", false).await;
            assert_eq!(login.last().map(|m| m.0), Some(b'Z'), "{what}: {login:?}");
            assert_eq!(query(&mut pv, "SELECT 42").await, [["42"]], "{what}");
            wire::read_until_ready(&mut pg, TIMEOUT)
                .await
                .expect("direct login");
            assert_eq!(query(&mut pg, "SELECT 42").await, [["42"]], "{what}");
        } else {
            assert_eq!(from_pg, want, "{what}: PostgreSQL");
            assert_eq!(from_pivot, want, "{what}: pgpivot");
            // The admin console reads its first packets the same way.
            let mut adm = tcp(console).await;
            assert_eq!(exchange(&mut adm, &packets).await, want, "{what}: console");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_offer_md5_offer_and_unknown_users() {
    let c = start_cluster();
    let p = start_pivot(&c, PivotOptions::default()).await;
    // The default offer is exactly one mechanism, as PostgreSQL 15 without TLS makes it.
    let mut offers = Vec::new();
    for addr in [direct(&c), p.addr] {
        let mut s = tcp(addr).await;
        s.write_all(&app_startup()).await.unwrap();
        offers.push(next(&mut s).await);
    }
    assert_eq!(auth_code(&offers[1]), 10);
    assert_eq!(&offers[1].1[4..], b"SCRAM-SHA-256\0\0");
    assert_eq!(offers[1], offers[0], "same offer as PostgreSQL");

    // An unknown user goes through the same exchange as a wrong password, to the same error.
    let mut transcripts = Vec::new();
    for (user, password) in [("app", "wrong"), ("nobody", "secret")] {
        for addr in [direct(&c), p.addr] {
            let mut s = tcp(addr).await;
            s.write_all(&startup(
                0,
                &[("user", user.as_bytes()), ("database", b"bench")],
            ))
            .await
            .unwrap();
            let mut seen = vec![shape(&next(&mut s).await)];
            seen.extend(scram(&mut s, password, false).await.iter().map(shape));
            let (rest, closed) = wire::answer_then_close(&mut s, TIMEOUT).await;
            assert!(rest.is_none() && closed, "{user} at {addr}: {rest:?}");
            transcripts.push(seen);
        }
    }
    let failed = |u: &str| {
        vec![
            "R10".to_string(),
            "R11".into(),
            format!("E FATAL 28P01 password authentication failed for user \"{u}\""),
        ]
    };
    assert_eq!(transcripts[0], failed("app"), "PostgreSQL, wrong password");
    assert_eq!(transcripts[1], failed("app"), "pgpivot, wrong password");
    assert_eq!(transcripts[2], failed("nobody"), "PostgreSQL, unknown user");
    assert_eq!(transcripts[3], failed("nobody"), "pgpivot, unknown user");

    // A SASLInitialResponse without data: an empty challenge asks for it, the login proceeds.
    for addr in [direct(&c), p.addr] {
        let mut s = tcp(addr).await;
        s.write_all(&app_startup()).await.unwrap();
        assert_eq!(auth_code(&next(&mut s).await), 10);
        let login = scram(&mut s, "secret", true).await;
        assert_eq!(login.last().map(|m| m.0), Some(b'Z'), "{addr}: {login:?}");
        assert_eq!(query(&mut s, "SELECT current_user").await, [["app"]]);
    }

    // PGPOOL_AUTHENTICATION_METHOD=md5: AuthenticationMD5Password with a 4-byte salt.
    let md5 = start_pivot(
        &c,
        PivotOptions {
            auth_method: "md5",
            ..Default::default()
        },
    )
    .await;
    let mut s = tcp(md5.addr).await;
    s.write_all(&app_startup()).await.unwrap();
    let offer = next(&mut s).await;
    assert_eq!((auth_code(&offer), offer.1.len()), (5, 8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_and_long_startup_values() {
    let c = start_cluster();
    let long_user = "u".repeat(63);
    let long_db = "d".repeat(63);
    c.psql(
        0,
        &format!("CREATE ROLE {long_user} LOGIN PASSWORD 'secret'"),
    )
    .expect("create role");
    c.psql_db(0, "postgres", &format!("CREATE DATABASE {long_db}"))
        .expect("create database");
    let env = vec![
        (
            "PGPOOL_POSTGRES_CUSTOM_USERS".to_string(),
            long_user.clone(),
        ),
        (
            "PGPOOL_POSTGRES_CUSTOM_PASSWORDS".to_string(),
            "secret".to_string(),
        ),
    ];
    let p = start_pivot(
        &c,
        PivotOptions {
            env,
            ..Default::default()
        },
    )
    .await;

    // Names of 64+ bytes are cut to 63, so the 63-byte role and database are found, and
    // pgpivot authenticates the client against the same name.
    let (user70, db70) = (format!("{long_user}xxxxxxx"), format!("{long_db}yyyyyyy"));
    for conn in [c.app_conn_string(0), p.conn_string()] {
        let conn = conn
            .replace("user=app", &format!("user={user70}"))
            .replace("dbname=bench", &format!("dbname={db70}"));
        let client = connect(&conn)
            .await
            .unwrap_or_else(|e| panic!("{conn}: {e}"));
        let row = client
            .query_one("SELECT current_user::text, current_database()::text", &[])
            .await
            .expect("query");
        assert_eq!(
            (row.get::<_, String>(0), row.get::<_, String>(1)),
            (long_user.clone(), long_db.clone()),
            "{conn}"
        );
    }

    // A LATIN1 application_name: PostgreSQL 15 keeps printable ASCII and makes the rest '?'.
    let latin1 = startup(
        0,
        &[
            ("user", b"app"),
            ("database", b"bench"),
            ("application_name", b"caf\xe9"),
        ],
    );
    let mut seen = Vec::new();
    for addr in [direct(&c), p.addr] {
        let mut s = tcp(addr).await;
        s.write_all(&latin1).await.unwrap();
        assert_eq!(auth_code(&next(&mut s).await), 10, "{addr}");
        let login = scram(&mut s, "secret", false).await;
        let status: Vec<&[u8]> = login
            .iter()
            .filter(|m| m.0 == b'S' && m.1.starts_with(b"application_name\0"))
            .map(|m| &m.1[..])
            .collect();
        assert_eq!(status, [&b"application_name\0caf?\0"[..]], "{addr}");
        seen.push(query(&mut s, "SHOW application_name").await);
    }
    assert_eq!(seen[0], [["caf?"]]);
    assert_eq!(seen[1], seen[0]);

    // A user name that is not UTF-8 is an unknown user, as it is to PostgreSQL.
    let mut transcripts = Vec::new();
    for addr in [direct(&c), p.addr] {
        let mut s = tcp(addr).await;
        s.write_all(&startup(0, &[("user", b"caf\xe9"), ("database", b"bench")]))
            .await
            .unwrap();
        let mut t = vec![shape(&next(&mut s).await)];
        t.extend(scram(&mut s, "secret", false).await.iter().map(|m| {
            // The message repeats the name, which each side spells its own way.
            shape(m)
                .split(" password")
                .next()
                .unwrap_or_default()
                .to_string()
        }));
        transcripts.push(t);
    }
    assert_eq!(transcripts[0], ["R10", "R11", "E FATAL 28P01"]);
    assert_eq!(transcripts[1], transcripts[0]);

    // Other non-UTF-8 values cannot be carried as given: refused in PostgreSQL's words.
    let mut s = tcp(p.addr).await;
    s.write_all(&startup(0, &[("user", b"app"), ("database", b"caf\xe9")]))
        .await
        .unwrap();
    assert_eq!(
        shape(&next(&mut s).await),
        "E FATAL 22021 invalid byte sequence for encoding \"UTF8\": 0xe9"
    );
}
