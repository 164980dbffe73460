//! Failover through pgpivot: the primary is killed (`kill -9` of the postmaster), the standby is
//! promoted, and pgpivot routes new connections and transactions to it without a restart.

use std::time::{Duration, Instant};

use pgpivot_tests::e2e::insert_row;
use pgpivot_tests::{connect, Cluster, ClusterOptions, Pivot, PivotOptions};

fn cluster() -> Cluster {
    Cluster::start(ClusterOptions::default()).expect("cluster start")
}

/// Polls `pg_is_in_recovery()` on a standby directly, every ~10 ms, and returns when it first
/// answers `false`: the moment of the promotion as a client of that node sees it.
async fn promotion_seen(conn: String) -> Instant {
    let c = connect(&conn)
        .await
        .expect("direct connection to the standby");
    loop {
        let row = c
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .expect("pg_is_in_recovery()");
        if !row.get::<_, bool>(0) {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Returns when pgpivot's routing table names `node` (woken by every publish).
async fn routed_to(topology: std::sync::Arc<pgpivot::topology::Topology>, node: usize) -> Instant {
    loop {
        let notified = topology.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if topology.current().primary.as_ref().map(|p| p.node_id) == Some(node) {
            return Instant::now();
        }
        notified.await;
    }
}

/// Signed milliseconds from `from` to `to` (a probe may see the promotion a few ms before the
/// test's own poll does).
fn ms(from: Instant, to: Instant) -> i128 {
    if to >= from {
        (to - from).as_millis() as i128
    } else {
        -((from - to).as_millis() as i128)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_the_promoted_standby_within_one_probe_interval() {
    const INTERVAL_MS: u64 = 300;
    // Probe latency on a loaded 2-core machine: a new connection with SCRAM login, one query;
    // for the first write also pgpivot's login to the new primary.
    const SLACK_MS: u64 = 300;
    let cluster = cluster();
    let opts = PivotOptions {
        check_interval_ms: INTERVAL_MS,
        ..Default::default()
    };
    let pivot = Pivot::start(&cluster, opts).await.expect("pgpivot");
    assert_eq!(pivot.primary(), Some(0));
    assert_eq!(insert_row(&pivot.conn_string(), 1).await.unwrap(), "node0");

    cluster.kill9(0).expect("kill primary");
    // pgpivot notices a refused probe at once: no primary until the promotion.
    tokio::time::timeout(Duration::from_secs(5), async {
        while pivot.primary().is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("primary marked lost");

    // Three watchers, started before the promotion: the standby itself, pgpivot's routing
    // table, and a client that writes through pgpivot (it waits during the gap).
    let promoted = tokio::spawn(promotion_seen(cluster.check_conn_string(1)));
    let topology = pivot.running.as_ref().unwrap().topology();
    let routed = tokio::spawn(routed_to(topology, 1));
    let conn = pivot.conn_string();
    let writer = tokio::spawn(async move {
        let node = insert_row(&conn, 2).await;
        (node, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!writer.is_finished(), "a write succeeded with no primary");

    tokio::task::block_in_place(|| cluster.promote(1)).expect("promote standby");
    let wait = Duration::from_secs(10);
    let promoted = tokio::time::timeout(wait, promoted)
        .await
        .expect("promotion seen")
        .unwrap();
    let routed = tokio::time::timeout(wait, routed)
        .await
        .expect("routed")
        .unwrap();
    let (node, written) = tokio::time::timeout(wait, writer)
        .await
        .expect("written")
        .unwrap();
    assert_eq!(node.expect("write after failover"), "node1");
    let (to_routed, to_write) = (ms(promoted, routed), ms(promoted, written));
    eprintln!(
        "failover timing (probe interval {INTERVAL_MS} ms): promotion -> routed {to_routed} ms, \
         promotion -> first write {to_write} ms"
    );
    let bound = (INTERVAL_MS + SLACK_MS) as i128;
    assert!(
        to_routed <= bound,
        "routing switched {to_routed} ms after the promotion (bound {bound} ms)"
    );
    assert!(
        to_write <= bound,
        "first write {to_write} ms after the promotion (bound {bound} ms)"
    );
    assert_eq!(cluster.count_rows(1, "pgpivot_probe").unwrap(), 2);
    pivot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_opened_during_the_gap_wait_for_the_new_primary() {
    let cluster = cluster();
    let pivot = Pivot::start(&cluster, PivotOptions::default())
        .await
        .expect("pgpivot");
    cluster.kill9(0).expect("kill primary");
    tokio::time::timeout(Duration::from_secs(5), async {
        while pivot.primary().is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("primary marked lost");

    // Clients arriving now must wait, not fail.
    let conn = pivot.conn_string();
    let waiters: Vec<_> = (0..5)
        .map(|i| {
            let conn = conn.clone();
            tokio::spawn(async move { insert_row(&conn, 100 + i).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    for w in &waiters {
        assert!(!w.is_finished(), "a client did not wait for the primary");
    }
    cluster.promote(1).expect("promote");
    for w in waiters {
        let node = w
            .await
            .unwrap()
            .expect("waiting client succeeded after promotion");
        assert_eq!(node, "node1");
    }
    // One failover, its gap measured from the loss (the clients waited 800 ms of it).
    let (_, m) = pivot.http_get("/metrics").await.expect("GET /metrics");
    assert!(m.contains("\npgpivot_failovers_total 1\n"), "{m}");
    let gap: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("pgpivot_failover_gap_seconds_sum "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(gap >= 0.8, "gap {gap} s\n{m}");
    pivot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_primary_times_out_with_57p03() {
    let cluster = cluster();
    let opts = PivotOptions {
        primary_wait_timeout_ms: 700,
        ..Default::default()
    };
    let pivot = Pivot::start(&cluster, opts).await.expect("pgpivot");
    cluster.kill9(0).expect("kill primary");
    // Connect only once pgpivot knows the primary is gone (else the client might still reach it).
    tokio::time::timeout(Duration::from_secs(5), async {
        while pivot.primary().is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("primary marked lost");
    let started = Instant::now();
    let err = connect(&pivot.conn_string())
        .await
        .expect_err("no primary: connection must fail after the wait");
    let waited = started.elapsed();
    let code = err
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.code().cloned());
    assert_eq!(
        code,
        Some(tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW),
        "{err:#}"
    );
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );
    assert!(
        err.to_string().contains("no primary") || format!("{err:#}").contains("no primary"),
        "{err:#}"
    );
    pivot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_move_and_pinned_sessions_end_with_57p01() {
    let cluster = cluster();
    let pivot = Pivot::start(&cluster, PivotOptions::default())
        .await
        .expect("pgpivot");
    let idle = pivot.client().await.expect("connect");
    idle.simple_query("SET application_name = 'mover'")
        .await
        .expect("set");
    // A session holding LISTEN state cannot move: it is told, at once, before it sends
    // anything else, and nothing it might send afterwards reaches the orphaned backend.
    let (pinned, mut connection) =
        tokio_postgres::connect(&pivot.conn_string(), tokio_postgres::NoTls)
            .await
            .expect("connect");
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let r = (&mut connection).await;
        let _ = tx.send(r);
    });
    pinned.simple_query("LISTEN chan").await.expect("listen");

    cluster.kill9(0).expect("kill primary");
    cluster.promote(1).expect("promote");
    let ended = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("pinned session ended promptly")
        .expect("connection task");
    let err = ended.expect_err("pinned connection must end with an error");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::ADMIN_SHUTDOWN),
        "{err}"
    );
    // The idle session got no error: its next query runs on the new primary, with its
    // session parameters re-applied.
    pivot.wait_primary(1, Duration::from_secs(5)).await.unwrap();
    let row = idle
        .query_one(
            "SELECT current_setting('cluster_name'), current_setting('application_name')",
            &[],
        )
        .await
        .expect("idle session moved without an error");
    assert_eq!(row.get::<_, String>(0), "node1");
    assert_eq!(row.get::<_, String>(1), "mover");
    pivot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sent_to_a_demoted_primary_by_a_running_session() {
    // A clean switchover without kill: the standby is promoted while the old primary keeps
    // running (two nodes answer "primary"); the newer timeline wins, and a session that was on
    // the old primary cannot write there any more.
    let cluster = cluster();
    let pivot = Pivot::start(&cluster, PivotOptions::default())
        .await
        .expect("pgpivot");
    let client = pivot.client().await.expect("connect");
    client
        .execute("INSERT INTO pgpivot_probe (id) VALUES (1)", &[])
        .await
        .expect("insert");
    cluster.wait_caught_up(1).expect("caught up");
    cluster.promote(1).expect("promote while node 0 still runs");
    pivot
        .wait_primary(1, Duration::from_secs(5))
        .await
        .expect("newer timeline wins");
    // The idle session moves to the new primary; nothing reaches the stale one.
    let node: String = client
        .query_one(
            "INSERT INTO pgpivot_probe (id) VALUES (2) RETURNING node",
            &[],
        )
        .await
        .expect("the idle session moved to the new primary")
        .get(0);
    assert_eq!(node, "node1");
    assert_eq!(
        cluster.count_rows(0, "pgpivot_probe").unwrap(),
        1,
        "stale primary got a write"
    );
    assert_eq!(
        insert_row(&pivot.conn_string(), 3)
            .await
            .expect("new session writes"),
        "node1"
    );
    pivot.stop().await;
}
