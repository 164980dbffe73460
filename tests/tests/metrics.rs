//! The metrics endpoint against real PostgreSQL: counters follow traffic, `/livez` does not care
//! about backends, `/readyz` follows the primary and draining, and `pgpivot probe` exit codes.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use pgpivot_tests::e2e::{start_cluster, start_pivot};
use pgpivot_tests::{
    free_port, pivot_binary, pivot_env, spawn_binary, wait_listening, PivotOptions,
};

/// The value of the first series named `name` whose labels contain every `labels` fragment
/// (`key="value"`); 0 when there is none (Prometheus shows a counter once it moved).
fn value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            (n == name && labels.iter().all(|f| rest.contains(f))).then(|| v.parse().ok())?
        })
        .next()
        .unwrap_or(0.0)
}

async fn scrape(pivot: &pgpivot_tests::Pivot) -> String {
    let (status, body) = pivot.http_get("/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_traffic_and_gauges_show_state() {
    let cluster = start_cluster();
    let pivot = start_pivot(&cluster, PivotOptions::default()).await;
    let before = scrape(&pivot).await;

    let client = pivot.client().await.expect("client");
    for i in 0..10 {
        client
            .simple_query(&format!("SELECT {i}"))
            .await
            .expect("query");
    }
    client
        .batch_execute("BEGIN; INSERT INTO pgpivot_probe (id) VALUES (1); COMMIT")
        .await
        .expect("transaction");
    // Extended protocol: Parse/Bind/Execute/Sync.
    let row = client.query_one("SELECT $1::int4 + 1", &[&41i32]).await;
    assert_eq!(row.expect("extended query").get::<_, i32>(0), 42);
    let err = client
        .simple_query("SELECT 1/0")
        .await
        .expect_err("division by zero");
    assert_eq!(err.code().map(|c| c.code()), Some("22012"));

    let after = scrape(&pivot).await;
    let grew = |name: &str| value(&after, name, &[]) - value(&before, name, &[]);
    // Ten single-statement transactions, one explicit, the prepare and the execute, the error.
    assert!(grew("pgpivot_transactions_total") >= 12.0, "{after}");
    assert!(grew("pgpivot_queries_total") >= 13.0, "{after}");
    assert!(
        grew("pgpivot_client_to_server_bytes_total") > 100.0,
        "{after}"
    );
    assert!(
        grew("pgpivot_server_to_client_bytes_total") > 100.0,
        "{after}"
    );
    assert!(value(&after, "pgpivot_query_duration_seconds_count", &[]) >= 12.0);
    assert!(value(&after, "pgpivot_pool_wait_seconds_count", &[]) >= 1.0);
    assert_eq!(
        value(&after, "pgpivot_errors_total", &["class=\"22\""]),
        1.0
    );
    // Scrape-time gauges: this client, its server connection, the node.
    assert_eq!(value(&after, "pgpivot_client_connections", &[]), 1.0);
    assert_eq!(
        value(
            &after,
            "pgpivot_server_connections",
            &["node=\"0\"", "state=\"active\""]
        ),
        1.0,
        "{after}"
    );
    assert_eq!(value(&after, "pgpivot_node_up", &["node=\"0\""]), 1.0);
    assert_eq!(value(&after, "pgpivot_node_primary", &["node=\"0\""]), 1.0);
    assert!(
        value(
            &after,
            "pgpivot_node_probe_latency_seconds",
            &["node=\"0\""]
        ) > 0.0
    );
    assert!(
        after.contains("# TYPE pgpivot_transactions_total counter"),
        "{after}"
    );

    // The same numbers reach the pool's stats (what SHOW STATS reads).
    let pools = pivot.running.as_ref().expect("running").pools().all();
    assert_eq!(pools.len(), 1);
    let s = pools[0].1.stats().snapshot();
    assert!(s.transactions >= 12 && s.queries >= 13, "{s:?}");
    assert!(s.bytes_in > 100 && s.bytes_out > 100, "{s:?}");
    assert!(s.query_p99_micros > 0, "{s:?}");

    let (status, _) = pivot.http_get("/nope").await.expect("GET /nope");
    assert_eq!(status, 404);
    drop(client);
    pivot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_counts_every_attachment() {
    let cluster = start_cluster();
    let opts = PivotOptions {
        env: vec![
            ("PGPIVOT_POOL_MODE".into(), "transaction".into()),
            ("PGPIVOT_POOL_SIZE".into(), "1".into()),
        ],
        ..Default::default()
    };
    let pivot = start_pivot(&cluster, opts).await;
    let a = pivot.client().await.expect("client a");
    let b = pivot.client().await.expect("client b");
    for i in 0..5 {
        a.simple_query(&format!("SELECT {i}")).await.expect("a");
        b.batch_execute("BEGIN; SELECT 1; COMMIT").await.expect("b");
    }
    // The connection goes back to the pool right after the reply is written: give it a moment.
    let mut m = scrape(&pivot).await;
    for _ in 0..40 {
        if value(&m, "pgpivot_server_connections", &["state=\"idle\""]) == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        m = scrape(&pivot).await;
    }
    assert!(value(&m, "pgpivot_transactions_total", &[]) >= 10.0, "{m}");
    assert!(value(&m, "pgpivot_queries_total", &[]) >= 10.0, "{m}");
    // Both clients are idle: the one connection is back in the pool.
    assert_eq!(value(&m, "pgpivot_client_connections", &[]), 2.0, "{m}");
    assert_eq!(
        value(&m, "pgpivot_server_connections", &["state=\"idle\""]),
        1.0,
        "{m}"
    );
    assert_eq!(
        value(&m, "pgpivot_server_connections", &["state=\"active\""]),
        0.0,
        "{m}"
    );
    let pools = pivot.running.as_ref().expect("running").pools().all();
    let s = pools[0].1.stats().snapshot();
    assert!(s.transactions >= 10 && s.checkouts >= 10, "{s:?}");
    pivot.stop().await;
}

/// Polls `path` until it answers `want` (or fails after 10 s).
async fn wait_status(pivot: &pgpivot_tests::Pivot, path: &str, want: u16) -> String {
    let start = Instant::now();
    loop {
        let (status, body) = pivot.http_get(path).await.expect("GET");
        if status == want {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{path}: {status} {body}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livez_ignores_backends_readyz_follows_the_primary_and_draining() {
    let cluster = start_cluster();
    let mut pivot = start_pivot(&cluster, PivotOptions::default()).await;
    assert!(wait_status(&pivot, "/readyz", 200).await.contains("node 0"));
    assert_eq!(pivot.http_get("/livez").await.unwrap().0, 200);

    // The only backend stops: not ready, but alive (a restart would not help).
    let c = &cluster;
    tokio::task::block_in_place(|| c.stop_fast(0)).expect("pg_ctl stop");
    let body = wait_status(&pivot, "/readyz", 503).await;
    assert!(body.starts_with("not ready: no primary"), "{body}");
    let (status, body) = pivot.http_get("/livez").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "alive\n"));
    let metrics = pivot.http_get("/metrics").await.unwrap().1;
    assert_eq!(
        value(&metrics, "pgpivot_node_up", &["node=\"0\""]),
        0.0,
        "{metrics}"
    );

    tokio::task::block_in_place(|| c.start_node(0)).expect("start again");
    wait_status(&pivot, "/readyz", 200).await;

    // Draining (SIGTERM) is not ready; a transaction keeps the drain open meanwhile.
    let client = pivot.client().await.expect("client");
    client.batch_execute("BEGIN").await.expect("begin");
    let running = pivot.running.take().expect("running");
    let drain = tokio::spawn(running.drain(Duration::from_secs(10), std::future::pending()));
    let body = wait_status(&pivot, "/readyz", 503).await;
    assert_eq!(body, "not ready: shutting down\n");
    assert_eq!(pivot.http_get("/livez").await.unwrap().0, 200);
    client.batch_execute("COMMIT").await.expect("commit");
    tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .expect("drain ends")
        .unwrap();
    // Stopped with the listeners.
    assert!(pivot.http_get("/livez").await.is_err());
}

fn probe(env: &HashMap<String, String>, what: &str) -> (i32, String) {
    let out = Command::new(pivot_binary().expect("binary"))
        .args(["probe", what])
        .env_clear()
        .envs(env)
        .output()
        .expect("run pgpivot probe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn probe_subcommand_exit_codes() {
    let cluster = start_cluster();
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let opts = PivotOptions {
        env: vec![("PGPIVOT_METRICS_ADDR".into(), metrics.clone())],
        ..Default::default()
    };
    let env = pivot_env(&cluster, &opts, &listen, dir.path());

    // Nothing listens yet: not alive, and nothing was started by the probe.
    let (code, out) = probe(&env, "live");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot connect"), "{out}");

    let mut child = spawn_binary(&env, &[], &dir.path().join("pgpivot.log")).expect("spawn");
    let _kill = KillOnDrop(&mut child);
    wait_listening(&metrics, Duration::from_secs(10)).expect("metrics listening");
    let start = Instant::now();
    while probe(&env, "ready").0 != 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, out) = probe(&env, "ready");
    assert_eq!(
        (code, out.starts_with("ready: primary is node 0")),
        (0, true),
        "{out}"
    );
    assert_eq!(probe(&env, "live"), (0, "alive\n".into()));

    cluster.stop_fast(0).expect("pg_ctl stop");
    let start = Instant::now();
    loop {
        let (code, out) = probe(&env, "ready");
        if code == 1 {
            assert!(out.contains("not ready"), "{out}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still ready: {out}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(probe(&env, "live").0, 0);

    // `probe` loads the same configuration: turned off means nothing to ask.
    let mut off = env.clone();
    off.insert("PGPIVOT_METRICS_ADDR".into(), "off".into());
    assert_eq!(probe(&off, "live").0, 1);
    // A wildcard address is asked on loopback.
    let mut wildcard = env.clone();
    let port = metrics.rsplit(':').next().unwrap();
    wildcard.insert("PGPIVOT_METRICS_ADDR".into(), format!("0.0.0.0:{port}"));
    assert_eq!(probe(&wildcard, "live").0, 0);
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
