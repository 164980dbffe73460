//! Shared pieces of the benchmark programs (see `src/bin/`): the comparison targets (PgBouncer,
//! Pgpool-II, pgpivot), pgbench runs and their parsing, the results table, memory readings, and
//! the process bookkeeping that keeps anything started here from outliving a run.

pub mod account;
pub mod args;
pub mod daemon;
pub mod failover;
pub mod machine;
pub mod mem;
pub mod msgs;
pub mod pgbench;
pub mod procfs;
pub mod reaper;
pub mod table;
pub mod targets;

/// `main` of an async benchmark program: the cleanup watchdog, room for `nofile` open files,
/// a runtime for `run`, and the watchdog told all went well once it returns.
pub fn run_async<F: std::future::Future<Output = anyhow::Result<()>>>(
    nofile: u64,
    run: F,
) -> anyhow::Result<()> {
    account::raise_nofile(nofile);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(run);
    drop(rt);
    reaper::disarm();
    r
}

/// Cluster options every benchmark starts from: PostgreSQL 15 primary + streaming standby with
/// room for 500 direct pgbench clients next to the poolers' own server connections.
pub fn cluster_options(max_connections: u32) -> pgpivot_tests::ClusterOptions {
    pgpivot_tests::ClusterOptions {
        standbys: 1,
        max_connections,
        extra_conf: vec!["shared_buffers = 256MB".into()],
        ..Default::default()
    }
}
