//! pgbench through pgpivot vs. directly against the primary, on one machine, in one run.
//!
//! Starts a PostgreSQL 15 primary + standby (the test fixture), the release `pgpivot` binary as
//! its own process, then alternates direct and proxied pgbench runs (A B A B ...) so machine
//! drift hits both alike, and reports the median tps of each and the per-pair ratio.
//!
//! `--bin PATH` (repeatable) puts several pgpivot binaries in the same rotation, for A/B tests
//! of a change; `--pgbouncer` adds PgBouncer and `--relay` the bare TCP relay (`tcp-relay`, the
//! cost of moving the bytes alone). Besides tps, each proxied run reports the proxy's own CPU
//! time per transaction (user + system, from /proc): far steadier than tps on a noisy machine,
//! and what a change to the hot path moves first. With `PGBENCH_COMPARE_DIAG=1` every run,
//! direct ones included, also splits the machine's busy time per transaction into pgbench, the
//! proxy and the rest (PostgreSQL).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use pgpivot_benches::pgbench::parse_summary;
use pgpivot_benches::procfs::{
    children_cpu_seconds, clock_ticks_per_second, context_switches, cpu_seconds, machine_jiffies,
};
use pgpivot_benches::targets::{Kind, PoolSettings, Target};
use pgpivot_tests::{
    free_port, pgbench, pivot_env, spawn_binary, wait_listening, Cluster, ClusterOptions,
    PivotOptions,
};

