//! Test fixture for pgpivot: real PostgreSQL 15 clusters (a primary plus
//! streaming standbys) started from the local binaries, with the failure
//! injections failover tests need (SIGKILL, SIGSTOP, immediate stop,
//! promotion, rebuilding a dead primary as a standby).
//!
//! Everything is blocking (`std::process`), so it can be used from plain
//! `#[test]`s, from async tests (wrap calls in `spawn_blocking` if they
//! must not block the runtime), and from the quickstart binary.
//!
//! Ground rules the fixture enforces:
//! * Missing PostgreSQL binaries are an error, never a skipped test.
//!   Binaries come from `/usr/lib/postgresql/15/bin` or `$PGPIVOT_PG_BIN`.
//! * As root (CI), server tools run as the `postgres` account.
//! * Servers listen only on 127.0.0.1 and on unix sockets inside the
//!   cluster's private temp dir.
//! * No server process or temp dir outlives the cluster: `Drop` cleans up
//!   (also while unwinding from a panic), and a guardian process cleans up
//!   if the test process dies without unwinding.
//!
//! ```no_run
//! use pgpivot_tests::{Cluster, ClusterOptions};
//! let cluster = Cluster::start(ClusterOptions::default()).expect("cluster start");
//! cluster.psql(0, "INSERT INTO pgpivot_probe (id) VALUES (1)").expect("insert");
//! cluster.wait_caught_up(1).expect("standby catches up");
//! assert_eq!(cluster.count_rows(1, "pgpivot_probe").expect("count"), 1);
//! ```

mod cluster;
mod control;
pub mod demo;
pub mod e2e;
mod exec;
mod guard;
pub use guard::spawn_watchdog;
mod node;
mod pivot;
mod ports;
mod procs;
mod repmgr;
mod sql;
mod tmpdir;
pub mod topology;
pub mod wire;

pub use cluster::{Cluster, ClusterOptions};
pub use exec::{
    as_postgres, check_pg_binaries, chown_to_pg, pg_bin, pg_bin_dir, pgbench, pgbench_app,
    pgbench_init, running_as_root, CmdOutput, DEFAULT_PG_BIN, PG_BIN_ENV,
};
pub use node::{write_pg_file, AuthMethod, Node};
pub use pivot::{
    connect, http_get, pivot_binary, pivot_env, spawn_binary, wait_listening, Pivot, PivotOptions,
};
pub use ports::free_port;
pub use repmgr::RepmgrEvent;
pub use tmpdir::{default_tmp_base, TMPDIR_ENV};

/// Tests share one cluster across threads (e.g. a proxy task and the test
/// body); keep `Cluster` usable that way.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Cluster>();
};
