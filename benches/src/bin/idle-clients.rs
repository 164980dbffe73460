//! Memory per idle client: opens N client connections that log in, run one query and then sit
//! idle, through each pooler in turn, and reports the pooler's memory before and after.
//!
//! * pgpivot (transaction mode, pool 20) and PgBouncer (transaction pooling, pool 20): one
//!   process each; RSS and PSS growth divided by N.
//! * Pgpool-II: one pre-forked process per client it can hold (`num_init_children`), each with
//!   its own connections to both backends, so it holds at most `--pgpool-clients` (default 500:
//!   that is already 1,000 PostgreSQL connections). Its processes share most pages, so it is
//!   measured by PSS summed over the whole process group, and reported both as growth per client
//!   and as total per client (its children exist before any client comes).
//!
//! `idle-clients [--clients 10000] [--targets pgpivot,pgbouncer,pgpool] [--pgpool-clients 500]`

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pgpivot_benches::args::Args;
use pgpivot_benches::mem::{self, Usage};
use pgpivot_benches::targets::{pgbouncer, pgpivot, pgpool, Kind, PoolSettings, Target};
use pgpivot_benches::{cluster_options, machine, reaper};
use pgpivot_tests::{connect, Cluster};

struct Opts {
    clients: u32,
    targets: Vec<Kind>,
    pgpool_clients: u32,
    concurrency: usize,
}

