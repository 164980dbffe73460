//! Pgpool's `SHOW pool_*` commands on the data port, answered by pgpivot from cached state:
//! psql over TCP and the unix socket (Bitnami's liveness script), simple and extended protocol,
//! inside transactions in both pool modes, fast while a backend hangs, and clients' idle time.

use std::time::{Duration, Instant};

use pgpivot_tests::e2e::{psql, start_pivot};
use pgpivot_tests::{connect, Cluster, ClusterOptions, Pivot, PivotOptions};

fn cluster_with_standby() -> Cluster {
    Cluster::start(ClusterOptions {
        standbys: 1,
        ..Default::default()
    })
    .expect("cluster")
}

/// `psql -tA -c "SHOW pool_nodes;"` rows split on `|`.
async fn pool_nodes_psql(args: Vec<String>) -> (Vec<Vec<String>>, Duration) {
    let start = Instant::now();
    let mut all = args;
    all.extend(["-c".to_string(), "SHOW pool_nodes;".to_string()]);
    let out = psql(all, &[]).await;
    let took = start.elapsed();
    assert!(out.ok, "psql failed: {}", out.stderr);
    let rows = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect();
    (rows, took)
}

fn tcp_args(p: &Pivot) -> Vec<String> {
    vec!["-d".into(), p.conn_string()]
}

fn unix_args(p: &Pivot) -> Vec<String> {
    // Bitnami's healthcheck: -h <socket dir> -p <port>, trusted, database postgres.
    vec![
        "-h".into(),
        p.socket_dir.path().display().to_string(),
        "-p".into(),
        p.port.to_string(),
        "-U".into(),
        "app".into(),
        "-d".into(),
        "postgres".into(),
    ]
}

