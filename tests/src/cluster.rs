//! Creating and tearing down a primary + streaming-standby cluster.
//!
//! Start-up: `initdb` node 0, start it, create the app role, database and
//! probe table, then `pg_basebackup -R -X stream -C -S slotN` each standby
//! from node 0 and wait until all of them are `streaming`. Everything
//! listens on 127.0.0.1 and on a unix socket directory inside the
//! cluster's private temp dir.
//!
//! Tear-down (`Drop`, also on panic): SIGCONT (a test may have SIGSTOPped a
//! node), immediate shutdown of every postmaster, SIGKILL for anything
//! still working in a data directory (orphaned backends of a SIGKILLed
//! postmaster), removal of leaked shared memory and of the temp dir. A
//! guardian process (see `guard.rs`) does the same if we die without
//! running `Drop`.

use crate::exec::{check_pg_binaries, pg_command, run_ok};
use crate::guard::Guardian;
use crate::node::{hba_conf, sql_ident, sql_literal, write_pg_file, AuthMethod, Node, NODE_CONF};
use crate::ports::free_port;
use crate::procs;
use crate::repmgr::{check_repmgr_binaries, Daemons, REPMGR_USER};
use crate::tmpdir::make_tempdir;
use anyhow::Context;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

/// Timeout for initdb / pg_basebackup / pg_ctl invocations.
pub(crate) const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// How to build a test cluster. `Default` gives one asynchronous standby,
/// SCRAM auth, user `app`/`secret` owning database `bench`.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of streaming standbys (nodes 1..=standbys).
    pub standbys: usize,
    /// Make node 0 a synchronous primary (`synchronous_standby_names='*'`,
    /// `synchronous_commit=on`) once the standbys stream, so acknowledged
    /// commits are on a standby. Set with `ALTER SYSTEM` on node 0 only:
    /// a promoted standby is an asynchronous primary (otherwise it would
    /// hang on every commit for lack of a standby of its own); use
    /// [`Cluster::set_synchronous`] to change that.
    pub synchronous: bool,
    /// Authentication for TCP clients on 127.0.0.1.
    pub auth_method: AuthMethod,
    /// Application role (LOGIN, owns `database` and `pgpivot_probe`).
    pub app_user: String,
    pub app_password: String,
    /// Application database.
    pub database: String,
    /// Health-check role (LOGIN, member of pg_monitor).
    pub check_user: String,
    pub check_password: String,
    pub max_connections: u32,
    /// Extra `postgresql.conf` lines for every node (before the per-node
    /// include, after the fixture's defaults, so they override those).
    pub extra_conf: Vec<String>,
    /// Build and run the cluster with repmgr (see `repmgr.rs`): standbys are cloned and
    /// registered by repmgr, and repmgrd (automatic failover) runs on every node.
    pub repmgr: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            standbys: 1,
            synchronous: false,
            auth_method: AuthMethod::ScramSha256,
            app_user: "app".into(),
            app_password: "secret".into(),
            database: "bench".into(),
            check_user: "checker".into(),
            check_password: "checkpw".into(),
            max_connections: 200,
            extra_conf: Vec::new(),
            repmgr: false,
        }
    }
}

/// A running primary/standby cluster that cleans up after itself.
pub struct Cluster {
    /// Node 0 is the initial primary, nodes 1.. its standbys.
    pub nodes: Vec<Node>,
    pub(crate) opts: ClusterOptions,
    root: PathBuf,
    tmp: Option<TempDir>,
    guardian: Option<Guardian>,
    /// repmgrd daemons (repmgr clusters only).
    pub(crate) repmgrd: std::sync::Mutex<Daemons>,
}

