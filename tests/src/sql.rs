//! Talking to nodes as the superuser (psql over each node's unix socket,
//! which never depends on the auth method under test) and the replication
//! waits built on top of it.

use crate::cluster::Cluster;
use crate::exec::{pg_command, run_ok};
use crate::node::sql_literal;
use anyhow::{anyhow, bail, Context};
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for one psql invocation (a SIGSTOPped node makes psql hang).
const PSQL_TIMEOUT: Duration = Duration::from_secs(120);

/// How long replication waits (`wait_caught_up`, `wait_streaming`) last.
const REPL_TIMEOUT: Duration = Duration::from_secs(60);

impl Cluster {
    /// Runs `sql` as superuser `postgres` on node `i` in the app database;
    /// returns trimmed unaligned tuples-only output (`-X -q -tA`).
    pub fn psql(&self, i: usize, sql: &str) -> anyhow::Result<String> {
        self.psql_db(i, &self.opts.database, sql)
    }

    /// Like [`Cluster::psql`] but in database `db`.
    pub fn psql_db(&self, i: usize, db: &str, sql: &str) -> anyhow::Result<String> {
        self.psql_multi(i, db, &[sql.to_string()])
    }

    /// Runs each statement with its own `-c` (so each is its own
    /// transaction and e.g. `CREATE DATABASE` works), stopping at the first
    /// error; returns the combined trimmed output.
    pub(crate) fn psql_multi(
        &self,
        i: usize,
        db: &str,
        stmts: &[String],
    ) -> anyhow::Result<String> {
        let node = self.node(i);
        let mut cmd = pg_command("psql", self.root())?;
        cmd.args(["-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&node.socket_dir)
            .args(["-p", &node.port.to_string(), "-U", "postgres", "-d", db])
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "pgpivot-fixture");
        for s in stmts {
            cmd.arg("-c").arg(s);
        }
        let out = run_ok(&mut cmd, PSQL_TIMEOUT).with_context(|| format!("psql on node{i}"))?;
        Ok(out.stdout.trim().to_string())
    }

    /// `pg_is_in_recovery()` on node `i`.
    pub fn is_in_recovery(&self, i: usize) -> anyhow::Result<bool> {
        parse_bool(&self.psql_db(i, "postgres", "SELECT pg_is_in_recovery()")?)
    }

    /// `SELECT count(*) FROM <table>` in the app database (the table name is
    /// inserted verbatim, so `schema.table` works).
    pub fn count_rows(&self, i: usize, table: &str) -> anyhow::Result<i64> {
        let out = self.psql(i, &format!("SELECT count(*) FROM {table}"))?;
        out.parse()
            .with_context(|| format!("count(*) from {table} on node{i} returned {out:?}"))
    }

    /// Current timeline of node `i`: from the WAL insert position on a
    /// primary (exact right after promotion, unlike the checkpoint's), from
    /// the WAL receiver (else the last restartpoint) on a standby.
    pub fn timeline(&self, i: usize) -> anyhow::Result<u32> {
        let sql = "SELECT CASE WHEN pg_is_in_recovery() THEN coalesce(\
                   (SELECT received_tli FROM pg_stat_wal_receiver), \
                   (SELECT timeline_id FROM pg_control_checkpoint())) \
                   ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END";
        let out = self.psql_db(i, "postgres", sql)?;
        out.parse()
            .with_context(|| format!("timeline of node{i}: unexpected {out:?}"))
    }

    /// Node the standby `i` streams from, found via `pg_stat_wal_receiver`.
    pub fn upstream_of(&self, standby: usize) -> anyhow::Result<usize> {
        let port = self.psql_db(
            standby,
            "postgres",
            "SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'",
        )?;
        if port.is_empty() {
            bail!("node{standby} has no streaming WAL receiver");
        }
        self.nodes
            .iter()
            .find(|n| n.port.to_string() == port)
            .map(|n| n.id)
            .ok_or_else(|| anyhow!("node{standby} streams from unknown port {port}"))
    }

    /// Waits until standby `standby` has replayed everything its upstream
    /// primary had written when the wait started.
    pub fn wait_caught_up(&self, standby: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + REPL_TIMEOUT;
        let primary = loop {
            match self.upstream_of(standby) {
                Ok(p) => break p,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        };
        let lsn = self.psql_db(primary, "postgres", "SELECT pg_current_wal_lsn()")?;
        let check = format!(
            "SELECT pg_last_wal_replay_lsn() >= {}::pg_lsn",
            sql_literal(&lsn)
        );
        loop {
            if parse_bool(&self.psql_db(standby, "postgres", &check)?)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "node{standby} did not replay up to {lsn} of node{primary} in {REPL_TIMEOUT:?}"
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until at least `count` standbys are `streaming` from `primary`.
    pub fn wait_streaming(&self, primary: usize, count: usize) -> anyhow::Result<()> {
        let sql = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'";
        self.poll(primary, sql, REPL_TIMEOUT, |out| {
            out.parse::<usize>().is_ok_and(|n| n >= count)
        })
        .with_context(|| format!("waiting for {count} standbys streaming from node{primary}"))
    }

    /// Waits until node `standby` (by its `cluster_name`) streams from `primary`.
    pub fn wait_standby_streaming(&self, primary: usize, standby: usize) -> anyhow::Result<()> {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' \
             AND application_name = {}",
            sql_literal(&self.node(standby).name())
        );
        self.poll(primary, &sql, REPL_TIMEOUT, |out| out == "1")
            .with_context(|| format!("waiting for node{standby} to stream from node{primary}"))
    }

    /// Turns synchronous replication on (`synchronous_standby_names='*'`) or
    /// off on node `i` with ALTER SYSTEM + reload, and waits until it is in
    /// effect (and, when on, a connected standby is the `sync` one).
    pub fn set_synchronous(&self, i: usize, on: bool) -> anyhow::Result<()> {
        let alter = if on {
            "ALTER SYSTEM SET synchronous_standby_names = '*'"
        } else {
            "ALTER SYSTEM RESET synchronous_standby_names"
        };
        self.psql_multi(
            i,
            "postgres",
            &[alter.into(), "SELECT pg_reload_conf()".into()],
        )?;
        let want = if on { "*" } else { "" };
        self.poll(i, "SHOW synchronous_standby_names", REPL_TIMEOUT, |o| {
            o == want
        })?;
        if on {
            let sql = "SELECT count(*) = 0 OR bool_or(sync_state = 'sync') \
                       FROM pg_stat_replication WHERE state = 'streaming'";
            self.poll(i, sql, REPL_TIMEOUT, |o| o == "t")
                .with_context(|| format!("waiting for a sync standby of node{i}"))?;
        }
        Ok(())
    }

    /// Runs `sql` on node `i` until `done(output)` or the timeout.
    fn poll(
        &self,
        i: usize,
        sql: &str,
        timeout: Duration,
        mut done: impl FnMut(&str) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.psql_db(i, "postgres", sql)?;
            if done(&out) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("node{i}: `{sql}` still returns {out:?} after {timeout:?}");
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Nodes that are running and not in recovery (more than one = split
    /// brain).
    pub fn primaries(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .filter(|n| matches!(self.is_in_recovery(n.id), Ok(false)))
            .map(|n| n.id)
            .collect()
    }

    /// libpq/tokio-postgres key=value connection string for the app user
    /// directly to node `i` over TCP.
    pub fn app_conn_string(&self, i: usize) -> String {
        let o = &self.opts;
        format!(
            "host=127.0.0.1 port={} user={} password={} dbname={}",
            self.port(i),
            conninfo_value(&o.app_user),
            conninfo_value(&o.app_password),
            conninfo_value(&o.database)
        )
    }

    /// Same as [`Cluster::app_conn_string`] for the health-check user.
    pub fn check_conn_string(&self, i: usize) -> String {
        let o = &self.opts;
        format!(
            "host=127.0.0.1 port={} user={} password={} dbname=postgres",
            self.port(i),
            conninfo_value(&o.check_user),
            conninfo_value(&o.check_password)
        )
    }

    /// Bitnami-style node list `"0:127.0.0.1:PORT0,1:127.0.0.1:PORT1,"`
    /// (trailing comma included, as pgpool's env var has it).
    pub fn backend_nodes_env(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}:127.0.0.1:{},", n.id, n.port))
            .collect()
    }
}

/// Quotes a conninfo value when needed (empty, spaces, quotes, backslashes).
fn conninfo_value(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '\'', '\\']) {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn parse_bool(s: &str) -> anyhow::Result<bool> {
    match s {
        "t" => Ok(true),
        "f" => Ok(false),
        other => bail!("expected a boolean from psql, got {other:?}"),
    }
}