async fn wait_for_status(p: &Pivot, node: usize, status: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let (rows, _) = pool_nodes_psql(tcp_args(p)).await;
        if rows[node][3] == status {
            return rows[node].clone();
        }
        assert!(
            Instant::now() < deadline,
            "node {node} never became {status}: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_nodes_over_tcp_and_the_unix_socket_reads_by_position() {
    let c = cluster_with_standby();
    let p = start_pivot(&c, PivotOptions::default()).await;
    // Let the standby be probed too.
    let standby = wait_for_status(&p, 1, "up", Duration::from_secs(10)).await;
    for args in [tcp_args(&p), unix_args(&p)] {
        let (rows, _) = pool_nodes_psql(args).await;
        assert_eq!(rows.len(), 2, "{rows:?}");
        for r in &rows {
            assert_eq!(r.len(), 14, "Pgpool 4.5 has 14 columns: {r:?}");
        }
        let (primary, standby) = (&rows[0], &rows[1]);
        assert_eq!(primary[0], "0");
        assert_eq!(primary[1], "127.0.0.1");
        assert_eq!(primary[2], c.port(0).to_string());
        assert_eq!(primary[3], "up");
        assert_eq!(primary[4], "up");
        assert_eq!(primary[5], "0.500000");
        assert_eq!(primary[6], "primary");
        assert_eq!(primary[7], "primary");
        assert_eq!(primary[9], "true");
        assert_eq!(standby[2], c.port(1).to_string());
        assert_eq!(standby[6], "standby");
        assert_eq!(standby[7], "standby");
        assert!(standby[10].parse::<u64>().is_ok(), "delay in bytes");
        assert_eq!(standby[11], "streaming");
        assert_eq!(standby[13].len(), 19, "last_status_change %F %T");
    }
    assert_eq!(standby[3], "up");
    // The other pool_* commands answer with Pgpool's columns.
    for (cmd, columns) in [
        ("SHOW pool_version", 1),
        ("SHOW pool_processes", 8),
        ("SHOW pool_pools", 18),
        ("SHOW pool_health_check_stats", 20),
        ("SHOW pool_backend_stats", 14),
    ] {
        let client = p.client().await.unwrap();
        let rows = client.query(cmd, &[]).await.expect(cmd);
        assert!(!rows.is_empty(), "{cmd} returned no rows");
        assert_eq!(rows[0].len(), columns, "{cmd}");
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_commands_work_inside_transactions_and_with_prepared_statements() {
    let c = cluster_with_standby();
    for mode in ["session", "transaction"] {
        let p = start_pivot(
            &c,
            PivotOptions {
                env: vec![
                    ("PGPIVOT_POOL_MODE".into(), mode.into()),
                    ("PGPIVOT_POOL_SIZE".into(), "2".into()),
                ],
                ..Default::default()
            },
        )
        .await;
        let client = p.client().await.unwrap();
        // Extended protocol: prepared once, executed several times, fresh answers each time.
        let stmt = client.prepare("SHOW pool_nodes").await.expect("prepare");
        assert_eq!(stmt.columns().len(), 14);
        assert_eq!(stmt.columns()[3].name(), "status");
        for _ in 0..3 {
            let rows = client.query(&stmt, &[]).await.expect("execute");
            assert_eq!(rows.len(), 2);
            assert_eq!(rows[0].get::<_, &str>("role"), "primary");
        }
        // Inside a transaction: the transaction carries on around it.
        client
            .batch_execute("CREATE TEMP TABLE IF NOT EXISTS t_show (a int)")
            .await
            .ok();
        client.batch_execute("BEGIN").await.unwrap();
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        let msgs = client.simple_query("SHOW pool_version").await.unwrap();
        assert!(msgs.len() >= 2, "{mode}: a row and a completion");
        let again: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            pid, again,
            "{mode}: the transaction kept its server connection"
        );
        client.batch_execute("COMMIT").await.unwrap();
        // A regular statement reusing the unnamed statement after a local one.
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
        // Mixed in one simple-query string it is PostgreSQL's business (and fails there).
        assert!(client
            .simple_query("SELECT 1; SHOW pool_nodes")
            .await
            .is_err());
        let two: i32 = client.query_one("SELECT 2", &[]).await.unwrap().get(0);
        assert_eq!(two, 2, "{mode}: the session still works");
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_nodes_answers_fast_while_a_backend_hangs() {
    let c = cluster_with_standby();
    let p = start_pivot(
        &c,
        PivotOptions {
            check_timeout_ms: 500,
            env: vec![("PGPOOL_HEALTH_CHECK_MAX_RETRIES".into(), "1".into())],
            ..Default::default()
        },
    )
    .await;
    wait_for_status(&p, 1, "up", Duration::from_secs(10)).await;
    // A client logged in before (its greeting parameters are known).
    let _warm = connect(&p.conn_string()).await.unwrap();
    c.sigstop(1).unwrap();
    let (_, took) = pool_nodes_psql(unix_args(&p)).await;
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} with a hung standby"
    );
    let row = wait_for_status(&p, 1, "down", Duration::from_secs(15)).await;
    assert_eq!(row[4], "down", "pg_status");
    // The primary hangs too: the liveness check still answers at once, over a new connection.
    c.sigstop(0).unwrap();
    let (rows, took) = pool_nodes_psql(unix_args(&p)).await;
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} with a hung primary"
    );
    assert_eq!(rows.len(), 2);
    c.sigcont(0).unwrap();
    c.sigcont(1).unwrap();
    wait_for_status(&p, 1, "up", Duration::from_secs(20)).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_pools_counts_a_clients_idle_seconds_from_its_last_request() {
    let c = Cluster::start(ClusterOptions::default()).expect("cluster");
    for mode in ["transaction", "session"] {
        idle_seconds_in(&c, mode).await;
    }
}

/// In session mode the sleeper keeps its server connection: idle all the same.
async fn idle_seconds_in(c: &Cluster, mode: &str) {
    let p = start_pivot(
        c,
        PivotOptions {
            env: vec![("PGPIVOT_POOL_MODE".into(), mode.into())],
            ..Default::default()
        },
    )
    .await;
    let sleeper = p.client().await.unwrap();
    sleeper.simple_query("SELECT 1").await.unwrap();
    let watcher = p.client().await.unwrap();
    // client_idle_duration of every client, in seconds.
    let idle = || async {
        let rows = watcher.query("SHOW pool_pools", &[]).await.unwrap();
        let mut v: Vec<u64> = rows
            .iter()
            .map(|r| r.get::<_, &str>("client_idle_duration").parse().unwrap())
            .collect();
        v.sort();
        v
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = idle().await;
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(
        before[1] >= 1,
        "the sleeper has been idle 2.5 s: {before:?}"
    );
    sleeper.simple_query("SELECT 1").await.unwrap();
    let after = idle().await;
    assert!(
        after.iter().all(|&s| s <= 1),
        "{mode}: both just spoke: {after:?}"
    );
    p.stop().await;
}
