//! Quickstart: a local PostgreSQL 15 primary + streaming standby with pgpivot in front, in the
//! foreground until Ctrl-C (which stops pgpivot and removes the clusters).
//!
//! `cargo run --release -p pgpivot-tests --bin pgpivot-lab -- [--port 6432] [--standbys 1]`

use std::time::Duration;

use pgpivot::config::Config;
use pgpivot::server::Running;
use pgpivot_tests::{free_port, pg_bin, pivot_env, Cluster, ClusterOptions, PivotOptions};

struct Args {
    port: u16,
    standbys: usize,
    interval_ms: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        port: 6432,
        standbys: 1,
        interval_ms: 500,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--port" => args.port = value()?.parse()?,
            "--standbys" => args.standbys = value()?.parse()?,
            "--check-interval-ms" => args.interval_ms = value()?.parse()?,
            "-h" | "--help" => {
                println!("pgpivot-lab [--port 6432] [--standbys 1] [--check-interval-ms 500]");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PGPIVOT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    eprintln!(
        "starting PostgreSQL 15: a primary and {} streaming standby(s)...",
        args.standbys
    );
    let cluster = tokio::task::spawn_blocking(move || {
        Cluster::start(ClusterOptions {
            standbys: args.standbys,
            ..Default::default()
        })
    })
    .await??;
    let port = if port_free(args.port) {
        args.port
    } else {
        free_port()
    };
    let listen = format!("127.0.0.1:{port}");
    let socket_dir = cluster.root().join("pgpivot");
    std::fs::create_dir_all(&socket_dir)?;
    let opts = PivotOptions {
        check_interval_ms: args.interval_ms,
        primary_wait_timeout_ms: 30_000,
        env: vec![("PGPOOL_PORT_NUMBER".into(), port.to_string())],
        ..Default::default()
    };
    let mut env = pivot_env(&cluster, &opts, &listen, &socket_dir);
    // The admin console, on loopback next to the data port.
    env.insert("PGPOOL_ADMIN_USERNAME".into(), "admin".into());
    env.insert("PGPOOL_ADMIN_PASSWORD".into(), "admin".into());
    env.insert("PGPIVOT_ADMIN_ADDR".into(), "127.0.0.1:0".into());
    // Let the operator try settings: PGPIVOT_* from our own environment win.
    for (k, v) in std::env::vars() {
        if k.starts_with("PGPIVOT_")
            && k != "PGPIVOT_PG_BIN"
            && k != "PGPIVOT_TMPDIR"
            && k != "PGPIVOT_LOG"
        {
            env.insert(k, v);
        }
    }
    let running = Running::start(Config::from_sources(None, &env)?).await?;
    let topo = running.topology();
    if topo
        .wait_for_primary(Duration::from_secs(10))
        .await
        .is_err()
    {
        anyhow::bail!("pgpivot found no primary");
    }

    let o = cluster.options();
    let psql = pg_bin("psql");
    let pg_ctl = pg_bin("pg_ctl");
    println!();
    println!(
        "pgpivot is up on {listen} (unix socket {}/.s.PGSQL.{port})",
        socket_dir.display()
    );
    if let Some(m) = running.metrics_addr {
        println!("metrics:  curl http://{m}/metrics   (also /livez, /readyz)");
    }
    if let Some(a) = running.admin_addr {
        println!(
            "console:  PGPASSWORD=admin {} \"host=127.0.0.1 port={} user=admin dbname=pgpivot\" -c 'SHOW NODES'",
            psql.display(),
            a.port()
        );
    }
    println!();
    println!(
        "  connect:   PGPASSWORD={} {} \"host=127.0.0.1 port={port} user={} dbname={}\"",
        o.app_password,
        psql.display(),
        o.app_user,
        o.database
    );
    println!(
        "  pgbench:   PGPASSWORD={} pgbench -h 127.0.0.1 -p {port} -U {} -S -T 10 {}",
        o.app_password, o.app_user, o.database
    );
    println!();
    for n in &cluster.nodes {
        println!(
            "  node {}: port {} data {}{}",
            n.id,
            n.port,
            n.data_dir.display(),
            if n.id == 0 {
                "  (primary)"
            } else {
                "  (standby)"
            }
        );
    }
    if let (Some(pid), Some(standby)) = (cluster.node(0).postmaster_pid(), cluster.nodes.get(1)) {
        println!();
        println!("  try a failover in another terminal:");
        println!("    kill -9 {pid}");
        let runas = if pgpivot_tests::running_as_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        println!(
            "    {runas}{} promote -D {}",
            pg_ctl.display(),
            standby.data_dir.display()
        );
        println!(
            "  then run the connect command again: writes land on node {}.",
            standby.id
        );
    }
    println!();
    println!("Ctrl-C stops pgpivot and removes the clusters.");

    tokio::signal::ctrl_c().await?;
    eprintln!("stopping...");
    running.stop_fast().await;
    drop(cluster);
    Ok(())
}
