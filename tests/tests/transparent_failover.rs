//! The failover test that proves design 1.5: 50 clients in transaction mode and 50 in session
//! mode run short write transactions with think time; the primary is killed (`kill -9`) and the
//! standby promoted. No client connection is dropped; clients idle when pgpivot noticed got no
//! error; each in-flight transaction got exactly one error (class 08 or 57P01) and its connection
//! stayed usable; with synchronous replication every acknowledged id is on the new primary.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgpivot_tests::{connect, Cluster, ClusterOptions, Pivot, PivotOptions};

#[derive(Default)]
struct ClientLog {
    acked: Vec<i64>,
    errors: Vec<String>,
    dropped: bool,
}

struct Flags {
    in_tx: Vec<AtomicBool>,
    /// Set when a client begins a transaction; cleared by the test just before the kill, so
    /// it marks the clients that were busy at some point between the kill and pgpivot noticing.
    began: Vec<AtomicBool>,
    stop: AtomicBool,
    /// Clients that have committed at least once (logins are slow in debug builds: SCRAM).
    warmed: AtomicI64,
}

fn pivot_opts(mode: &str, pool: usize) -> PivotOptions {
    PivotOptions {
        check_interval_ms: 100,
        primary_wait_timeout_ms: 20_000,
        env: vec![
            ("PGPIVOT_POOL_MODE".into(), mode.into()),
            ("PGPIVOT_POOL_SIZE".into(), pool.to_string()),
        ],
        ..Default::default()
    }
}

