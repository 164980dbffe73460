//! Failover gap under writes, through each proxy in turn: 20 writers insert unique ids (and 20
//! idle clients sit there) through the proxy; the primary's postmaster is killed with SIGKILL,
//! the standby promoted (`pg_ctl promote`); then, per proxy: time from promotion to the first
//! successful write (and until every writer writes again), failed writes and reconnects,
//! connections the proxy dropped, what the idle clients saw, and acknowledged ids missing on the
//! new primary. Each proxy gets a fresh cluster (the primary dies), with synchronous replication
//! so that an acknowledged commit is on the standby: a missing id is the proxy's doing.
//!
//! PgBouncer has no notion of a primary: it keeps pointing at the dead node's address until it is
//! reconfigured, which the report says as it is. Pgpool-II gets a `failover_command` that only
//! logs (as in Bitnami's image) and finds the promoted node through its streaming-replication
//! check.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pgpivot_benches::args::Args;
use pgpivot_benches::failover::{self, IdleOutcome, Shared};
use pgpivot_benches::targets::{pgbouncer, pgpivot, pgpool, Kind, PoolSettings};
use pgpivot_benches::{machine, reaper};
use pgpivot_tests::{Cluster, ClusterOptions};

struct Opts {
    targets: Vec<Kind>,
    writers: usize,
    idle: usize,
    warmup: Duration,
    promote_delay: Duration,
    max_wait: Duration,
    interval: Duration,
    pool: PoolSettings,
}

const HELP: &str = "\
failover-gap [options]
  --targets LIST            pgpivot-session,pgpivot-tx,pgbouncer,pgpool (default: all four)
  --writers N               clients inserting (default: 20)
  --idle N                  idle clients (default: 20)
  --warmup-ms N             writing before the kill (default: 2000)
  --promote-delay-ms N      from the kill to `pg_ctl promote` (default: 1000)
  --max-wait-ms N           how long after promotion to wait for every writer (default: 10000)
  --interval-ms N           pause between a writer's inserts (default: 10)
  --pgpivot-check-interval-ms N   pgpivot's PGPIVOT_CHECK_INTERVAL_MS (default: 500, its default)
  --pgpool-check-period N   Pgpool-II's health and SR check period, s (default: 1)";

fn parse() -> anyhow::Result<Opts> {
    let mut o = Opts {
        targets: vec![
            Kind::PivotSession,
            Kind::PivotTransaction,
            Kind::PgBouncer,
            Kind::Pgpool,
        ],
        writers: 20,
        idle: 20,
        warmup: Duration::from_millis(2000),
        promote_delay: Duration::from_millis(1000),
        max_wait: Duration::from_millis(10_000),
        interval: Duration::from_millis(10),
        pool: PoolSettings::default(),
    };
    let mut a = Args::from_env();
    let ms = |a: &mut Args, f: &str| -> anyhow::Result<Duration> {
        Ok(Duration::from_millis(a.parse(f)?))
    };
    while let Some(flag) = a.next_flag() {
        match flag.as_str() {
            "--targets" => {
                o.targets = Kind::parse_list(&a.value(&flag)?)?;
                if o.targets.contains(&Kind::Direct) {
                    bail!("--targets: direct has no failover to measure");
                }
            }
            "--writers" => o.writers = a.parse(&flag)?,
            "--idle" => o.idle = a.parse(&flag)?,
            "--warmup-ms" => o.warmup = ms(&mut a, &flag)?,
            "--promote-delay-ms" => o.promote_delay = ms(&mut a, &flag)?,
            "--max-wait-ms" => o.max_wait = ms(&mut a, &flag)?,
            "--interval-ms" => o.interval = ms(&mut a, &flag)?,
            "--pgpivot-check-interval-ms" => o.pool.pivot_check_interval_ms = a.parse(&flag)?,
            "--pgpool-check-period" => o.pool.pgpool_check_period = a.parse(&flag)?,
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{HELP}"),
        }
    }
    // Session poolers need a server connection per client.
    o.pool.pool_size = o.pool.pool_size.max((o.writers + o.idle) as u32 + 2);
    Ok(o)
}

