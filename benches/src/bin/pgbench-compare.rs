//! pgbench through pgpivot vs. directly against the primary, on one machine, in one run.
//!
//! Starts a PostgreSQL 15 primary + standby (the test fixture), the release `pgpivot` binary as
//! its own process, then alternates direct and proxied pgbench runs (A B A B ...) so machine
//! drift hits both alike, and reports the median tps of each and the per-pair ratio.
//!
//! `--bin PATH` (repeatable) puts several pgpivot binaries in the same rotation, for A/B tests
//! of a change. Besides tps, each proxied run reports pgpivot's own CPU time per transaction
//! (user + system, from /proc): far steadier than tps on a noisy machine, and what a change to
//! the hot path moves first.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use pgpivot_benches::pgbench::parse_summary;
use pgpivot_benches::procfs::{context_switches, cpu_seconds, machine_jiffies};
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
            "-h" | "--help" => {
                println!("pgbench-compare [--clients 10] [--seconds 15] [--rounds 3] [--scale 10] [--mode simple|extended|prepared] [--tpcb] [--pool-mode session|transaction] [--pool-size 20] [--bin PATH]... [--rate TPS]");
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

/// A pgpivot process under test.
struct Pivot {
    name: String,
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Pivot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_pivot(
    a: &Args,
    cluster: &Cluster,
    bin: Option<&std::path::Path>,
) -> anyhow::Result<Pivot> {
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
    let pivot = Pivot {
        name,
        child,
        port,
        _dir: dir,
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
    let mut direct = Vec::new();
    let mut proxied: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> =
        pivots.iter().map(|_| Default::default()).collect();
    for r in 1..=a.rounds {
        let (d, _) = run(&a, cluster.port(0))?;
        direct.push(d);
        let mut line = format!("round {r}: direct {d:.0} tps");
        // Rotate the order of the binaries between rounds, so none always runs right after
        // the direct run.
        for k in 0..pivots.len() {
            let i = (k + r as usize) % pivots.len();
            let pid = pivots[i].child.id();
            let cpu = || cpu_seconds(pid).context("pgpivot's /proc/PID/stat");
            let (user0, system0) = cpu()?;
            let (idle0, total0) = machine_jiffies();
            let sw0 = context_switches(pid);
            let (p, n) = run(&a, pivots[i].port)?;
            let (user1, system1) = cpu()?;
            let (idle1, total1) = machine_jiffies();
            let sw1 = context_switches(pid);
            let per_tx = |seconds: f64| seconds * 1e6 / n.max(1.0);
            let cpu_us = per_tx(user1 + system1 - user0 - system0);
            let user_us = per_tx(user1 - user0);
            line += &format!(
                "; [{i}] {p:.0} tps ratio {:.3} cpu {cpu_us:.1} us/tx",
                p / d
            );
            if std::env::var_os("PGBENCH_COMPARE_DIAG").is_some() {
                line += &format!(
                    " (user {user_us:.1} us/tx, machine idle {:.0}%, switches/tx {:.2} vol {:.2} invol)",
                    100.0 * (idle1 - idle0) / (total1 - total0).max(1.0),
                    (sw1.0 - sw0.0) as f64 / n.max(1.0),
                    (sw1.1 - sw0.1) as f64 / n.max(1.0),
                );
            }
            proxied[i].0.push(p);
            proxied[i].1.push(p / d);
            proxied[i].2.push(cpu_us);
        }
        println!("{line}");
    }
    println!("median direct {:.0} tps", median(&mut direct));
    for (i, (mut t, r, mut c)) in proxied.into_iter().enumerate() {
        println!(
            "median [{i}] {}: {:.0} tps, ratio {:.3} (min {:.3}, max {:.3}), pgpivot cpu {:.1} us/tx",
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
