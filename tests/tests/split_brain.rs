//! Split brain (design 1.3): after a failover the old primary comes back as a primary on its old
//! timeline. pgpivot keeps writes on the node with the newer timeline and never sends a
//! statement to the stale one — even when the new primary then disappears, and even when a
//! fresh pgpivot starts during the split brain and hears from the stale node first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpivot::server::Running;
use pgpivot::topology::{Health, Topology};
use pgpivot_tests::e2e::insert_row;
use pgpivot_tests::{pivot_env, Cluster, ClusterOptions, Pivot, PivotOptions};

async fn write(pivot: &Pivot, id: i64) -> anyhow::Result<String> {
    insert_row(&pivot.conn_string(), id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_primary_on_the_old_timeline_gets_nothing() {
    let cluster = Cluster::start(ClusterOptions::default()).expect("cluster");
    let opts = PivotOptions {
        primary_wait_timeout_ms: 1500,
        ..Default::default()
    };
    let pivot = Pivot::start(&cluster, opts).await.expect("pgpivot");
    assert_eq!(write(&pivot, 1).await.unwrap(), "node0");
    cluster.wait_caught_up(1).unwrap();

    cluster.kill9(0).unwrap();
    cluster.promote(1).unwrap();
    pivot.wait_primary(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(write(&pivot, 2).await.unwrap(), "node1");

    // The old primary restarts as a primary on timeline 1: two nodes say "not in recovery".
    cluster.start_node(0).expect("restart old primary");
    assert_eq!(cluster.primaries().len(), 2, "split brain set up");
    assert!(cluster.timeline(1).unwrap() > cluster.timeline(0).unwrap());
    let rows_on_stale = cluster.count_rows(0, "pgpivot_probe").unwrap();

    // Several probe rounds with both up: writes stay on node 1.
    for i in 0..10 {
        assert_eq!(write(&pivot, 10 + i).await.unwrap(), "node1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let nodes = pivot.running.as_ref().unwrap().topology().nodes();
    assert!(
        nodes[0].fenced.is_some(),
        "node 0 must be fenced: {:?}",
        nodes[0]
    );

    // The new primary dies too: the stale one still gets nothing; clients wait and time out.
    cluster.kill9(1).unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while pivot.primary().is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("loss of node 1 noticed");
    let reason = pivot
        .running
        .as_ref()
        .unwrap()
        .topology()
        .current()
        .no_primary_reason
        .clone();
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("newest timeline 2")),
        "{reason:?}"
    );
    let err = write(&pivot, 100).await.expect_err("no write may succeed");
    assert!(format!("{err:#}").contains("no primary"), "{err:#}");
    assert_eq!(
        cluster.count_rows(0, "pgpivot_probe").unwrap(),
        rows_on_stale,
        "a statement reached the stale primary"
    );
    pivot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_primary_rejoined_as_standby_is_a_standby() {
    let cluster = Cluster::start(ClusterOptions::default()).expect("cluster");
    let pivot = Pivot::start(&cluster, PivotOptions::default())
        .await
        .expect("pgpivot");
    cluster.kill9(0).unwrap();
    cluster.promote(1).unwrap();
    pivot.wait_primary(1, Duration::from_secs(5)).await.unwrap();
    cluster
        .restart_as_standby_of(0, 1)
        .expect("rejoin as standby");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let nodes = pivot.running.as_ref().unwrap().topology().nodes();
            if nodes[0].role == pgpivot::topology::Role::Standby {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("rejoined node seen as standby");
    assert_eq!(pivot.primary(), Some(1));
    assert_eq!(write(&pivot, 7).await.unwrap(), "node1");
    pivot.stop().await;
}

/// Nodes log every login, so the stale node's log shows whether pgpivot connected to it at all
/// (any statement, read or write, needs a connection first).
fn logging_cluster(standbys: usize) -> Cluster {
    Cluster::start(ClusterOptions {
        standbys,
        extra_conf: vec!["log_connections = on".into()],
        ..Default::default()
    })
    .expect("cluster")
}

/// Node 0 killed, node 1 promoted (timeline 2), node 0 restarted as a primary on timeline 1.
/// With `follower`, that standby is first repointed to stream from node 1 (timeline 2).
fn split_brain(cluster: &Cluster, follower: Option<usize>) {
    cluster
        .psql(0, "INSERT INTO pgpivot_probe (id) VALUES (1)")
        .unwrap();
    for i in 1..cluster.nodes.len() {
        cluster.wait_caught_up(i).unwrap();
    }
    cluster.kill9(0).unwrap();
    cluster.promote(1).unwrap();
    if let Some(f) = follower {
        cluster
            .follow(f, 1)
            .expect("standby follows the new primary");
        assert_eq!(
            cluster.timeline(f).unwrap(),
            2,
            "standby streams timeline 2"
        );
    }
    cluster.start_node(0).expect("restart old primary");
    assert_eq!(cluster.primaries(), [0, 1], "split brain set up");
    assert_eq!(cluster.timeline(0).unwrap(), 1);
    assert_eq!(cluster.timeline(1).unwrap(), 2);
}

/// The app user's logins in node `i`'s server log after byte `from`.
fn app_logins(cluster: &Cluster, i: usize, from: u64) -> Vec<String> {
    let text = std::fs::read(&cluster.node(i).log_file).unwrap_or_default();
    let text = String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).into_owned();
    text.lines()
        .filter(|l| l.contains("connection authorized: user=app "))
        .map(str::to_string)
        .collect()
}

fn log_len(cluster: &Cluster, i: usize) -> u64 {
    std::fs::metadata(&cluster.node(i).log_file).map_or(0, |m| m.len())
}

/// A fresh in-process pgpivot that, unlike `Pivot::start`, does not wait for a primary.
async fn fresh_pgpivot(
    cluster: &Cluster,
    opts: PivotOptions,
) -> (Running, String, tempfile::TempDir) {
    let sock = tempfile::Builder::new()
        .prefix("pgpivot-sock")
        .tempdir()
        .unwrap();
    let env = pivot_env(cluster, &opts, "127.0.0.1:0", sock.path());
    let config = pgpivot::config::Config::from_sources(None, &env).expect("config");
    let running = Running::start(config).await.expect("pgpivot starts");
    let o = cluster.options();
    let conn = format!(
        "host=127.0.0.1 port={} user={} password={} dbname={} connect_timeout=30",
        running.local_addr.port(),
        o.app_user,
        o.app_password,
        o.database
    );
    (running, conn, sock)
}

/// Records every primary the routing table names (woken by each publish, and polling) until
/// `stop` is set.
fn watch_routes(
    topology: Arc<Topology>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<usize>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let notified = topology.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(p) = topology.current().primary.as_ref() {
                if seen.last() != Some(&p.node_id) {
                    seen.push(p.node_id);
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(2), notified).await;
        }
        seen
    })
}

async fn until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Thaws the real primary (node 1): the client that waited meanwhile writes there.
async fn wake_and_see_the_write_land_on_node1(
    cluster: &Cluster,
    client: tokio::task::JoinHandle<anyhow::Result<String>>,
) {
    cluster.sigcont(1).unwrap();
    let node = tokio::time::timeout(Duration::from_secs(15), client)
        .await
        .expect("client finished")
        .unwrap()
        .expect("the waiting client's write succeeds");
    assert_eq!(node, "node1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_pgpivot_waits_for_the_late_new_primary_instead_of_the_stale_one() {
    let cluster = logging_cluster(1);
    split_brain(&cluster, None);
    let stale_rows = cluster.count_rows(0, "pgpivot_probe").unwrap();
    // The real primary answers late: frozen while pgpivot starts (the probe timeout, 3 s, is
    // longer than the freeze, so it is not declared down meanwhile).
    cluster.sigstop(1).unwrap();
    let log_from = log_len(&cluster, 0);
    let (running, conn, _sock) = fresh_pgpivot(&cluster, PivotOptions::default()).await;
    let topology = running.topology();
    let stop = Arc::new(AtomicBool::new(false));
    let routes = watch_routes(topology.clone(), stop.clone());
    let client = tokio::spawn(async move { insert_row(&conn, 100).await });

    // The stale node answers; pgpivot must still wait for node 1.
    until("node 0 answers", Duration::from_secs(10), || {
        topology.nodes()[0].health == Health::Up
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await; // the freeze lasts a while longer
    let table = topology.current();
    assert_eq!(
        table.primary, None,
        "a primary was chosen before node 1 answered"
    );
    let reason = table.no_primary_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("waiting for a first probe answer from node 1"),
        "{reason}"
    );
    assert!(!client.is_finished(), "the client did not wait");

    wake_and_see_the_write_land_on_node1(&cluster, client).await;
    assert_eq!(
        topology.nodes()[0].role,
        pgpivot::topology::Role::StalePrimary
    );
    stop.store(true, Ordering::Relaxed);
    assert_eq!(routes.await.unwrap(), [1], "routes published");
    running.stop_fast().await;
    assert_eq!(
        app_logins(&cluster, 0, log_from),
        Vec::<String>::new(),
        "logins on the stale node"
    );
    assert_eq!(cluster.count_rows(0, "pgpivot_probe").unwrap(), stale_rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_on_the_new_timeline_keeps_the_stale_primary_fenced_when_the_new_one_is_down() {
    let cluster = logging_cluster(2);
    split_brain(&cluster, Some(2));
    let stale_rows = cluster.count_rows(0, "pgpivot_probe").unwrap();
    // The real primary hangs long enough to be declared down (300 ms timeout, 2 retries): all
    // pgpivot hears is the stale primary on timeline 1 and node 2 streaming timeline 2.
    cluster.sigstop(1).unwrap();
    let log_from = log_len(&cluster, 0);
    let opts = PivotOptions {
        check_timeout_ms: 300,
        ..Default::default()
    };
    let (running, conn, _sock) = fresh_pgpivot(&cluster, opts).await;
    let topology = running.topology();
    let stop = Arc::new(AtomicBool::new(false));
    let routes = watch_routes(topology.clone(), stop.clone());
    let client = tokio::spawn(async move { insert_row(&conn, 100).await });

    until("node 1 declared down", Duration::from_secs(15), || {
        let n = topology.nodes();
        n[1].health == Health::Down && n[0].health == Health::Up && n[2].health == Health::Up
    })
    .await;
    // Every node has answered or been declared down: the decision is made, and it is "none".
    until("a decision", Duration::from_secs(5), || {
        topology
            .current()
            .no_primary_reason
            .as_deref()
            .is_some_and(|r| r.contains("newest timeline 2"))
    })
    .await;
    assert_eq!(topology.current().primary, None);
    assert!(topology.nodes()[0].fenced.is_some());
    assert!(!client.is_finished(), "the client did not wait");

    wake_and_see_the_write_land_on_node1(&cluster, client).await;
    stop.store(true, Ordering::Relaxed);
    assert_eq!(routes.await.unwrap(), [1], "routes published");
    running.stop_fast().await;
    assert_eq!(
        app_logins(&cluster, 0, log_from),
        Vec::<String>::new(),
        "logins on the stale node"
    );
    assert_eq!(cluster.count_rows(0, "pgpivot_probe").unwrap(), stale_rows);
}