async fn client_loop(
    conn: String,
    idx: usize,
    next_id: Arc<AtomicI64>,
    flags: Arc<Flags>,
) -> ClientLog {
    let mut log = ClientLog::default();
    let client = match connect(&conn).await {
        Ok(c) => c,
        Err(e) => {
            log.errors.push(format!("connect: {e:#}"));
            log.dropped = true;
            return log;
        }
    };
    let mut n = 0u64;
    while !flags.stop.load(Ordering::Relaxed) {
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        flags.in_tx[idx].store(true, Ordering::SeqCst);
        flags.began[idx].store(true, Ordering::SeqCst);
        let r = async {
            client.batch_execute("BEGIN").await?;
            client
                .execute("INSERT INTO pgpivot_probe (id) VALUES ($1)", &[&id])
                .await?;
            tokio::time::sleep(Duration::from_millis(5)).await;
            client.batch_execute("COMMIT").await
        }
        .await;
        flags.in_tx[idx].store(false, Ordering::SeqCst);
        match r {
            Ok(()) => {
                if log.acked.is_empty() {
                    flags.warmed.fetch_add(1, Ordering::SeqCst);
                }
                log.acked.push(id)
            }
            Err(e) => {
                let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
                log.errors.push(format!("{code} {e}"));
                if client.is_closed() {
                    log.dropped = true;
                    return log;
                }
                // The transaction may be half-open on our side: make sure it is gone.
                let _ = client.batch_execute("ROLLBACK").await;
            }
        }
        n += 1;
        // Think time, staggered per client: long enough that most clients are idle while
        // pgpivot notices the failure, so "idle clients get no error" is really exercised.
        tokio::time::sleep(Duration::from_millis(
            300 + (idx as u64 * 37 + n * 11) % 200,
        ))
        .await;
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_clients_survive_a_kill_9_failover() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("PGPIVOT_TEST_LOG").unwrap_or_else(|_| "pgpivot=info".into()),
        )
        .with_test_writer()
        .try_init();
    let cluster = Cluster::start(ClusterOptions {
        synchronous: true,
        max_connections: 300,
        ..Default::default()
    })
    .expect("cluster");
    let tx_pivot = Pivot::start(&cluster, pivot_opts("transaction", 20))
        .await
        .expect("tx pgpivot");
    let session_pivot = Pivot::start(&cluster, pivot_opts("session", 60))
        .await
        .expect("session pgpivot");
    const PER_MODE: usize = 50;
    let flags = Arc::new(Flags {
        in_tx: (0..2 * PER_MODE).map(|_| AtomicBool::new(false)).collect(),
        began: (0..2 * PER_MODE).map(|_| AtomicBool::new(false)).collect(),
        stop: AtomicBool::new(false),
        warmed: AtomicI64::new(0),
    });
    let next_id = Arc::new(AtomicI64::new(1));
    let mut tasks = Vec::new();
    for i in 0..2 * PER_MODE {
        let conn = if i < PER_MODE {
            tx_pivot.conn_string()
        } else {
            session_pivot.conn_string()
        };
        tasks.push(tokio::spawn(client_loop(
            conn,
            i,
            next_id.clone(),
            flags.clone(),
        )));
    }
    let warm = Instant::now();
    while flags.warmed.load(Ordering::SeqCst) < (2 * PER_MODE) as i64 {
        assert!(
            warm.elapsed() < Duration::from_secs(60),
            "clients did not all start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let before_kill = next_id.load(Ordering::Relaxed) - 1;
    eprintln!("{before_kill} transactions started before the kill");

    // Busy = inside a transaction at the kill, or starting one before pgpivot noticed.
    let busy_at_notice: Arc<Mutex<HashSet<usize>>> = Arc::default();
    for (i, b) in flags.began.iter().enumerate() {
        b.store(false, Ordering::SeqCst);
        if flags.in_tx[i].load(Ordering::SeqCst) {
            busy_at_notice.lock().unwrap().insert(i);
        }
    }
    cluster.kill9(0).expect("kill primary");
    let noticed = Instant::now();
    let mut seen = [false, false];
    while !(seen[0] && seen[1]) && noticed.elapsed() < Duration::from_secs(5) {
        for (k, p) in [&tx_pivot, &session_pivot].iter().enumerate() {
            if !seen[k] && p.primary().is_none() {
                seen[k] = true;
                let range = if k == 0 {
                    0..PER_MODE
                } else {
                    PER_MODE..2 * PER_MODE
                };
                let mut busy = busy_at_notice.lock().unwrap();
                for i in range {
                    if flags.in_tx[i].load(Ordering::SeqCst)
                        || flags.began[i].load(Ordering::SeqCst)
                    {
                        busy.insert(i);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        seen[0] && seen[1],
        "pgpivot did not notice the dead primary"
    );
    cluster.promote(1).expect("promote");
    let promoted = Instant::now();
    tx_pivot
        .wait_primary(1, Duration::from_secs(5))
        .await
        .unwrap();
    session_pivot
        .wait_primary(1, Duration::from_secs(5))
        .await
        .unwrap();
    eprintln!(
        "routed to the new primary {:?} after promotion",
        promoted.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    flags.stop.store(true, Ordering::Relaxed);

    let mut logs = Vec::new();
    for t in tasks {
        logs.push(t.await.expect("client task"));
    }
    let busy = busy_at_notice.lock().unwrap().clone();
    let mut report = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        assert!(!log.dropped, "client {i} was dropped: {:?}", log.errors);
        if !busy.contains(&i) {
            assert!(
                log.errors.is_empty(),
                "client {i} was idle at the failover but got {:?}",
                log.errors
            );
        } else {
            assert!(
                log.errors.len() <= 1,
                "client {i} got more than one error: {:?}",
                log.errors
            );
        }
        for e in &log.errors {
            assert!(
                e.starts_with("08") || e.starts_with("57P01"),
                "client {i}: unexpected error {e}"
            );
        }
        let after = log.acked.iter().filter(|_| true).count();
        report.push(after);
    }
    // Every client kept working after the failover.
    let total_acked: usize = logs.iter().map(|l| l.acked.len()).sum();
    let errors: usize = logs.iter().map(|l| l.errors.len()).sum();
    eprintln!(
        "acked {total_acked} transactions, {errors} errors, {} clients busy at the failover",
        busy.len()
    );
    // With synchronous replication, every acknowledged commit is on the new primary.
    let on_new: HashSet<i64> = cluster
        .psql(1, "SELECT id FROM pgpivot_probe")
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let lost: Vec<i64> = logs
        .iter()
        .flat_map(|l| l.acked.iter().copied())
        .filter(|id| !on_new.contains(id))
        .collect();
    if !lost.is_empty() {
        for (i, l) in logs.iter().enumerate() {
            if l.acked.iter().any(|id| lost.contains(id)) {
                eprintln!(
                    "client {i}: acked {:?} errors {:?} busy {}",
                    l.acked,
                    l.errors,
                    busy.contains(&i)
                );
            }
        }
        let _ = cluster.start_node(0);
        eprintln!(
            "on old primary: {:?}",
            cluster.psql(
                0,
                &format!(
                    "SELECT id, ts FROM pgpivot_probe WHERE id IN ({})",
                    lost.iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            )
        );
        eprintln!(
            "new primary max ts: {:?}",
            cluster.psql(
                1,
                "SELECT max(id), max(ts) FROM pgpivot_probe WHERE id < 300"
            )
        );
    }
    assert!(
        lost.is_empty(),
        "acknowledged commits missing on the new primary: {lost:?}"
    );
    // Clients made progress after the promotion.
    let max_id = next_id.load(Ordering::Relaxed);
    assert!(
        on_new.iter().any(|id| *id > max_id - 200),
        "no writes after the failover"
    );
    tx_pivot.stop().await;
    session_pivot.stop().await;
}
