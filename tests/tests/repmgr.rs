//! The reference HA topology end to end: real repmgr and repmgrd (automatic failover) with two
//! pgpivot instances listing both nodes, as the two proxy Deployments of the reference
//! deployment do.

use std::time::{Duration, Instant};

use pgpivot_tests::demo::{self, DemoOptions, DemoReport, Fault};
use pgpivot_tests::topology::{Topology, TopologyOptions, ADMIN_PASSWORD, ADMIN_USER};
use pgpivot_tests::{connect, pgbench_app, pgbench_init};

async fn topology() -> Topology {
    Topology::start(TopologyOptions::default())
        .await
        .expect("repmgr topology with two pgpivot instances")
}

/// What every failover must look like to clients, whatever took the primary away.
fn assert_clean_failover(r: &DemoReport, writers: u64) {
    assert_eq!(r.old_primary, 0, "{r}");
    assert_eq!(r.new_primary, 1, "{r}");
    for i in &r.instances {
        assert_eq!(i.idle_errors, 0, "idle clients must not notice:\n{r}");
        assert_eq!(i.dropped, 0, "no client connection may break:\n{r}");
        assert!(
            i.writer_errors <= writers,
            "at most one error per writer in flight at the fault:\n{r}"
        );
        assert!(i.first_write_at.is_some(), "writes resumed:\n{r}");
        assert!(i.samples_after_promotion > 0, "{r}");
        assert_eq!(
            i.old_primary_samples_after_promotion, 0,
            "no instance may route to the old primary once the standby is promoted:\n{r}"
        );
        assert_eq!(
            i.left_new_primary_samples, 0,
            "an instance that routes to the new primary stays there:\n{r}"
        );
    }
    assert!(r.acked > 0, "{r}");
    assert_eq!(r.lost(), 0, "acknowledged writes lost:\n{r}");
}

/// Waits until both instances see `node` as a reachable standby and route to `primary`.
async fn wait_both_see_standby(t: &Topology, node: usize, primary: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut ok = true;
        for k in 0..t.pivots.len() {
            let table = t.pool_nodes(k).await.unwrap_or_default();
            let row_ok = table.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.first() == Some(&node.to_string().as_str())
                    && f.get(2) == Some(&"up")
                    && f.get(4) == Some(&"standby")
            });
            ok &= row_ok && t.routes_to(k) == Some(primary);
        }
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "instances do not see node{node} as a standby:\n{}\n{}",
            t.pool_nodes(0).await.unwrap_or_default(),
            t.pool_nodes(1).await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes `n` rows through each instance; returns the nodes that stored them.