fn parse() -> anyhow::Result<Opts> {
    let mut o = Opts {
        clients: 10_000,
        targets: vec![Kind::PivotTransaction, Kind::PgBouncer, Kind::Pgpool],
        pgpool_clients: 500,
        concurrency: 32,
    };
    let mut a = Args::from_env();
    while let Some(flag) = a.next_flag() {
        match flag.as_str() {
            "--clients" => o.clients = a.parse(&flag)?,
            "--pgpool-clients" => o.pgpool_clients = a.parse(&flag)?,
            "--concurrency" => o.concurrency = a.parse::<usize>(&flag)?.max(1),
            "--targets" => {
                o.targets = Vec::new();
                for t in a.value(&flag)?.split(',').filter(|t| !t.is_empty()) {
                    let k = match t.trim() {
                        "pgpivot" => Kind::PivotTransaction,
                        other => Kind::parse(other)?,
                    };
                    if k == Kind::Direct {
                        bail!("--targets: direct is not a pooler");
                    }
                    o.targets.push(k);
                }
            }
            "-h" | "--help" => {
                println!(
                    "idle-clients [--clients 10000] [--targets pgpivot,pgbouncer,pgpool] \
                     [--pgpool-clients 500] [--concurrency 32]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(o)
}

/// One target's figures.
struct Row {
    name: &'static str,
    held: u32,
    before: Usage,
    after: Usage,
    note: String,
}

fn main() -> anyhow::Result<()> {
    reaper::install();
    let o = parse()?;
    pgpivot_benches::run_async(o.clients as u64 * 2 + 1000, run(&o))
}

async fn run(o: &Opts) -> anyhow::Result<()> {
    let header = machine::header();
    for l in &header {
        eprintln!("{l}");
    }
    let pgpool_clients = o.pgpool_clients.min(o.clients);
    // Pgpool-II: every client's process connects to both nodes.
    let max_conn = (2 * pgpool_clients + 200).max(300);
    let cluster =
        tokio::task::spawn_blocking(move || Cluster::start(cluster_options(max_conn))).await??;
    let cluster = std::sync::Arc::new(cluster);
    let settings = PoolSettings {
        max_clients: o.clients + 100,
        // md5 keeps 10,000 logins quick; memory per idle client does not depend on the method.
        auth: "md5",
        ..Default::default()
    };
    let mut rows = Vec::new();
    for &k in &o.targets {
        let (c, s) = (cluster.clone(), settings.clone());
        let n = if k == Kind::Pgpool {
            pgpool_clients
        } else {
            o.clients
        };
        eprintln!("{}: starting, then {n} idle clients", k.name());
        let target = tokio::task::spawn_blocking(move || -> anyhow::Result<Target> {
            let t = match k {
                Kind::PgBouncer => pgbouncer::start(&c, 0, &s)?,
                Kind::Pgpool => pgpool::start(&c, &s, Some(n))?,
                _ => pgpivot::start(&c, &s, "transaction")?,
            };
            let opt = c.options();
            pgpivot_benches::targets::wait_ready(
                t.port,
                &opt.app_user,
                &opt.app_password,
                &opt.database,
                k.name(),
            )?;
            Ok(t)
        })
        .await??;
        let row = measure(&cluster, &target, n, o.concurrency).await;
        let stop = tokio::task::spawn_blocking(move || drop(target));
        stop.await?;
        rows.push(row?);
    }
    let report = render(&header, &rows);
    println!("{report}");
    Ok(())
}

async fn measure(cluster: &Cluster, t: &Target, n: u32, concurrency: usize) -> anyhow::Result<Row> {
    let o = cluster.options();
    let pgid = t.pgid().context("a pooler has a process")?;
    let conn = format!(
        "host=127.0.0.1 port={} user={} password={} dbname={} connect_timeout=60",
        t.port, o.app_user, o.app_password, o.database
    );
    // Warm up: the first client creates the pool.
    let first = connect(&conn).await?;
    first.simple_query("SELECT 1").await?;
    drop(first);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let before = mem::group(pgid);
    let started = Instant::now();
    let mut held = Vec::with_capacity(n as usize);
    let mut next = 0u32;
    while next < n {
        let batch = (n - next).min(concurrency as u32);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..batch {
            let conn = conn.clone();
            set.spawn(async move { connect(&conn).await });
        }
        while let Some(r) = set.join_next().await {
            match r? {
                Ok(c) => held.push(c),
                Err(e) => bail!("{}: client {} of {n}: {e:#}", t.name(), held.len() + 1),
            }
        }
        next += batch;
    }
    let connect_time = started.elapsed();
    // One query on a sample, to be sure they work; then all sit idle.
    for c in held.iter().step_by((n as usize / 100).max(1)) {
        c.simple_query("SELECT 1").await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = mem::group(pgid);
    let note = match t.kind {
        Kind::Pgpool => format!(
            "num_init_children = {n}: {} processes, each client also holds a connection to each of the 2 nodes",
            after.processes
        ),
        _ => "pool 20 (transaction mode)".to_string(),
    };
    eprintln!(
        "{}: {n} clients in {:.1} s, PSS {} → {} KiB",
        t.name(),
        connect_time.as_secs_f64(),
        before.pss_kib,
        after.pss_kib
    );
    drop(held);
    Ok(Row {
        name: t.name(),
        held: n,
        before,
        after,
        note,
    })
}

fn per_client(kib_before: u64, kib_after: u64, n: u32) -> String {
    let bytes = kib_after.saturating_sub(kib_before) as f64 * 1024.0 / n.max(1) as f64;
    if bytes < 100_000.0 {
        format!("{:.1} kB", bytes / 1000.0)
    } else {
        format!("{:.2} MB", bytes / 1e6)
    }
}

fn render(header: &[String], rows: &[Row]) -> String {
    let mut s = String::new();
    for l in header {
        s.push_str(l);
        s.push_str("  \n");
    }
    s.push_str(
        "\n| target | idle clients | RSS before → after | PSS before → after | per client (RSS growth) | per client (PSS growth) | PSS total per client | note |\n\
         |---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    for r in rows {
        let total = if r.name == "pgpool" {
            per_client(0, r.after.pss_kib, r.held)
        } else {
            String::new()
        };
        s.push_str(&format!(
            "| {} | {} | {} → {} | {} → {} | {} | {} | {} | {} |\n",
            r.name,
            r.held,
            mib(r.before.rss_kib),
            mib(r.after.rss_kib),
            mib(r.before.pss_kib),
            mib(r.after.pss_kib),
            per_client(r.before.rss_kib, r.after.rss_kib, r.held),
            per_client(r.before.pss_kib, r.after.pss_kib, r.held),
            total,
            r.note
        ));
    }
    s.push_str(
        "\nRSS summed over Pgpool-II's processes counts their shared pages once per process; PSS shares them out. \
         kB = 1,000 bytes.\n",
    );
    s
}