impl Cluster {
    /// Creates and starts a cluster; returns once every standby streams
    /// from node 0 (and, if requested, node 0 is synchronous).
    pub fn start(opts: ClusterOptions) -> anyhow::Result<Cluster> {
        check_pg_binaries()?;
        if opts.repmgr {
            check_repmgr_binaries()?;
        }
        let tmp = make_tempdir()?;
        let root = tmp.path().to_path_buf();
        let guardian = Guardian::spawn(&root)?;
        // From here on, an early `?` drops `cluster`, which cleans up.
        let mut cluster = Cluster {
            nodes: Vec::new(),
            opts,
            root,
            tmp: Some(tmp),
            guardian: Some(guardian),
            repmgrd: Default::default(),
        };
        let repmgr = cluster.opts.repmgr;
        cluster.init_primary()?;
        cluster.create_app_objects()?;
        if repmgr {
            cluster.repmgr_register_primary()?;
        }
        for _ in 0..cluster.opts.standbys {
            let id = cluster.nodes.len();
            cluster
                .nodes
                .push(Node::create(&cluster.root, id, free_port())?);
            if repmgr {
                cluster.repmgr_clone(id)?;
            } else {
                cluster.base_backup(id, 0)?;
            }
            cluster.start_first_time(id)?;
            if repmgr {
                cluster.repmgr_register_standby(id)?;
            }
        }
        cluster.wait_streaming(0, cluster.opts.standbys)?;
        if cluster.opts.synchronous {
            cluster.set_synchronous(0, true)?;
        }
        if repmgr {
            for i in 0..cluster.nodes.len() {
                cluster.start_repmgrd(i)?;
            }
            cluster.wait_repmgrd_monitoring(Duration::from_secs(30))?;
        }
        Ok(cluster)
    }

    /// The options this cluster was built with.
    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    /// The cluster's temp directory (holds `nodeN/`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Node `i`; panics with a clear message if there is no such node.
    pub fn node(&self, i: usize) -> &Node {
        self.nodes.get(i).unwrap_or_else(|| {
            panic!(
                "cluster has {} nodes, node{i} does not exist",
                self.nodes.len()
            )
        })
    }

    fn init_primary(&mut self) -> anyhow::Result<()> {
        let node = Node::create(&self.root, 0, free_port())?;
        let mut initdb = pg_command("initdb", &self.root)?;
        initdb
            .arg("-D")
            .arg(&node.data_dir)
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "-A", "trust"])
            .args(["--no-sync", "--no-instructions"]);
        run_ok(&mut initdb, TOOL_TIMEOUT).context("initdb")?;
        write_pg_file(
            &node.data_dir.join("pg_hba.conf"),
            &hba_conf(self.opts.auth_method, self.opts.repmgr),
        )?;
        let conf = node.data_dir.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf)?;
        text.push_str(&self.common_conf());
        write_pg_file(&conf, &text)?;
        node.write_node_conf()?;
        self.nodes.push(node);
        self.start_first_time(0)
    }

    /// Settings shared by all nodes (copied to standbys by pg_basebackup).
    fn common_conf(&self) -> String {
        let o = &self.opts;
        let mut s = format!(
            "\n# pgpivot test fixture\n\
             listen_addresses = '127.0.0.1'\n\
             max_connections = {}\n\
             shared_buffers = 32MB\n\
             wal_level = replica\n\
             wal_log_hints = on\n\
             max_wal_senders = 10\n\
             max_replication_slots = 10\n\
             hot_standby = on\n\
             fsync = off\n\
             dynamic_shared_memory_type = mmap\n\
             synchronous_commit = on\n\
             wal_retrieve_retry_interval = '500ms'\n\
             password_encryption = '{}'\n\
             log_line_prefix = '%m [%p] %q%a@%d '\n",
            o.max_connections,
            o.auth_method.password_encryption()
        );
        if o.repmgr {
            s.push_str("shared_preload_libraries = 'repmgr'\n");
        }
        for line in &o.extra_conf {
            s.push_str(line);
            s.push('\n');
        }
        s.push_str(&format!("include_if_exists = '{NODE_CONF}'\n"));
        s
    }

    fn create_app_objects(&self) -> anyhow::Result<()> {
        let o = &self.opts;
        let (app, check, db) = (
            sql_ident(&o.app_user),
            sql_ident(&o.check_user),
            sql_ident(&o.database),
        );
        let mut stmts = vec![
            format!(
                "CREATE ROLE {app} LOGIN PASSWORD {}",
                sql_literal(&o.app_password)
            ),
            format!(
                "CREATE ROLE {check} LOGIN PASSWORD {} IN ROLE pg_monitor",
                sql_literal(&o.check_password)
            ),
        ];
        if o.repmgr {
            stmts.push(format!(
                "CREATE ROLE {REPMGR_USER} LOGIN SUPERUSER REPLICATION"
            ));
            stmts.push(format!("CREATE DATABASE {REPMGR_USER} OWNER {REPMGR_USER}"));
        }
        if o.database == "postgres" {
            stmts.push(format!("ALTER DATABASE {db} OWNER TO {app}"));
        } else {
            stmts.push(format!("CREATE DATABASE {db} OWNER {app}"));
        }
        self.psql_multi(0, "postgres", &stmts)
            .context("creating roles and database")?;
        let table = [
            "CREATE TABLE pgpivot_probe (id bigint PRIMARY KEY, \
             node text DEFAULT current_setting('cluster_name'), \
             ts timestamptz DEFAULT clock_timestamp())"
                .to_string(),
            format!("ALTER TABLE pgpivot_probe OWNER TO {app}"),
        ];
        self.psql_multi(0, &o.database, &table)
            .context("creating pgpivot_probe")?;
        Ok(())
    }

    /// `pg_basebackup` node `i` from `primary` into node `i`'s (absent)
    /// data dir and make it a standby streaming through slot `slotI`.
    pub(crate) fn base_backup(&self, i: usize, primary: usize) -> anyhow::Result<()> {
        let node = self.node(i);
        let mut bb = pg_command("pg_basebackup", &self.root)?;
        bb.arg("-D")
            .arg(&node.data_dir)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.node(primary).port.to_string(),
            ])
            .args([
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "-C",
                "-S",
                &node.slot_name(),
            ])
            .args(["-c", "fast", "--no-sync"]);
        run_ok(&mut bb, TOOL_TIMEOUT)
            .with_context(|| format!("pg_basebackup of node{i} from node{primary}"))?;
        node.write_node_conf()?;
        // The primary's ALTER SYSTEM settings came along; a standby must not
        // inherit synchronous replication (see ClusterOptions::synchronous).
        let auto = node.data_dir.join("postgresql.auto.conf");
        let text = fs::read_to_string(&auto).unwrap_or_default();
        let kept: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("synchronous_standby_names"))
            .map(|l| format!("{l}\n"))
            .collect();
        write_pg_file(&auto, &kept)
    }

    /// First start of a brand-new node: if another process grabbed the
    /// port between `free_port` and the bind, retry once with a new port.
    fn start_first_time(&mut self, i: usize) -> anyhow::Result<()> {
        let before = log_len(&self.nodes[i].log_file);
        match self.start_node(i) {
            Ok(()) => Ok(()),
            Err(e) => {
                let log = log_since(&self.nodes[i].log_file, before);
                if !(log.contains("could not bind") || log.contains("could not create any TCP/IP"))
                {
                    return Err(e);
                }
                self.nodes[i].port = free_port();
                self.nodes[i].write_node_conf()?;
                self.start_node(i)
                    .context("second start attempt with a fresh port after a port clash")
            }
        }
    }
}

