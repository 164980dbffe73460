//! Quickstart: the reference HA topology on this machine, in the foreground until Ctrl-C (which
//! stops everything and removes the data directories).
//!
//! PostgreSQL 15 primary + standby managed by repmgr (repmgrd with automatic failover on both),
//! and two pgpivot instances with the same backend list, as the two proxy Deployments of the
//! reference deployment. `--failover-demo` then runs writes through both instances, kills the
//! primary, lets repmgrd promote the standby and prints what the clients saw.
//!
//! `cargo run --release -p pgpivot-tests --bin pgpivot-lab -- [options]`

use std::time::Duration;

use pgpivot_tests::demo::{self, DemoOptions, Fault};
use pgpivot_tests::topology::{Topology, TopologyOptions, ADMIN_PASSWORD, ADMIN_USER};
use pgpivot_tests::{free_port, pg_bin, running_as_root};

const USAGE: &str = "\
pgpivot-lab [--port 6432] [--standbys 1] [--pool-mode session|transaction]
            [--check-interval-ms 200] [--failover-demo [--freeze] [--exit]]

  --port               port of pgpivot A (B gets the next one; busy ports are replaced)
  --failover-demo      write through both instances, kill -9 the primary, let repmgrd
                       promote the standby, print the report
  --freeze             the demo blackholes the primary (kill -STOP) instead of killing it
  --exit               stop after the demo instead of staying in the foreground";

struct Args {
    port: u16,
    standbys: usize,
    pool_mode: String,
    interval_ms: u64,
    demo: bool,
    freeze: bool,
    exit: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        port: 6432,
        standbys: 1,
        pool_mode: "session".into(),
        interval_ms: 200,
        demo: false,
        freeze: false,
        exit: false,
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
            "--pool-mode" => args.pool_mode = value()?,
            "--check-interval-ms" => args.interval_ms = value()?.parse()?,
            "--failover-demo" => args.demo = true,
            "--freeze" => args.freeze = true,
            "--exit" => args.exit = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    Ok(args)
}

fn listen_on(port: u16) -> String {
    let port = if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
        port
    } else {
        free_port()
    };
    format!("127.0.0.1:{port}")
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

    // Let the operator try settings: PGPIVOT_* from our own environment win.
    let env = std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("PGPIVOT_")
                && !["PGPIVOT_PG_BIN", "PGPIVOT_TMPDIR", "PGPIVOT_LOG"].contains(&k.as_str())
        })
        .collect();
    let a = listen_on(args.port);
    let b = listen_on(args.port.wrapping_add(1));
    eprintln!(
        "starting PostgreSQL 15 with repmgr (a primary, {} standby(s), repmgrd with automatic \
         failover) and two pgpivot instances...",
        args.standbys
    );
    let topo = Topology::start(TopologyOptions {
        standbys: args.standbys,
        listen: [Some(a), Some(b)],
        pool_mode: args.pool_mode.clone(),
        check_interval_ms: args.interval_ms,
        env,
        ..Default::default()
    })
    .await?;
    print_topology(&topo).await;

    if args.demo {
        let opts = DemoOptions {
            fault: if args.freeze {
                Fault::Freeze
            } else {
                Fault::Kill
            },
            promote_timeout: Duration::from_secs(90),
            ..Default::default()
        };
        eprintln!("running the failover demo...");
        let report = demo::run(&topo, &opts).await?;
        println!("{report}");
    }
    if !args.exit {
        println!("Ctrl-C stops pgpivot, repmgrd and PostgreSQL and removes the data directories.");
        tokio::signal::ctrl_c().await?;
    }
    eprintln!("stopping...");
    let Topology {
        pivots, cluster, ..
    } = topo;
    for p in pivots {
        p.stop().await;
    }
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    Ok(())
}

async fn print_topology(topo: &Topology) {
    let c = &topo.cluster;
    let o = c.options();
    let psql = pg_bin("psql");
    println!();
    for (k, p) in topo.pivots.iter().enumerate() {
        let port = p.addr.port();
        println!("pgpivot {} on 127.0.0.1:{port}", Topology::name(k));
        println!(
            "  connect: PGPASSWORD={} {} \"host=127.0.0.1 port={port} user={} dbname={}\"",
            o.app_password,
            psql.display(),
            o.app_user,
            o.database
        );
        if let Some(admin) = p.admin_addr {
            println!(
                "  console: PGPASSWORD={ADMIN_PASSWORD} {} \"host=127.0.0.1 port={} user={ADMIN_USER} dbname=pgpivot\" -c 'SHOW NODES'",
                psql.display(),
                admin.port()
            );
        }
        if let Some(m) = p.metrics_addr {
            println!("  metrics: curl http://{m}/metrics   (also /livez, /readyz)");
        }
        match topo.pool_nodes(k).await {
            Ok(table) => {
                println!("  SHOW pool_nodes:");
                for line in table.lines() {
                    println!("    {line}");
                }
            }
            Err(e) => println!("  SHOW pool_nodes failed: {e}"),
        }
        println!();
    }
    let show = tokio::task::block_in_place(|| c.repmgr_cluster_show(0));
    println!("repmgr cluster show:\n{show}");
    let runas = if running_as_root() {
        "runuser -u postgres -- "
    } else {
        ""
    };
    if let Some(pid) = c.node(0).postmaster_pid() {
        println!("try a failover in another terminal (repmgrd promotes the standby in ~3 s):");
        println!("  kill -9 {pid}");
        println!(
            "  {runas}{} -f {} cluster show",
            pg_bin("repmgr").display(),
            c.node(0).dir.join("repmgr.conf").display()
        );
        println!(
            "then run SHOW pool_nodes through either instance: both route to the new primary."
        );
        println!();
    }
}
