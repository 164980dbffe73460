//! Transaction pooling against real PostgreSQL: prepared statements, SET replay, cancel,
//! pinning, pool exhaustion, bad-state connections, pgbench -M prepared through a small pool.

use std::time::{Duration, Instant};

use pgpivot_tests::e2e::wait_active;
use pgpivot_tests::{
    connect, pgbench_app, pgbench_init, Cluster, ClusterOptions, Pivot, PivotOptions,
};

fn tx_opts(pool_size: usize) -> PivotOptions {
    PivotOptions {
        env: vec![
            ("PGPIVOT_POOL_MODE".into(), "transaction".into()),
            ("PGPIVOT_POOL_SIZE".into(), pool_size.to_string()),
        ],
        ..Default::default()
    }
}

fn primary_only() -> Cluster {
    Cluster::start(ClusterOptions {
        standbys: 0,
        ..Default::default()
    })
    .expect("cluster")
}

/// A new client, retrying (10 s at most) while pgpivot still refuses logins.
async fn client_once_admitted(pivot: &Pivot, what: &str) -> tokio_postgres::Client {
    let by = Instant::now() + Duration::from_secs(10);
    loop {
        match pivot.client().await {
            Ok(c) => return c,
            Err(e) => {
                assert!(Instant::now() < by, "{what}: {e:#}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Server backends of the app user on the primary (pgpivot's pooled connections).
fn server_pids(cluster: &Cluster) -> Vec<i32> {
    cluster
        .psql(
            0,
            "SELECT pid FROM pg_stat_activity WHERE usename = 'app' ORDER BY pid",
        )
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_share_a_small_pool_with_prepared_statements() {
    let cluster = primary_only();
    let pivot = Pivot::start(&cluster, tx_opts(2)).await.expect("pgpivot");
    let mut tasks = Vec::new();
    for c in 0..10i64 {
        let conn = pivot.conn_string();
        tasks.push(tokio::spawn(async move {
            let client = connect(&conn).await?;
            let stmt = client
                .prepare("SELECT $1::int8 * 2, pg_backend_pid()")
                .await?;
            let mut pids = std::collections::HashSet::new();
            for i in 0..50i64 {
                let row = client.query_one(&stmt, &[&(c * 1000 + i)]).await?;
                assert_eq!(row.get::<_, i64>(0), (c * 1000 + i) * 2);
                pids.insert(row.get::<_, i32>(1));
            }
            anyhow::Ok(pids)
        }));
    }
    let mut all = std::collections::HashSet::new();
    for t in tasks {
        all.extend(t.await.unwrap().expect("client"));
    }
    assert!(
        all.len() <= 2,
        "more server connections than the pool allows: {all:?}"
    );
    assert!(server_pids(&cluster).len() <= 2);
    // A statement the client closes and prepares again, and DISCARD ALL, behave as expected.
    let client = pivot.client().await.unwrap();
    let s = client.prepare("SELECT 41 + 1").await.unwrap();
    assert_eq!(
        client.query_one(&s, &[]).await.unwrap().get::<_, i32>(0),
        42
    );
    drop(s);
    client.batch_execute("DISCARD ALL").await.unwrap();
    let s = client.prepare("SELECT 40 + 3").await.unwrap();
    assert_eq!(
        client.query_one(&s, &[]).await.unwrap().get::<_, i32>(0),
        43
    );
    pivot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_parameters_follow_the_client_across_server_connections() {
    let cluster = primary_only();
    let pivot = Pivot::start(&cluster, tx_opts(2)).await.expect("pgpivot");
    // The first login opens the pool; a, b and c are then all greeted from the pool's shared
    // parameters (the case where a connection can skip re-applying them).
    let warm = pivot.client().await.unwrap();
    warm.simple_query("SELECT 1").await.unwrap();
    let a = pivot.client().await.unwrap();
    let b = pivot.client().await.unwrap();
    a.batch_execute("SET application_name = 'client-a'; SET TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    b.batch_execute("SET application_name = 'client-b'")
        .await
        .unwrap();
    // A client that never SETs anything: it must never see another client's settings (its
    // server connections skip the comparison when nothing changed since they matched it).
    let c = pivot.client().await.unwrap();
    let q = "SELECT current_setting('application_name'), current_setting('TimeZone')";
    // Three clients on two connections: each lands on connections the others used.
    for _ in 0..20 {
        let (ra, rb, rc) = tokio::join!(
            a.query_one(q, &[]),
            b.query_one(q, &[]),
            c.query_one(q, &[])
        );
        let (ra, rb, rc) = (ra.unwrap(), rb.unwrap(), rc.unwrap());
        assert_eq!(ra.get::<_, String>(0), "client-a");
        assert_eq!(ra.get::<_, String>(1), "Asia/Tokyo");
        assert_eq!(rb.get::<_, String>(0), "client-b");
        assert_ne!(rb.get::<_, String>(1), "Asia/Tokyo");
        assert_eq!(rc.get::<_, String>(0), "");
        assert_ne!(rc.get::<_, String>(1), "Asia/Tokyo");
    }
    pivot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_bound_features_pin_the_client() {
    let cluster = primary_only();
    let pivot = Pivot::start(&cluster, tx_opts(2)).await.expect("pgpivot");
    let c = pivot.client().await.unwrap();
    c.batch_execute("CREATE TEMP TABLE scratch (a int); INSERT INTO scratch VALUES (7)")
        .await
        .unwrap();
    // Other clients keep the pool busy; the pinned client still sees its temp table.
    let other = pivot.client().await.unwrap();
    for _ in 0..10 {
        other.simple_query("SELECT 1").await.unwrap();
        let n: i32 = c
            .query_one("SELECT a FROM scratch", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 7);
    }
    c.batch_execute("SELECT pg_advisory_lock(42)")
        .await
        .unwrap();
    let pid1: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let pid2: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        pid1, pid2,
        "a pinned client must keep its server connection"
    );
    let pinned = pivot
        .running
        .as_ref()
        .map(|r| r.pinned_total())
        .unwrap_or(0);
    assert!(pinned >= 1, "pinning must be counted");
    pivot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhaustion_waits_then_times_out_and_bad_state_connections_are_closed() {
    let cluster = primary_only();
    let mut opts = tx_opts(1);
    opts.env
        .push(("PGPIVOT_QUERY_WAIT_TIMEOUT_MS".into(), "800".into()));
    let pivot = Pivot::start(&cluster, opts).await.expect("pgpivot");
    let holder = pivot.client().await.unwrap();
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let waiter = pivot.client().await.unwrap();
    let started = Instant::now();
    let err = waiter
        .simple_query("SELECT 1")
        .await
        .expect_err("pool exhausted");
    assert!(started.elapsed() >= Duration::from_millis(700));
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS),
        "{err}"
    );
    // The waiting client's connection is still usable once the holder commits.
    holder.batch_execute("COMMIT").await.unwrap();
    waiter
        .simple_query("SELECT 1")
        .await
        .expect("usable after the timeout");

    // A client that leaves mid-transaction: its server connection is closed, not reused.
    let leaver = pivot.client().await.unwrap();
    leaver.batch_execute("BEGIN").await.unwrap();
    let left: i32 = leaver
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    drop(leaver);
    // The pool holds one connection: the next client gets a server only once pgpivot has
    // dealt with the abandoned one, and it must be a new one.
    let c = pivot.client().await.unwrap();
    let pid: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(pid, left, "a connection left in a transaction was reused");
    let gone_by = Instant::now() + Duration::from_secs(10);
    while server_pids(&cluster).contains(&left) {
        assert!(
            Instant::now() < gone_by,
            "the abandoned server connection {left} is still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pivot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_connection_the_client_holds() {
    let cluster = primary_only();
    let pivot = Pivot::start(&cluster, tx_opts(3)).await.expect("pgpivot");
    let busy = pivot.client().await.unwrap();
    let bystander = pivot.client().await.unwrap();
    let token = busy.cancel_token();
    let sleeper = tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(20)").await });
    let by = tokio::spawn(async move {
        bystander
            .simple_query("SELECT pg_sleep(1.5)")
            .await
            .map(|_| ())
    });
    // Cancel what is running: a cancel that reaches PostgreSQL before the query does is
    // ignored there, with or without a proxy.
    wait_active(&cluster, "SELECT pg_sleep(20)", 1).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel sent");
    let r = tokio::time::timeout(Duration::from_secs(5), sleeper)
        .await
        .expect("cancelled promptly")
        .unwrap();
    let err = r.expect_err("query must be cancelled");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );
    by.await
        .unwrap()
        .expect("the other client's query is untouched");
    pivot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_fifty_clients_through_a_pool_of_five() {
    let cluster = primary_only();
    pgbench_init(&cluster, 1).expect("pgbench -i");
    let pivot = Pivot::start(&cluster, tx_opts(5)).await.expect("pgpivot");
    let port = pivot.addr.port();
    for mode in ["prepared", "extended", "simple"] {
        let out = tokio::task::spawn_blocking(move || {
            pgbench_app(port, &["-M", mode, "-c", "50", "-j", "2", "-t", "40"])
        })
        .await
        .unwrap()
        .unwrap();
        assert!(out.success(), "-M {mode}: {}\n{}", out.stdout, out.stderr);
        assert!(
            out.stdout
                .contains("number of transactions actually processed: 2000/2000"),
            "-M {mode}: {}",
            out.stdout
        );
        assert!(
            out.stdout.contains("number of failed transactions: 0"),
            "{}",
            out.stdout
        );
    }
    assert!(server_pids(&cluster).len() <= 5);
    pivot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_past_max_client_conn_get_53300() {
    let cluster = primary_only();
    let mut opts = tx_opts(2);
    opts.env
        .push(("PGPIVOT_MAX_CLIENT_CONN".into(), "2".into()));
    let pivot = Pivot::start(&cluster, opts).await.expect("pgpivot");
    let a = pivot.client().await.expect("first");
    let b = pivot.client().await.expect("second");
    let err = pivot
        .client()
        .await
        .expect_err("third client must be refused");
    let code = err
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.code().cloned());
    assert_eq!(
        code,
        Some(tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS),
        "{err:#}"
    );
    // The ones inside keep working, and a slot frees up when one leaves.
    a.simple_query("SELECT 1").await.unwrap();
    drop(b);
    // The slot frees once pgpivot sees b's socket close.
    let c = client_once_admitted(&pivot, "no slot freed after b left").await;
    c.simple_query("SELECT 1").await.unwrap();
    pivot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_set_anything_never_sees_another_clients_settings() {
    let cluster = primary_only();
    // One server connection: every client takes it right after the previous one.
    let pivot = Pivot::start(&cluster, tx_opts(1)).await.expect("pgpivot");
    let warm = pivot.client().await.unwrap();
    warm.simple_query("SELECT 1").await.unwrap();
    // Both greeted from the pool's shared parameters.
    let a = pivot.client().await.unwrap();
    let c = pivot.client().await.unwrap();
    let q = "SELECT current_setting('application_name'), current_setting('TimeZone')";
    let default_tz: String = c.query_one(q, &[]).await.unwrap().get(1);
    for _ in 0..3 {
        a.batch_execute("SET application_name = 'client-a'; SET TimeZone = 'Asia/Tokyo'")
            .await
            .unwrap();
        let rc = c.query_one(q, &[]).await.unwrap();
        assert_eq!(rc.get::<_, String>(0), "");
        assert_eq!(rc.get::<_, String>(1), default_tz);
        let ra = a.query_one(q, &[]).await.unwrap();
        assert_eq!(ra.get::<_, String>(0), "client-a");
        assert_eq!(ra.get::<_, String>(1), "Asia/Tokyo");
        a.batch_execute("RESET ALL").await.unwrap();
    }
    pivot.stop().await;
}

/// Clients with the same startup parameters (here an application_name each, in maps of their
/// own) are recognized as alike when a server connection passes between them, so no SET is
/// sent — but a setting one of them changed must still never reach the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_with_equal_startup_parameters_still_never_share_a_setting() {
    let cluster = primary_only();
    let pivot = Pivot::start(&cluster, tx_opts(1)).await.expect("pgpivot");
    let conn = format!("{} application_name=twin", pivot.conn_string());
    let warm = connect(&conn).await.unwrap();
    warm.simple_query("SELECT 1").await.unwrap();
    let a = connect(&conn).await.unwrap();
    let c = connect(&conn).await.unwrap();
    let q = "SELECT current_setting('application_name'), current_setting('TimeZone'), \
             current_setting('DateStyle')";
    let before = c.query_one(q, &[]).await.unwrap();
    let (default_tz, default_ds): (String, String) = (before.get(1), before.get(2));
    for i in 0..3 {
        // Parameters the server reports (the ones pgpivot can track).
        a.batch_execute("SET TimeZone = 'Asia/Tokyo'; SET DateStyle = 'German'")
            .await
            .unwrap();
        let rc = c.query_one(q, &[]).await.unwrap();
        assert_eq!(rc.get::<_, String>(0), "twin", "round {i}");
        assert_eq!(rc.get::<_, String>(1), default_tz, "round {i}");
        assert_eq!(rc.get::<_, String>(2), default_ds, "round {i}");
        let ra = a.query_one(q, &[]).await.unwrap();
        assert_eq!(ra.get::<_, String>(0), "twin");
        assert_eq!(ra.get::<_, String>(1), "Asia/Tokyo");
        assert!(ra.get::<_, String>(2).starts_with("German"));
        // Back to the shared values: A is alike again, and the connection with it.
        a.batch_execute("RESET TimeZone; RESET DateStyle")
            .await
            .unwrap();
        let ra = a.query_one(q, &[]).await.unwrap();
        assert_eq!(ra.get::<_, String>(1), default_tz);
        let rc = c.query_one(q, &[]).await.unwrap();
        assert_eq!(rc.get::<_, String>(1), default_tz);
    }
    pivot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_refusing_logins_gives_its_own_error_after_the_wait() {
    let cluster = primary_only();
    cluster
        .psql(0, "ALTER ROLE app CONNECTION LIMIT 1")
        .expect("connection limit");
    // The one connection the role may have, taken directly.
    let holder = connect(&cluster.app_conn_string(0))
        .await
        .expect("direct connection");
    holder.simple_query("SELECT 1").await.unwrap();
    let pivot = Pivot::start(
        &cluster,
        PivotOptions {
            primary_wait_timeout_ms: 1500,
            ..Default::default()
        },
    )
    .await
    .expect("pgpivot");
    // 53300 is worth retrying (a slot may free up) but only until the primary wait ends;
    // then the client gets the server's own refusal, not a loop.
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(15), pivot.client())
        .await
        .expect("login answered")
        .expect_err("the role is at its connection limit");
    let waited = started.elapsed();
    let db = err
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.as_db_error())
        .unwrap_or_else(|| panic!("not a server error: {err:#}"));
    assert_eq!(
        db.code(),
        &tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS
    );
    assert!(
        db.message().contains("too many connections for role"),
        "{db:?}"
    );
    assert!(
        waited >= Duration::from_millis(1400),
        "gave up early: {waited:?}"
    );
    // And once the slot frees, logins work again.
    drop(holder);
    let c = client_once_admitted(&pivot, "still refused after the slot freed").await;
    c.simple_query("SELECT 1").await.unwrap();
    pivot.stop().await;
}
