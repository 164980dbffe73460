//! pgbench side by side: PostgreSQL directly, PgBouncer, Pgpool-II, and pgpivot in session and
//! transaction mode, all in front of the same PostgreSQL 15 primary + streaming standby, in one
//! run, printed as one table.
//!
//! For every cell (script × `-M` mode × client count), each round runs every target once, in an
//! order that rotates from round to round, so machine drift and position hit every target alike;
//! the table reports medians over rounds and ratios paired within a round.
//!
//! `bench-matrix --help` for the options; `benches/compare.sh` installs what is missing, builds
//! and runs it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use pgpivot_benches::args::Args;
use pgpivot_benches::daemon::WorkDir;
use pgpivot_benches::pgbench::{self, Outcome, Spec};
use pgpivot_benches::table::{Cell, Results, Runs};
use pgpivot_benches::targets::{Kind, PoolSettings, Target};
use pgpivot_benches::{account, cluster_options, machine, reaper};
use pgpivot_tests::{pgbench_init, Cluster};

const SCRIPTS: &[&str] = &["select-only", "tpcb-like"];
const MODES: &[&str] = &["simple", "extended", "prepared"];

const HELP: &str = "\
bench-matrix [options]
  --targets LIST      direct,pgbouncer,pgpool,pgpivot-session,pgpivot-tx (default: all)
  --scripts LIST      select-only,tpcb-like (default: both)
  --modes LIST        simple,extended,prepared (default: all three)
  --clients LIST      client counts (default: 10,100,500)
  --seconds N         length of each pgbench run (default: 15)
  --rounds N          rounds per cell; the median is reported (default: 3)
  --scale N           pgbench scale (default: 10)
  --threads N         pgbench -j (default: the machine's cores)
  --pool-size N       server connections per pooler; Pgpool-II's num_init_children (default: 20)
  --sampling-rate R   fraction of transactions logged for the latency percentiles (default: 1)
  --pgpool-load-balance on|off   Pgpool-II load_balance_mode (default: on, as Bitnami)
  --out DIR           where table.md and raw.tsv go (default: benches/results/matrix-<date>)";

struct Opts {
    targets: Vec<Kind>,
    scripts: Vec<String>,
    modes: Vec<String>,
    clients: Vec<u32>,
    seconds: u32,
    rounds: u32,
    scale: u32,
    threads: u32,
    sampling_rate: f64,
    pool: PoolSettings,
    out: Option<PathBuf>,
}

fn parse() -> anyhow::Result<Opts> {
    let mut o = Opts {
        targets: Kind::ALL.to_vec(),
        scripts: SCRIPTS.iter().map(|s| s.to_string()).collect(),
        modes: MODES.iter().map(|s| s.to_string()).collect(),
        clients: vec![10, 100, 500],
        seconds: 15,
        rounds: 3,
        scale: 10,
        threads: machine::cores() as u32,
        sampling_rate: 1.0,
        pool: PoolSettings::default(),
        out: None,
    };
    let mut a = Args::from_env();
    while let Some(flag) = a.next_flag() {
        match flag.as_str() {
            "--targets" => o.targets = Kind::parse_list(&a.value(&flag)?)?,
            "--scripts" => {
                o.scripts = a
                    .words(&flag, &["select-only", "tpcb-like", "select", "tpcb"])?
                    .into_iter()
                    .map(|s| match s.as_str() {
                        "select" => "select-only".to_string(),
                        "tpcb" => "tpcb-like".to_string(),
                        _ => s,
                    })
                    .collect();
                o.scripts.dedup();
            }
            "--modes" => o.modes = a.words(&flag, MODES)?,
            "--clients" => o.clients = a.list(&flag)?,
            "--seconds" => o.seconds = a.parse(&flag)?,
            "--rounds" => o.rounds = a.parse(&flag)?,
            "--scale" => o.scale = a.parse(&flag)?,
            "--threads" => o.threads = a.parse(&flag)?,
            "--pool-size" => o.pool.pool_size = a.parse(&flag)?,
            "--sampling-rate" => o.sampling_rate = a.parse(&flag)?,
            "--pgpool-load-balance" => {
                o.pool.pgpool_load_balance = match a.value(&flag)?.as_str() {
                    "on" | "yes" | "true" => true,
                    "off" | "no" | "false" => false,
                    v => bail!("--pgpool-load-balance {v}: on or off"),
                }
            }
            "--out" => o.out = Some(a.value(&flag)?.into()),
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{HELP}"),
        }
    }
    if o.targets.is_empty() || o.rounds == 0 || o.seconds == 0 {
        bail!("nothing to run");
    }
    if !(o.sampling_rate > 0.0 && o.sampling_rate <= 1.0) {
        bail!("--sampling-rate must be in (0, 1]");
    }
    let most = o.clients.iter().copied().max().unwrap_or(0);
    o.pool.max_clients = (most + 100).max(2000);
    Ok(o)
}

/// Why `kind` does not run `cell` (None: it does).
fn not_applicable(t: &Target, cell: &Cell) -> Option<String> {
    if let Some(why) = t.kind.unsupported_mode(&cell.mode) {
        return Some(why.to_string());
    }
    match (t.kind, t.client_limit) {
        (Kind::Pgpool, Some(limit)) if cell.clients > limit => Some(format!(
            "refused: Pgpool-II serves at most num_init_children = {limit} clients (the rest wait in the listen queue)"
        )),
        (Kind::PivotSession, Some(limit)) if cell.clients > limit => Some(format!(
            "session pooling holds one server connection per client (pool {limit}): the rest would wait"
        )),
        (_, Some(limit)) if cell.clients > limit => {
            Some(format!("more clients than the target accepts ({limit})"))
        }
        _ => None,
    }
}

/// Puts the database back in the same state before a TPC-B run (what pgbench's own vacuum
/// step does, directly on the primary so it never goes through a target) and checkpoints, so
/// no run inherits another's dirty buffers.
fn reset_for_tpcb(cluster: &Cluster) -> anyhow::Result<()> {
    for sql in [
        "VACUUM pgbench_branches",
        "VACUUM pgbench_tellers",
        "TRUNCATE pgbench_history",
        "CHECKPOINT",
    ] {
        cluster.psql(0, sql).with_context(|| sql.to_string())?;
    }
    Ok(())
}

fn default_out() -> PathBuf {
    let stamp = machine::now_utc()
        .replace([' ', ':'], "-")
        .replace("-UTC", "");
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/results")).join(format!("matrix-{stamp}"))
}

fn main() -> anyhow::Result<()> {
    reaper::install();
    let o = parse()?;
    account::raise_nofile(65_536);
    let result = run(&o);
    reaper::disarm();
    result
}

fn run(o: &Opts) -> anyhow::Result<()> {
    let mut header = machine::header();
    header.push(format!(
        "pgbench scale {}, {} s per run, {} round(s) (median; ratios paired within a round), -j {}, \
         pool size {} for every pooler (Pgpool-II: num_init_children = {}), Pgpool-II load balancing {}, \
         PostgreSQL max_connections 1000, shared_buffers 256MB, fsync off",
        o.scale,
        o.seconds,
        o.rounds,
        o.threads,
        o.pool.pool_size,
        o.pool.pgpool_children.unwrap_or(o.pool.pool_size),
        if o.pool.pgpool_load_balance { "on" } else { "off" },
    ));
    for l in &header {
        eprintln!("{l}");
    }
    let cells: Vec<Cell> = o
        .scripts
        .iter()
        .flat_map(|s| {
            o.modes.iter().flat_map(move |m| {
                o.clients.iter().map(move |&c| Cell {
                    script: s.clone(),
                    mode: m.clone(),
                    clients: c,
                })
            })
        })
        .collect();
    let runs_total = cells.len() * o.targets.len() * o.rounds as usize;
    eprintln!(
        "{} cells × {} targets × {} rounds: at most {runs_total} pgbench runs, about {} min",
        cells.len(),
        o.targets.len(),
        o.rounds,
        (runs_total as u64 * (o.seconds as u64 + 3)).div_ceil(60)
    );

    eprintln!(
        "starting PostgreSQL 15 primary + standby, pgbench -i -s {}",
        o.scale
    );
    let cluster = Cluster::start(cluster_options(1000))?;
    pgbench_init(&cluster, o.scale)?;
    cluster.wait_caught_up(1)?;
    let mut targets = Vec::new();
    for &k in &o.targets {
        eprintln!("starting {}", k.name());
        targets.push(Target::start(k, &cluster, &o.pool)?);
    }
    let work = WorkDir::new("pgpivot-bench-pgbench-")?;
    let c = cluster.options();

    let out = o.out.clone().unwrap_or_else(default_out);
    let mut results = Results::default();
    let started = Instant::now();
    let mut done = 0usize;
    for cell in &cells {
        let mut per: HashMap<Kind, Runs> = HashMap::new();
        for t in &targets {
            per.insert(
                t.kind,
                Runs {
                    rounds: vec![None; o.rounds as usize],
                    not_applicable: not_applicable(t, cell),
                },
            );
        }
        for round in 0..o.rounds as usize {
            // Rotate the order so no target always runs first (or right after a TPC-B reset).
            let n = targets.len();
            for i in 0..n {
                let t = &mut targets[(i + round) % n];
                let runs = per.get_mut(&t.kind).expect("every target has runs");
                if runs.not_applicable.is_some() {
                    continue;
                }
                if let Err(e) = t.check_alive() {
                    let why = format!("{} is not running: {e:#}", t.name());
                    eprintln!("{why}");
                    runs.rounds[round] = Some(Outcome::Failed(
                        why.lines().next().unwrap_or("").to_string(),
                    ));
                    continue;
                }
                if cell.script == "tpcb-like" {
                    reset_for_tpcb(&cluster)?;
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
                let spec = Spec {
                    script: cell.script.clone(),
                    mode: cell.mode.clone(),
                    clients: cell.clients,
                    threads: o.threads,
                    seconds: o.seconds,
                    sampling_rate: o.sampling_rate,
                };
                let out = pgbench::run(
                    &spec,
                    t.port,
                    &c.app_user,
                    &c.app_password,
                    &c.database,
                    work.path(),
                )?;
                done += 1;
                let what = match &out {
                    Outcome::Ok(m) => format!(
                        "{:.0} tps, avg {:.3} ms, p99 {:.3} ms",
                        m.tps, m.avg_ms, m.p99_ms
                    ),
                    Outcome::Failed(why) => format!("FAILED: {why}"),
                };
                eprintln!(
                    "[{done}/{runs_total} {:.0} min] {} -M {} -c {} round {}/{} {}: {what}",
                    started.elapsed().as_secs_f64() / 60.0,
                    cell.script,
                    cell.mode,
                    cell.clients,
                    round + 1,
                    o.rounds,
                    t.name()
                );
                runs.rounds[round] = Some(out);
            }
        }
        let row = o
            .targets
            .iter()
            .map(|k| (*k, per.remove(k).unwrap_or_default()))
            .collect();
        results.rows.push((cell.clone(), row));
        // Written after every cell, so an interrupted long run keeps what it measured.
        write_report(o, &header, &results, &out)?;
    }
    drop(targets);
    drop(cluster);
    let report = write_report(o, &header, &results, &out)?;
    println!("{report}");
    eprintln!("written to {}", out.display());
    Ok(())
}

fn write_report(
    o: &Opts,
    header: &[String],
    results: &Results,
    out: &std::path::Path,
) -> anyhow::Result<String> {
    let mut report = String::new();
    for l in header {
        report.push_str(l);
        report.push_str("  \n");
    }
    report.push('\n');
    report.push_str(&results.render(o.rounds));
    report.push_str(
        "\n÷ direct: tps over PostgreSQL's own in the same round (median over rounds). \
         ÷ pgpivot: over pgpivot in the same pooling mode (PgBouncer: transaction, Pgpool-II: session); \
         above 1 the other is faster.\n",
    );
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("table.md"), &report)?;
    std::fs::write(out.join("raw.tsv"), results.raw_tsv())?;
    Ok(report)
}
