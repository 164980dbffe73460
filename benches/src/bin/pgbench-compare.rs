//! pgbench through pgpivot vs. directly against the primary, on one machine, in one run.
//!
//! Starts a PostgreSQL 15 primary + standby (the test fixture), the release `pgpivot` binary as
//! its own process, then alternates direct and proxied pgbench runs (A B A B ...) so machine
//! drift hits both alike, and reports the median tps of each and the per-pair ratio.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
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
            "-h" | "--help" => {
                println!("pgbench-compare [--clients 10] [--seconds 15] [--rounds 3] [--scale 10] [--mode simple|extended|prepared] [--tpcb] [--pool-mode session|transaction] [--pool-size 20]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn tps(out: &str) -> Option<f64> {
    out.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run(a: &Args, port: u16) -> anyhow::Result<f64> {
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
    args.push("bench".into());
    let out = pgbench("secret", &args)?;
    if !out.success() {
        bail!("pgbench failed: {}", out.stderr);
    }
    tps(&out.stdout).with_context(|| format!("no tps in pgbench output: {}", out.stdout))
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
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut env: HashMap<String, String> =
        pivot_env(&cluster, &PivotOptions::default(), &listen, dir.path());
    env.insert("PGPIVOT_LOG".into(), "warn".into());
    // Runtime knobs pass through (e.g. TOKIO_WORKER_THREADS=1 to compare scheduler layouts).
    for (k, v) in std::env::vars() {
        if k.starts_with("TOKIO_") {
            env.insert(k, v);
        }
    }
    env.insert("PGPIVOT_CHECK_INTERVAL_MS".into(), "500".into());
    env.insert("PGPIVOT_POOL_MODE".into(), a.pool_mode.clone());
    // Session mode needs a server connection per client.
    let size = if a.pool_mode == "session" {
        a.pool_size.max(a.clients)
    } else {
        a.pool_size
    };
    env.insert("PGPIVOT_POOL_SIZE".into(), size.to_string());
    let mut child = spawn_binary(&env, &[], &dir.path().join("pgpivot.log"))?;
    wait_listening(&listen, Duration::from_secs(10))?;
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
        size,
        a.rounds
    );
    let (mut direct, mut proxied, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for r in 1..=a.rounds {
        let d = run(&a, cluster.port(0))?;
        let p = run(&a, port)?;
        println!(
            "round {r}: direct {d:.0} tps, pgpivot {p:.0} tps, ratio {:.3}",
            p / d
        );
        direct.push(d);
        proxied.push(p);
        ratios.push(p / d);
    }
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "median: direct {:.0} tps, pgpivot {:.0} tps, ratio {:.3} (min {:.3}, max {:.3})",
        median(&mut direct),
        median(&mut proxied),
        median(&mut ratios.clone()),
        ratios.iter().cloned().fold(f64::INFINITY, f64::min),
        ratios.iter().cloned().fold(0.0, f64::max),
    );
    Ok(())
}
