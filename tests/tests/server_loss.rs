//! A server connection that ends while its node stays primary, in both pool modes:
//!
//! * a backend an administrator terminates (`pg_terminate_backend`) ends the client's session
//!   exactly as PostgreSQL does: the server's FATAL, unchanged, then the connection closes —
//!   whether the client was waiting on a query or idle;
//! * an idle pooled connection whose backend was terminated is never handed to a client: the
//!   next client's first query runs on a live connection.

use std::time::{Duration, Instant};

use pgpivot_tests::e2e::{start_cluster, start_pivot};
use pgpivot_tests::{connect, wire, Cluster, Pivot, PivotOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

fn options(mode: &str) -> PivotOptions {
    PivotOptions {
        env: vec![("PGPIVOT_POOL_MODE".into(), mode.into())],
        ..Default::default()
    }
}

/// The app user's backends on node 0 in `state` (`idle`, `active`...).
fn app_backends(c: &Cluster, state: &str) -> Vec<i32> {
    let out = c
        .psql(
            0,
            &format!(
                "SELECT pid FROM pg_stat_activity WHERE usename = 'app' AND state = '{state}' \
                 AND pid <> pg_backend_pid()"
            ),
        )
        .expect("pg_stat_activity");
    out.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Terminates every backend of the app user and waits until none is left.
async fn terminate_app_backends(c: &Cluster) {
    c.psql(
        0,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'",
    )
    .expect("terminate");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app_backends(c, "idle").is_empty() || !app_backends(c, "active").is_empty() {
        assert!(Instant::now() < deadline, "app backends still there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Logged in as app over a unix socket at `path`, after ReadyForQuery.
async fn raw_login(path: &std::path::Path) -> UnixStream {
    let mut s = UnixStream::connect(path).await.expect("unix socket");
    s.write_all(&wire::startup(&[("user", "app"), ("database", "bench")]))
        .await
        .expect("startup");
    wire::read_until_ready(&mut s, Duration::from_secs(10))
        .await
        .expect("login");
    s
}

fn pivot_socket(p: &Pivot) -> std::path::PathBuf {
    p.socket_dir.path().join(format!(".s.PGSQL.{}", p.port))
}

fn direct_socket(c: &Cluster) -> std::path::PathBuf {
    let n = c.node(0);
    n.socket_dir.join(format!(".s.PGSQL.{}", n.port))
}

/// What the client sees after `sql`: every message up to the end of the stream (or the next
/// ReadyForQuery), and whether the stream ended.
async fn after(s: &mut UnixStream, sql: &str) -> (Vec<(u8, Vec<u8>)>, bool) {
    s.write_all(&wire::query(sql)).await.expect("query");
    read_to_end_or_ready(s).await
}

async fn read_to_end_or_ready(s: &mut UnixStream) -> (Vec<(u8, Vec<u8>)>, bool) {
    let mut got = Vec::new();
    let deadline = Duration::from_secs(15);
    let ended = tokio::time::timeout(deadline, async {
        loop {
            match wire::read_message(s).await {
                Ok(Some(m)) => {
                    let ready = m.0 == b'Z';
                    got.push(m);
                    if ready {
                        return false;
                    }
                }
                Ok(None) | Err(_) => return true,
            }
        }
    })
    .await
    .expect("neither ReadyForQuery nor the end of the stream within 15 s");
    (got, ended)
}

/// The error messages as (severity, SQLSTATE, message, detail).
fn errors(messages: &[(u8, Vec<u8>)]) -> Vec<(String, String, String)> {
    messages
        .iter()
        .filter(|(t, _)| *t == b'E')
        .map(|(_, b)| {
            let f = |c| wire::error_field(b, c).unwrap_or_default();
            (f(b'V'), f(b'C'), f(b'M'))
        })
        .collect()
}

const SELF_TERMINATE: &str = "SELECT pg_terminate_backend(pg_backend_pid())";

async fn terminated_while_waiting(c: &Cluster, p: &Pivot, mode: &str) {
    let mut direct = raw_login(&direct_socket(c)).await;
    let (want, direct_ended) = after(&mut direct, SELF_TERMINATE).await;
    assert!(direct_ended, "PostgreSQL closes the connection");
    let mut s = raw_login(&pivot_socket(p)).await;
    let (got, ended) = after(&mut s, SELF_TERMINATE).await;
    assert_eq!(
        errors(&got),
        errors(&want),
        "{mode}: the server's FATAL, unchanged"
    );
    assert!(
        ended,
        "{mode}: the client connection is closed, as PostgreSQL closes it"
    );

    // Inside a transaction too.
    let mut s = raw_login(&pivot_socket(p)).await;
    after(&mut s, "BEGIN").await;
    let (got, ended) = after(&mut s, SELF_TERMINATE).await;
    assert_eq!(errors(&got), errors(&want), "{mode}: in a transaction");
    assert!(ended, "{mode}: closed in a transaction");
}

async fn terminated_while_idle(c: &Cluster, p: &Pivot) {
    // Session mode: the idle client holds its server connection; PostgreSQL's FATAL reaches
    // it at once, then the end of the stream.
    let mut direct = raw_login(&direct_socket(c)).await;
    let mut s = raw_login(&pivot_socket(p)).await;
    after(&mut direct, "SELECT 1").await;
    after(&mut s, "SELECT 1").await;
    terminate_app_backends(c).await;
    let (want, direct_ended) = read_to_end_or_ready(&mut direct).await;
    let (got, ended) = read_to_end_or_ready(&mut s).await;
    assert!(direct_ended && ended, "both connections end");
    assert_eq!(errors(&got), errors(&want), "the server's FATAL, unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_backend_ends_the_session_as_postgresql_does() {
    let c = start_cluster();
    for mode in ["session", "transaction"] {
        let p = start_pivot(&c, options(mode)).await;
        terminated_while_waiting(&c, &p, mode).await;
        if mode == "session" {
            terminated_while_idle(&c, &p).await;
        }
        // pgpivot itself is fine: new clients work.
        let client = p.client().await.expect("a new client");
        client.simple_query("SELECT 1").await.expect("select 1");
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_idle_pooled_connections_are_not_handed_out() {
    let c = start_cluster();
    for mode in ["transaction", "session"] {
        let p = start_pivot(&c, options(mode)).await;
        for round in 0..3 {
            if mode == "transaction" {
                // The client keeps its session; its connection sits in the pool between
                // transactions.
                let client = p.client().await.expect("client");
                client.simple_query("SELECT 1").await.expect("first query");
                terminate_app_backends(&c).await;
                client
                    .simple_query("SELECT 2")
                    .await
                    .unwrap_or_else(|e| panic!("{mode} round {round}: {e:?}"));
            } else {
                // A client leaves; its connection is reset and pooled, then terminated; the
                // next client logs in and queries.
                let first = p.client().await.expect("client");
                first.simple_query("SELECT 1").await.expect("first query");
                drop(first);
                let deadline = Instant::now() + Duration::from_secs(10);
                while app_backends(&c, "idle").is_empty() {
                    assert!(Instant::now() < deadline, "no pooled connection");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                terminate_app_backends(&c).await;
                let next = connect(&p.conn_string())
                    .await
                    .expect("next client logs in");
                next.simple_query("SELECT 2")
                    .await
                    .unwrap_or_else(|e| panic!("{mode} round {round}: {e:?}"));
            }
        }
        p.stop().await;
    }
}