struct Row {
    name: &'static str,
    promote_took: Duration,
    /// From promotion (pg_ctl promote returned) to the first successful write; may be slightly
    /// negative when a write lands while pg_ctl is still returning.
    first_write: Option<f64>,
    all_writers: Option<f64>,
    recovered: usize,
    writers: usize,
    failed_writes: u64,
    failed_connects: u64,
    dropped: u64,
    idle: Vec<IdleOutcome>,
    acked: usize,
    missing: usize,
    errors: Vec<String>,
    note: String,
}

fn main() -> anyhow::Result<()> {
    reaper::install();
    let o = parse()?;
    pgpivot_benches::run_async(65_536, run(&o))
}

async fn run(o: &Opts) -> anyhow::Result<()> {
    let mut header = machine::header();
    header.push(format!(
        "{} writers (one INSERT of a new id, then {} ms pause) and {} idle clients per proxy; \
         kill -9 of the primary's postmaster, `pg_ctl promote` of the standby {} ms later; \
         synchronous replication; pgpivot probe interval {} ms; Pgpool-II health/SR check every {} s, no retries",
        o.writers,
        o.interval.as_millis(),
        o.idle,
        o.promote_delay.as_millis(),
        o.pool.pivot_check_interval_ms,
        o.pool.pgpool_check_period,
    ));
    for l in &header {
        eprintln!("{l}");
    }
    let mut rows = Vec::new();
    for &k in &o.targets {
        eprintln!("{}: fresh cluster", k.name());
        rows.push(one(o, k).await.with_context(|| k.name())?);
    }
    println!("{}", render(&header, o, &rows));
    Ok(())
}

