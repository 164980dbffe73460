//! Split brain (design 1.3): after a failover the old primary comes back as a primary on its old
//! timeline. pgpivot keeps writes on the node with the newer timeline and never sends a
//! statement to the stale one — even when the new primary then disappears.

use std::time::Duration;

use pgpivot_tests::{Cluster, ClusterOptions, Pivot, PivotOptions};

async fn write(pivot: &Pivot, id: i64) -> anyhow::Result<String> {
    let c = pivot.client().await?;
    let row = c
        .query_one(
            "INSERT INTO pgpivot_probe (id) VALUES ($1) RETURNING node",
            &[&id],
        )
        .await?;
    Ok(row.get(0))
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pivot.primary(), None);
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