async fn write_through_both(t: &Topology, base: i64, n: i64) -> Vec<String> {
    let mut nodes = Vec::new();
    for (k, p) in t.pivots.iter().enumerate() {
        let c = p.client().await.expect("connect through pgpivot");
        for i in 0..n {
            let id = base + k as i64 * 100_000 + i;
            let row = c
                .query_one(
                    "INSERT INTO pgpivot_probe (id) VALUES ($1) RETURNING node",
                    &[&id],
                )
                .await
                .expect("write through pgpivot");
            nodes.push(row.get::<_, String>(0));
        }
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repmgrd_failover_through_two_instances_then_old_primary_rejoins_as_standby() {
    let t = topology().await;
    let opts = DemoOptions::default();
    let report = demo::run(&t, &opts).await.expect("failover demo");
    eprintln!("{report}");
    assert_clean_failover(&report, opts.writers_per_instance as u64);
    for i in &report.instances {
        let gap = i.first_write_at.unwrap_or(f64::MAX) - report.promoted_at;
        assert!(
            gap < 5.0,
            "writes resumed {gap:.3} s after the promotion:\n{report}"
        );
    }

    // The old primary comes back as a standby of the new one (pg_rewind onto timeline 2).
    let c = &t.cluster;
    tokio::task::block_in_place(|| c.repmgr_rejoin(0, 1)).expect("repmgr node rejoin");
    tokio::task::block_in_place(|| c.wait_standby_streaming(1, 0)).expect("node0 streams");
    wait_both_see_standby(&t, 0, 1).await;
    let nodes = write_through_both(&t, 1, 20).await;
    assert!(nodes.iter().all(|n| n == "node1"), "{nodes:?}");
    tokio::task::block_in_place(|| c.wait_caught_up(0)).expect("node0 catches up");
    let on_new = c.count_rows(1, "pgpivot_probe").expect("count on node1");
    let on_old = c.count_rows(0, "pgpivot_probe").expect("count on node0");
    assert_eq!(
        on_new, on_old,
        "the rejoined node replicates the new primary"
    );
    assert!(c.is_in_recovery(0).expect("node0 role"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_primary_is_found_by_timeout_and_stays_fenced_when_it_wakes() {
    let t = topology().await;
    let opts = DemoOptions {
        fault: Fault::Freeze,
        writers_per_instance: 5,
        idle_per_instance: 3,
        promote_timeout: Duration::from_secs(90),
        ..Default::default()
    };
    let report = demo::run(&t, &opts).await.expect("failover demo");
    eprintln!("{report}");
    assert_clean_failover(&report, opts.writers_per_instance as u64);

    // The frozen old primary wakes up as a primary on the old timeline: both instances keep
    // writing to the promoted node and never to it.
    let c = &t.cluster;
    let before_old = c.count_rows(1, "pgpivot_probe").expect("count on node1");
    c.sigcont(0).expect("SIGCONT node0");
    let until = Instant::now() + Duration::from_secs(3);
    let mut base = 10_000_000_000;
    while Instant::now() < until {
        for k in 0..2 {
            assert_eq!(t.routes_to(k), Some(1), "instance {k} left the new primary");
        }
        let nodes = write_through_both(&t, base, 5).await;
        assert!(nodes.iter().all(|n| n == "node1"), "{nodes:?}");
        base += 1_000_000;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(c.count_rows(1, "pgpivot_probe").expect("count") > before_old);
}

async fn console(t: &Topology, k: usize, cmd: &str) {
    let conn = t.pivots[k].admin_conn_string(ADMIN_USER, ADMIN_PASSWORD);
    let admin = connect(&conn).await.expect("admin console");
    admin
        .simple_query(cmd)
        .await
        .unwrap_or_else(|e| panic!("{cmd} on instance {k}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repmgr_switchover_with_pause_and_resume_has_no_client_errors() {
    let t = topology().await;
    tokio::task::block_in_place(|| pgbench_init(&t.cluster, 1)).expect("pgbench -i");
    let mut benches = Vec::new();
    for p in &t.pivots {
        let port = p.addr.port();
        benches.push(tokio::task::spawn_blocking(move || {
            pgbench_app(port, &["-c", "4", "-j", "1", "-T", "12", "-n"])
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for k in 0..2 {
        console(&t, k, "PAUSE").await;
    }
    let c = &t.cluster;
    let out = tokio::task::block_in_place(|| c.repmgr_switchover(1)).expect("switchover");
    assert!(
        out.stderr.contains("switchover was successful"),
        "{}",
        out.stderr
    );
    for p in &t.pivots {
        p.wait_primary(1, Duration::from_secs(15))
            .await
            .expect("pgpivot follows the switchover");
    }
    for k in 0..2 {
        console(&t, k, "RESUME").await;
    }
    for b in benches {
        let out = b.await.expect("pgbench task").expect("pgbench runs");
        assert!(
            out.success() && !out.stderr.contains("aborted") && !out.stdout.contains("failed: 1"),
            "pgbench saw errors:\n{}\n{}",
            out.stdout,
            out.stderr
        );
        assert!(
            out.stdout.contains("number of failed transactions: 0"),
            "{}",
            out.stdout
        );
        eprintln!("{}", out.stdout);
    }
    wait_both_see_standby(&t, 0, 1).await;
    let nodes = write_through_both(&t, 1, 10).await;
    assert!(nodes.iter().all(|n| n == "node1"), "{nodes:?}");
}