async fn one(o: &Opts, kind: Kind) -> anyhow::Result<Row> {
    let pool = o.pool.clone();
    let (cluster, target) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let cluster = Cluster::start(ClusterOptions {
            synchronous: true,
            max_connections: 300,
            ..pgpivot_benches::cluster_options(300)
        })?;
        let owner = cluster.options().app_user.clone();
        for sql in failover::create_table_sql(&owner) {
            cluster.psql(0, &sql)?;
        }
        let t = match kind {
            Kind::PgBouncer => pgbouncer::start(&cluster, 0, &pool)?,
            Kind::Pgpool => pgpool::start(&cluster, &pool, None)?,
            Kind::PivotSession => pgpivot::start(&cluster, &pool, "session")?,
            _ => pgpivot::start(&cluster, &pool, "transaction")?,
        };
        let c = cluster.options();
        pgpivot_benches::targets::wait_ready(
            t.port,
            &c.app_user,
            &c.app_password,
            &c.database,
            kind.name(),
        )?;
        Ok((Arc::new(cluster), t))
    })
    .await??;
    let c = cluster.options();
    let conn = format!(
        "host=127.0.0.1 port={} user={} password={} dbname={}",
        target.port, c.app_user, c.app_password, c.database
    );
    let op_timeout = o.max_wait;
    let idle = failover::open_idle(&conn, o.idle).await?;
    let shared = Shared::new(o.writers);
    let mut tasks = Vec::new();
    for w in 0..o.writers {
        tasks.push(tokio::spawn(failover::writer(
            shared.clone(),
            conn.clone(),
            w,
            o.interval,
            op_timeout,
        )));
    }
    tokio::time::sleep(o.warmup).await;
    if shared.lock().acked.is_empty() {
        bail!(
            "no write succeeded before the failover: {:?}",
            shared.lock().sample_errors
        );
    }
    let cl = cluster.clone();
    let t_kill = Instant::now();
    tokio::task::spawn_blocking(move || cl.kill9(0)).await??;
    // Any write that succeeds from here on went to the promoted node.
    shared.mark(t_kill);
    tokio::time::sleep(o.promote_delay.saturating_sub(t_kill.elapsed())).await;
    let cl = cluster.clone();
    let t_promote = Instant::now();
    tokio::task::spawn_blocking(move || cl.promote(1)).await??;
    let t_promoted = Instant::now();
    eprintln!(
        "{}: primary killed, standby promoted ({} ms)",
        kind.name(),
        (t_promoted - t_promote).as_millis()
    );
    while shared.recovered() < o.writers && t_promoted.elapsed() < o.max_wait {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle_seen = failover::check_idle(&idle, op_timeout).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    shared.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout(op_timeout + Duration::from_secs(1), t)
            .await
            .is_err()
        {
            abort.abort();
            eprintln!("{}: a writer did not stop in time", kind.name());
        }
    }
    drop(idle);
    let tally = shared.lock().clone();
    let cl = cluster.clone();
    let present = tokio::task::spawn_blocking(move || {
        cl.psql(1, &format!("SELECT id FROM {}", failover::TABLE))
    })
    .await??;
    let present: std::collections::HashSet<u64> = present
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let missing = tally
        .acked
        .iter()
        .filter(|id| !present.contains(id))
        .count();
    let base = (t_promoted - shared.t0).as_secs_f64();
    let firsts: Vec<f64> = tally
        .first_ok_after
        .iter()
        .flatten()
        .map(|d| d.as_secs_f64() - base)
        .collect();
    let note = match (kind, firsts.is_empty()) {
        (Kind::PgBouncer, true) => format!(
            "still pointing at the dead primary's address: no write within {} s (needs reconfiguring)",
            o.max_wait.as_secs()
        ),
        (_, true) => format!("no write within {} s", o.max_wait.as_secs()),
        _ => String::new(),
    };
    let failover_log = target
        .dir
        .as_ref()
        .map(|d| d.path().join(pgpool::FAILOVER_LOG))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| t.lines().count())
        .unwrap_or(0);
    let note = if kind == Kind::Pgpool {
        format!(
            "{note}{}failover_command ran {failover_log} time(s)",
            if note.is_empty() { "" } else { "; " }
        )
    } else {
        note
    };
    tokio::task::spawn_blocking(move || {
        drop(target);
        drop(cluster);
    })
    .await?;
    Ok(Row {
        name: kind.name(),
        promote_took: t_promoted - t_promote,
        first_write: firsts.iter().cloned().reduce(f64::min),
        all_writers: (firsts.len() == o.writers)
            .then(|| firsts.iter().cloned().fold(f64::MIN, f64::max)),
        recovered: firsts.len(),
        writers: o.writers,
        failed_writes: tally.failed_writes,
        failed_connects: tally.failed_connects,
        dropped: tally.dropped,
        idle: idle_seen,
        acked: tally.acked.len(),
        missing,
        errors: tally.sample_errors,
        note,
    })
}

fn render(header: &[String], o: &Opts, rows: &[Row]) -> String {
    let mut s = String::new();
    for l in header {
        s.push_str(l);
        s.push_str("  \n");
    }
    s.push_str(&format!(
        "\n| proxy | first write after promotion | all {} writers writing after | failed writes | failed reconnects | dropped connections (writers) | idle clients ok / error / dropped | acknowledged ids missing | note |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|\n",
        o.writers
    ));
    let secs = |v: Option<f64>| match v {
        Some(v) => format!("{:.0} ms", v * 1000.0),
        None => "–".into(),
    };
    for r in rows {
        let count = |want: IdleOutcome| r.idle.iter().filter(|&&i| i == want).count();
        let all = match r.all_writers {
            Some(v) => secs(Some(v)),
            None => format!("{} of {} by the end", r.recovered, r.writers),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} / {} / {} | {} of {} | {} |\n",
            r.name,
            secs(r.first_write),
            all,
            r.failed_writes,
            r.failed_connects,
            r.dropped,
            count(IdleOutcome::Fine),
            count(IdleOutcome::Error),
            count(IdleOutcome::Dropped),
            r.missing,
            r.acked,
            r.note
        ));
    }
    s.push_str("\nTimes are from `pg_ctl promote -w` returning. Errors clients saw, first few per proxy:\n");
    for r in rows {
        s.push_str(&format!(
            "- {} (promotion took {} ms): {}\n",
            r.name,
            r.promote_took.as_millis(),
            if r.errors.is_empty() {
                "none".to_string()
            } else {
                r.errors.join("; ")
            }
        ));
    }
    s
}
