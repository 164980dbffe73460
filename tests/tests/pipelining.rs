//! Simple-query pipelining: twenty Query messages in one write, before any reply is read (errors
//! in and out of a transaction, a multi-statement query, an empty one among them), get complete
//! replies in order through pgpivot in both pool modes, byte for byte what PostgreSQL sends.

use std::time::Duration;

use pgpivot_tests::e2e::{login_unix, start_cluster, start_pivot};
use pgpivot_tests::wire;
use pgpivot_tests::{Cluster, PivotOptions};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

const QUERIES: [&str; 20] = [
    "SELECT 1",
    "SELECT 'two', 2",
    "BEGIN",
    "SELECT 4",
    "SELECT 1/0",
    "SELECT 6",
    "ROLLBACK",
    "SELECT 8; SELECT 8.5",
    "SELECT 1/0",
    "SELECT 10",
    "BEGIN",
    "SET LOCAL statement_timeout = '5s'",
    "SELECT 13",
    "COMMIT",
    "SELECT generate_series(1, 5)",
    "",
    "SELECT 17",
    "SELECT 'x' || 18",
    "SELECT pg_sleep(0.01)",
    "SELECT 20",
];

/// Sends every query in one write, then reads until one ReadyForQuery per query.
async fn pipeline<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Vec<(u8, Vec<u8>)> {
    let batch: Vec<u8> = QUERIES.iter().flat_map(|q| wire::query(q)).collect();
    s.write_all(&batch).await.expect("write the batch");
    let mut out = Vec::new();
    for (i, q) in QUERIES.iter().enumerate() {
        let answer = wire::read_until_ready(s, Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("reply to query {i} ({q:?}): {e}"));
        out.extend(answer);
    }
    out
}

/// Logged in as app to the primary directly, over its (trusted) unix socket.
async fn direct(c: &Cluster) -> UnixStream {
    let n = c.node(0);
    let path = n.socket_dir.join(format!(".s.PGSQL.{}", n.port));
    let mut s = UnixStream::connect(path).await.expect("unix socket");
    s.write_all(&wire::startup(&[("user", "app"), ("database", "bench")]))
        .await
        .unwrap();
    wire::read_until_ready(&mut s, Duration::from_secs(10))
        .await
        .expect("direct login");
    s
}

/// The tags of a reply stream, one string per query (`T D C Z`, `E Z`, ...).
fn tags(replies: &[(u8, Vec<u8>)]) -> Vec<String> {
    let mut out = vec![String::new()];
    for (tag, _) in replies {
        out.last_mut().unwrap().push(*tag as char);
        if *tag == b'Z' {
            out.push(String::new());
        }
    }
    out.pop();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_queries_in_one_write_in_both_pool_modes() {
    let c = start_cluster();
    let want = pipeline(&mut direct(&c).await).await;
    let shape = tags(&want);
    assert_eq!(shape.len(), QUERIES.len());
    assert_eq!(shape[4], "EZ", "division by zero");
    assert_eq!(shape[5], "EZ", "aborted transaction");
    assert_eq!(shape[7], "TDCTDCZ", "two statements, one ReadyForQuery");
    assert_eq!(shape[15], "IZ", "empty query");
    for mode in ["session", "transaction"] {
        let opts = PivotOptions {
            env: vec![("PGPIVOT_POOL_MODE".into(), mode.into())],
            ..Default::default()
        };
        let p = start_pivot(&c, opts).await;
        let (mut s, _) = login_unix(&p).await;
        for round in 0..2 {
            let got = pipeline(&mut s).await;
            assert_eq!(tags(&got), shape, "{mode} mode, round {round}");
            assert_eq!(
                got, want,
                "{mode} mode, round {round}: same bytes as PostgreSQL"
            );
        }
        p.stop().await;
    }
}
