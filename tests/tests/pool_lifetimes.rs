//! Lifetimes in the pool: idle server connections closed after `PGPIVOT_SERVER_IDLE_TIMEOUT_MS`,
//! connections retired after `PGPIVOT_SERVER_LIFETIME_MS`, and clients idle outside a
//! transaction past `PGPOOL_CLIENT_IDLE_LIMIT` disconnected in both pool modes (not those inside
//! a transaction).

use std::time::{Duration, Instant};

use pgpivot_tests::e2e::db_error;
use pgpivot_tests::{Cluster, ClusterOptions, Pivot, PivotOptions};

fn primary_only() -> Cluster {
    Cluster::start(ClusterOptions {
        standbys: 0,
        ..Default::default()
    })
    .expect("cluster")
}

fn opts(mode: &str, extra: &[(&str, &str)]) -> PivotOptions {
    let mut env: Vec<(String, String)> = vec![
        ("PGPIVOT_POOL_MODE".into(), mode.into()),
        ("PGPIVOT_POOL_SIZE".into(), "3".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    PivotOptions {
        env,
        ..Default::default()
    }
}

fn app_backends(c: &Cluster) -> usize {
    c.psql(
        0,
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'",
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_server_connections_close_and_old_ones_retire() {
    let c = primary_only();
    let p = Pivot::start(
        &c,
        opts("transaction", &[("PGPIVOT_SERVER_IDLE_TIMEOUT_MS", "1500")]),
    )
    .await
    .unwrap();
    let clients = [p.client().await.unwrap(), p.client().await.unwrap()];
    let (a, b) = tokio::join!(
        clients[0].simple_query("SELECT pg_sleep(0.3)"),
        clients[1].simple_query("SELECT pg_sleep(0.3)")
    );
    a.unwrap();
    b.unwrap();
    assert!(app_backends(&c) >= 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app_backends(&c) > 0 {
        assert!(
            Instant::now() < deadline,
            "idle server connections never closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The clients did not notice.
    clients[0].simple_query("SELECT 1").await.unwrap();
    p.stop().await;

    let p = Pivot::start(
        &c,
        opts("transaction", &[("PGPIVOT_SERVER_LIFETIME_MS", "1000")]),
    )
    .await
    .unwrap();
    let client = p.client().await.unwrap();
    let mut pids = std::collections::HashSet::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3500) {
        let row = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap();
        pids.insert(row.get::<_, i32>(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        pids.len() >= 2,
        "a connection past its lifetime was reused: {pids:?}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_idle_past_the_limit_are_disconnected_but_not_inside_a_transaction() {
    let c = primary_only();
    for mode in ["transaction", "session"] {
        let p = Pivot::start(&c, opts(mode, &[("PGPOOL_CLIENT_IDLE_LIMIT", "1")]))
            .await
            .unwrap();
        let idle = p.client().await.unwrap();
        idle.simple_query("SELECT 1").await.unwrap();
        let in_tx = p.client().await.unwrap();
        in_tx.simple_query("BEGIN").await.unwrap();
        let busy = p.client().await.unwrap();
        tokio::time::sleep(Duration::from_millis(3000)).await;
        let err = idle.simple_query("SELECT 1").await.unwrap_err();
        assert!(
            err.is_closed() || db_error(&err).0 == "57P01",
            "{mode}: {err:?}"
        );
        in_tx
            .simple_query("SELECT 1")
            .await
            .unwrap_or_else(|e| panic!("{mode}: a client inside a transaction was cut: {e}"));
        in_tx.simple_query("COMMIT").await.unwrap();
        // A client that keeps talking is never idle.
        let _ = busy;
        let talker = p.client().await.unwrap();
        for _ in 0..6 {
            talker.simple_query("SELECT 1").await.unwrap();
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        p.stop().await;
    }
}
