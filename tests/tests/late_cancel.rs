//! A cancel request that reaches PostgreSQL after its query ended must not cancel another
//! client's query on the same pooled connection: the connection goes to no one else until
//! PostgreSQL has processed the cancel (which an idle backend ignores).
//!
//! Made deterministic by stopping the postmaster (SIGSTOP), which processes cancel requests:
//! the cancel waits in its listen queue while the query it was meant for ends, and only once the
//! postmaster runs again does it reach the backend.

use std::time::{Duration, Instant};

use pgpivot_tests::e2e::{start_cluster, start_pivot, wait_active};
use pgpivot_tests::PivotOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_cancel_never_hits_the_next_clients_query() {
    let c = start_cluster();
    let p = start_pivot(
        &c,
        PivotOptions {
            env: vec![
                ("PGPIVOT_POOL_MODE".into(), "transaction".into()),
                // One server connection: the next client gets the cancelled client's.
                ("PGPIVOT_POOL_SIZE".into(), "1".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    let a = p.client().await.expect("client a");
    let b = p.client().await.expect("client b");
    let token = a.cancel_token();
    let first = tokio::spawn(async move { a.simple_query("SELECT pg_sleep(1) /* first */").await });
    wait_active(&c, "SELECT pg_sleep(1) /* first */", 1).await;

    let postmaster = c.node(0).postmaster_pid().expect("postmaster pid");
    // SAFETY: a plain kill(2) of the test's own PostgreSQL postmaster.
    unsafe { libc::kill(postmaster, libc::SIGSTOP) };
    let stopped = Instant::now();
    let cancel = tokio::spawn(async move { token.cancel_query(tokio_postgres::NoTls).await });
    // The first query ends on its own: the cancel is still waiting for the postmaster.
    let r = tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .expect("first query ends")
        .expect("task");
    let first_ok = r.is_ok();
    // The next client's query, on the same (only) server connection.
    let second = tokio::spawn(async move {
        b.simple_query("SELECT pg_sleep(2), 'second' /* second */")
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // SAFETY: as above.
    unsafe { libc::kill(postmaster, libc::SIGCONT) };
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "the postmaster was stopped for {:?} (pgpivot's probes would see a dead node)",
        stopped.elapsed()
    );
    let r = tokio::time::timeout(Duration::from_secs(15), second)
        .await
        .expect("second query ends")
        .expect("task");
    assert!(
        r.is_ok(),
        "the second client's query was cancelled by the first client's late cancel: {r:?}"
    );
    assert!(first_ok, "the first query ended on its own");
    let _ = cancel.await;
    p.stop().await;
}
