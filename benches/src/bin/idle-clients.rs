//! Memory per idle client: starts a PostgreSQL primary, the release `pgpivot` binary in
//! transaction mode, opens N client connections that log in and then sit idle, and reports
//! pgpivot's resident memory before and after, per client.
//!
//! `idle-clients [--clients 10000]`

use std::time::Duration;

use anyhow::{bail, Context};
use pgpivot_tests::{
    connect, free_port, pivot_env, spawn_binary, wait_listening, Cluster, ClusterOptions,
    PivotOptions,
};

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut clients = 10_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--clients" => clients = args.next().context("--clients N")?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    raise_nofile();
    let cluster = tokio::task::spawn_blocking(|| {
        Cluster::start(ClusterOptions {
            standbys: 0,
            ..Default::default()
        })
    })
    .await??;
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut env = pivot_env(&cluster, &PivotOptions::default(), &listen, dir.path());
    env.insert("PGPIVOT_LOG".into(), "warn".into());
    env.insert("PGPIVOT_POOL_MODE".into(), "transaction".into());
    env.insert("PGPIVOT_POOL_SIZE".into(), "20".into());
    env.insert(
        "PGPIVOT_MAX_CLIENT_CONN".into(),
        (clients + 100).to_string(),
    );
    // md5 keeps 10,000 logins quick; memory per idle client does not depend on the method.
    env.insert("PGPOOL_AUTHENTICATION_METHOD".into(), "md5".into());
    let mut child = spawn_binary(&env, &[], &dir.path().join("pgpivot.log"))?;
    wait_listening(&listen, Duration::from_secs(10))?;
    let conn = format!("host=127.0.0.1 port={port} user=app password=secret dbname=bench");
    // Warm up: the first client creates the pool.
    let first = connect(&conn).await?;
    first.simple_query("SELECT 1").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(child.id())?;
    let mut held = Vec::with_capacity(clients);
    for i in 0..clients {
        match connect(&conn).await {
            Ok(c) => held.push(c),
            Err(e) => bail!("client {i}: {e:#}"),
        }
    }
    // One query on each of a sample, to be sure they work; then all sit idle.
    for c in held.iter().step_by((clients / 100).max(1)) {
        c.simple_query("SELECT 1").await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(child.id())?;
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / clients as f64;
    println!(
        "pgpivot RSS: {before} KiB before, {after} KiB with {clients} idle clients: {per:.0} bytes per idle client"
    );
    drop(held);
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}