pub(crate) fn log_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Server log written after byte offset `from` (start-up errors).
pub(crate) fn log_since(path: &Path, from: u64) -> String {
    let text = fs::read(path).unwrap_or_default();
    let from = (from as usize).min(text.len());
    String::from_utf8_lossy(&text[from..]).into_owned()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // repmgrd first: it must not restart, promote or rejoin anything while we stop nodes.
        self.stop_all_repmgrd();
        // Stop all nodes together: wake them, ask for immediate shutdown
        // (what `pg_ctl stop -m immediate` sends), then kill stragglers.
        for node in &self.nodes {
            for pid in procs::node_processes(&node.data_dir) {
                procs::signal(pid, libc::SIGCONT);
            }
            if let Some(pm) = node.postmaster_pid() {
                procs::signal(pm, libc::SIGQUIT);
            }
        }
        procs::wait_until(Duration::from_secs(5), || {
            self.nodes
                .iter()
                .all(|n| procs::node_processes(&n.data_dir).is_empty())
        });
        for node in &self.nodes {
            if !procs::kill_all(&node.data_dir) {
                eprintln!(
                    "pgpivot fixture: could not kill all processes of {}",
                    node.name()
                );
            }
            procs::remove_stale_shm(&node.data_dir);
        }
        if let Some(tmp) = self.tmp.take() {
            let path = tmp.path().to_path_buf();
            if let Err(e) = tmp.close() {
                eprintln!("pgpivot fixture: removing {}: {e}", path.display());
            }
        }
        if let Some(g) = self.guardian.as_mut() {
            g.disarm();
        }
    }
}