struct Args {
    clients: u32,
    seconds: u32,
    rounds: u32,
    scale: u32,
    mode: String,
    select_only: bool,
    pool_mode: String,
    pool_size: u32,
    bins: Vec<std::path::PathBuf>,
    /// Also put PgBouncer (transaction pooling, same pool size) in the rotation.
    pgbouncer: bool,
    /// Also put the plain TCP relay (`tcp-relay`, one server connection per client, no
    /// parsing) in the rotation: the floor under any proxy's cost.
    relay: bool,
    /// pgbench `-R`: a fixed rate, so every binary does the same work and CPU per transaction
    /// compares changes without the machine's state in the way.
    rate: Option<u32>,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        clients: 10,
        seconds: 15,
        rounds: 3,
        scale: 10,
        mode: "simple".into(),
        select_only: true,
        pool_mode: "session".into(),
        pool_size: 20,
        bins: Vec::new(),
        pgbouncer: false,
        relay: false,
        rate: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{k} needs a value"))
        };
        match k.as_str() {
            "--clients" => a.clients = v()?.parse()?,
            "--seconds" => a.seconds = v()?.parse()?,
            "--rounds" => a.rounds = v()?.parse()?,
            "--scale" => a.scale = v()?.parse()?,
            "--mode" => a.mode = v()?,
            "--tpcb" => a.select_only = false,
            "--pool-mode" => a.pool_mode = v()?,
            "--pool-size" => a.pool_size = v()?.parse()?,
            "--bin" => a.bins.push(v()?.into()),
            "--rate" => a.rate = Some(v()?.parse()?),
            "--pgbouncer" => a.pgbouncer = true,
            "--relay" => a.relay = true,
            "-h" | "--help" => {
                println!("pgbench-compare [--clients 10] [--seconds 15] [--rounds 3] [--scale 10] [--mode simple|extended|prepared] [--tpcb] [--pool-mode session|transaction] [--pool-size 20] [--bin PATH]... [--pgbouncer] [--relay] [--rate TPS]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One pgbench run: (tps, transactions).
fn run(a: &Args, port: u16) -> anyhow::Result<(f64, f64)> {
    let mut args = vec![
        "-h".to_string(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-U".into(),
        "app".into(),
        "-c".into(),
        a.clients.to_string(),
        "-j".into(),
        a.clients.min(2).to_string(),
        "-T".into(),
        a.seconds.to_string(),
        "-M".into(),
        a.mode.clone(),
        "-n".into(),
    ];
    if a.select_only {
        args.push("-S".into());
    }
    if let Some(r) = a.rate {
        args.push("-R".into());
        args.push(r.to_string());
    }
    args.push("bench".into());
    let out = pgbench("secret", &args)?;
    if !out.success() {
        bail!("pgbench failed: {}", out.stderr);
    }
    let (tps, done, _) = parse_summary(&out.stdout)
        .with_context(|| format!("no tps in pgbench output: {}", out.stdout))?;
    Ok((tps, done as f64))
}

/// Where one run's CPU went, per transaction.
struct Sample {
    tps: f64,
    /// The proxy's user + system time (0 for direct runs).
    proxy_us: f64,
    proxy_user_us: f64,
    /// pgbench's user + system time.
    pgbench_us: f64,
    /// Every CPU's busy time: pgbench + proxy + PostgreSQL + anything else running.
    machine_us: f64,
    idle_pct: f64,
    /// The proxy's (voluntary, involuntary) context switches.
    switches: (f64, f64),
}

impl Sample {
    /// The breakdown printed with PGBENCH_COMPARE_DIAG=1: PostgreSQL's share is what the
    /// machine spent beyond pgbench and the proxy.
    fn budget(&self) -> String {
        format!(
            " (machine {:.1} us/tx = pgbench {:.1} + proxy {:.1} [user {:.1}] + rest {:.1}; idle {:.0}%; proxy switches/tx {:.2} vol {:.2} invol)",
            self.machine_us,
            self.pgbench_us,
            self.proxy_us,
            self.proxy_user_us,
            self.machine_us - self.pgbench_us - self.proxy_us,
            self.idle_pct,
            self.switches.0,
            self.switches.1,
        )
    }
}

/// One pgbench run against `port`, with the CPU spent by the machine, pgbench and the proxy
/// (`pid`, if any) while it ran.
fn measured_run(a: &Args, port: u16, pid: Option<u32>) -> anyhow::Result<Sample> {
    let proxy = || -> anyhow::Result<(f64, f64)> {
        match pid {
            Some(pid) => cpu_seconds(pid).context("the proxy's /proc/PID/stat"),
            None => Ok((0.0, 0.0)),
        }
    };
    let switches = || pid.map_or((0, 0), context_switches);
    let (user0, system0) = proxy()?;
    let (idle0, total0) = machine_jiffies();
    let sw0 = switches();
    let kids0 = children_cpu_seconds();
    let (tps, n) = run(a, port)?;
    let kids1 = children_cpu_seconds();
    let sw1 = switches();
    let (idle1, total1) = machine_jiffies();
    let (user1, system1) = proxy()?;
    let n = n.max(1.0);
    let per_tx = |seconds: f64| seconds * 1e6 / n;
    let hz = clock_ticks_per_second();
    Ok(Sample {
        tps,
        proxy_us: per_tx(user1 + system1 - user0 - system0),
        proxy_user_us: per_tx(user1 - user0),
        pgbench_us: per_tx(kids1.0 + kids1.1 - kids0.0 - kids0.1),
        machine_us: per_tx(((total1 - total0) - (idle1 - idle0)) / hz),
        idle_pct: 100.0 * (idle1 - idle0) / (total1 - total0).max(1.0),
        switches: ((sw1.0 - sw0.0) as f64 / n, (sw1.1 - sw0.1) as f64 / n),
    })
}

/// A proxy under test: a pgpivot binary, PgBouncer or the relay.
struct Proxy {
    name: String,
    pid: u32,
    port: u16,
    /// Stops the process when dropped.
    _guard: Box<dyn std::any::Any>,
}

/// The `tcp-relay` binary next to this one, in front of `server_port`.
fn start_relay(server_port: u16) -> anyhow::Result<Proxy> {
    let exe = std::env::current_exe()?.with_file_name("tcp-relay");
    let port = free_port();
    let child = std::process::Command::new(&exe)
        .args([port.to_string(), server_port.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let relay = Proxy {
        name: "tcp-relay".into(),
        pid: child.id(),
        port,
        _guard: Box::new(Child {
            process: child,
            _dir: None,
        }),
    };
    wait_listening(&format!("127.0.0.1:{port}"), Duration::from_secs(10))?;
    Ok(relay)
}

/// A process started by this program, and its directory if it has one (removed after it stops).
struct Child {
    process: std::process::Child,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn start_pgbouncer(a: &Args, cluster: &Cluster) -> anyhow::Result<Proxy> {
    let settings = PoolSettings {
        pool_size: a.pool_size,
        max_clients: a.clients.max(100) + 50,
        ..Default::default()
    };
    let t = Target::start(Kind::PgBouncer, cluster, &settings)?;
    Ok(Proxy {
        name: "pgbouncer".into(),
        pid: t.pgid().context("PgBouncer has a process")?,
        port: t.port,
        _guard: Box::new(t),
    })
}

fn start_pivot(
    a: &Args,
    cluster: &Cluster,
    bin: Option<&std::path::Path>,
) -> anyhow::Result<Proxy> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut env: HashMap<String, String> =
        pivot_env(cluster, &PivotOptions::default(), &listen, dir.path());
    env.insert("PGPIVOT_LOG".into(), "warn".into());
    // Runtime knobs pass through (e.g. TOKIO_WORKER_THREADS=1 to compare scheduler layouts).
    for (k, v) in std::env::vars() {
        if k.starts_with("TOKIO_") {
            env.insert(k, v);
        }
    }
    env.insert("PGPIVOT_CHECK_INTERVAL_MS".into(), "500".into());
    env.insert("PGPIVOT_POOL_MODE".into(), a.pool_mode.clone());
    env.insert("PGPIVOT_POOL_SIZE".into(), pool_size(a).to_string());
    let log = dir.path().join("pgpivot.log");
    let child = match bin {
        None => spawn_binary(&env, &[], &log)?,
        Some(path) => std::process::Command::new(path)
            .env_clear()
            .envs(&env)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?,
    };
    let name = bin.map_or_else(|| "pgpivot".to_string(), |p| p.display().to_string());
    let pivot = Proxy {
        name,
        pid: child.id(),
        port,
        _guard: Box::new(Child {
            process: child,
            _dir: Some(dir),
        }),
    };
    wait_listening(&listen, Duration::from_secs(10))?;
    Ok(pivot)
}

/// Session mode needs a server connection per client.
fn pool_size(a: &Args) -> u32 {
    if a.pool_mode == "session" {
        a.pool_size.max(a.clients)
    } else {
        a.pool_size
    }
}

fn main() -> anyhow::Result<()> {
    let a = parse()?;
    let cluster = Cluster::start(ClusterOptions {
        max_connections: 600,
        ..Default::default()
    })?;
    let init = pgbench(
        "secret",
        [
            "-i",
            "-q",
            "-s",
            &a.scale.to_string(),
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port(0).to_string(),
            "-U",
            "app",
            "bench",
        ],
    )?;
    if !init.success() {
        bail!("pgbench -i failed: {}", init.stderr);
    }
    let mut pivots = Vec::new();
    if a.bins.is_empty() {
        pivots.push(start_pivot(&a, &cluster, None)?);
    }
    for b in &a.bins {
        pivots.push(start_pivot(&a, &cluster, Some(b))?);
    }
    if a.pgbouncer {
        pivots.push(start_pgbouncer(&a, &cluster)?);
    }
    if a.relay {
        pivots.push(start_relay(cluster.port(0))?);
    }
    std::thread::sleep(Duration::from_millis(700));

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "pgbench {} -M {} -c {} -T {} (scale {}), pgpivot {} mode pool {}, {} rounds, {cores} cores",
        if a.select_only { "-S" } else { "TPC-B" },
        a.mode,
        a.clients,
        a.seconds,
        a.scale,
        a.pool_mode,
        pool_size(&a),
        a.rounds
    );
    let diag = std::env::var_os("PGBENCH_COMPARE_DIAG").is_some();
    let mut direct = Vec::new();
    let mut proxied: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> =
        pivots.iter().map(|_| Default::default()).collect();
    for r in 1..=a.rounds {
        let d = measured_run(&a, cluster.port(0), None)?;
        direct.push(d.tps);
        let mut line = format!("round {r}: direct {:.0} tps", d.tps);
        if diag {
            line += &d.budget();
        }
        // Rotate the order of the proxies between rounds, so none always runs right after
        // the direct run.
        for k in 0..pivots.len() {
            let i = (k + r as usize) % pivots.len();
            let p = measured_run(&a, pivots[i].port, Some(pivots[i].pid))?;
            let ratio = p.tps / d.tps;
            line += &format!(
                "; [{i}] {:.0} tps ratio {ratio:.3} cpu {:.1} us/tx",
                p.tps, p.proxy_us
            );
            if diag {
                line += &p.budget();
            }
            proxied[i].0.push(p.tps);
            proxied[i].1.push(ratio);
            proxied[i].2.push(p.proxy_us);
        }
        println!("{line}");
    }
    println!("median direct {:.0} tps", median(&mut direct));
    for (i, (mut t, r, mut c)) in proxied.into_iter().enumerate() {
        println!(
            "median [{i}] {}: {:.0} tps, ratio {:.3} (min {:.3}, max {:.3}), proxy cpu {:.1} us/tx",
            pivots[i].name,
            median(&mut t),
            median(&mut r.clone()),
            r.iter().cloned().fold(f64::INFINITY, f64::min),
            r.iter().cloned().fold(0.0, f64::max),
            median(&mut c),
        );
    }
    Ok(())
}
