//! repmgr on a test cluster: the reference HA topology, for real.
//!
//! With [`ClusterOptions::repmgr`](crate::ClusterOptions) the cluster is built the way repmgr
//! builds one: `repmgr primary register` on node 0, `repmgr standby clone` + `standby register`
//! for each standby, and `repmgrd` with `failover=automatic` on every node (monitor every second,
//! three reconnect attempts a second apart: a dead primary is promoted away in about 3–5 s).
//!
//! repmgr names nodes by a positive id; node `i` of the fixture is repmgr node `i + 1`, named
//! `nodeI` (so `application_name`, `cluster_name` and repmgr agree). The role `repmgr`
//! (superuser, trusted on loopback for its database and replication) owns the metadata.
//!
//! Everything runs on one machine, but `repmgr standby switchover` insists on running commands
//! on the old primary "over SSH". The cluster's `bin/ssh` is a shim, first in repmgr's `PATH`,
//! that runs the command locally, which is what SSH to 127.0.0.1 would do.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::cluster::{Cluster, TOOL_TIMEOUT};
use crate::exec::{chown_to_pg, pg_bin, pg_bin_dir, pg_command, run, run_ok, CmdOutput};
use crate::node::{write_pg_file, NODE_CONF};
use crate::procs;

/// The metadata role and database.
pub(crate) const REPMGR_USER: &str = "repmgr";

/// `pg_hba.conf` lines that let repmgr in without a password (before the fixture's own lines).
pub(crate) const HBA_LINES: &str = "host    repmgr       repmgr    127.0.0.1/32 trust\n\
                                    host    replication  repmgr    127.0.0.1/32 trust\n";

/// The `ssh` stand-in: drops ssh's options and the host, runs the command here.
const SSH_SHIM: &str = r#"#!/bin/sh
# Test-fixture stand-in for ssh to 127.0.0.1: run the remote command locally.
while [ $# -gt 0 ]; do
  case "$1" in
    -o|-l|-p|-i|-F) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] && shift
exec sh -c "$*"
"#;

/// The running `repmgrd` daemons of a cluster (killed before the nodes on drop).
#[derive(Default)]
pub(crate) struct Daemons {
    children: Vec<(usize, Child)>,
}

impl Daemons {
    fn stop(&mut self, node: Option<usize>) {
        self.children.retain_mut(|(i, child)| {
            if node.is_some_and(|n| n != *i) {
                return true;
            }
            // repmgrd runs in its own process group (with any command it runs): kill the group.
            // SAFETY: plain kill(2) on a process group we created.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
            false
        });
    }
}

impl Daemons {
    /// True when node `i` has a repmgrd that has not exited.
    fn running(&mut self, node: usize) -> bool {
        self.children
            .iter_mut()
            .any(|(i, c)| *i == node && matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        self.stop(None);
    }
}

/// One row of repmgr's event log (`repmgr cluster event`).
#[derive(Debug, Clone)]
pub struct RepmgrEvent {
    /// Fixture node index (repmgr node id − 1).
    pub node: usize,
    pub event: String,
    pub successful: bool,
    /// Seconds since the Unix epoch, with microseconds.
    pub epoch: f64,
    pub details: String,
}

impl Cluster {
    fn repmgr_conf_path(&self, i: usize) -> PathBuf {
        self.node(i).dir.join("repmgr.conf")
    }

    fn shim_dir(&self) -> PathBuf {
        self.root().join("bin")
    }

    /// repmgr's own log (repmgrd and the commands it runs) for node `i`.
    pub fn repmgr_log_tail(&self, i: usize, max_bytes: usize) -> String {
        let text = fs::read(self.node(i).dir.join("repmgr.log")).unwrap_or_default();
        let start = text.len().saturating_sub(max_bytes);
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// Writes the ssh shim (once per cluster).
    pub(crate) fn write_ssh_shim(&self) -> anyhow::Result<()> {
        let dir = self.shim_dir();
        fs::create_dir_all(&dir)?;
        let path = dir.join("ssh");
        fs::write(&path, SSH_SHIM)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        chown_to_pg(&dir)?;
        chown_to_pg(&path)
    }

    /// Writes `nodeN/repmgr.conf` for node `i` (rewritten if its port changes).
    pub(crate) fn write_repmgr_conf(&self, i: usize) -> anyhow::Result<()> {
        let node = self.node(i);
        let bin = pg_bin_dir();
        let (bin, conf, data, log) = (
            bin.display(),
            self.repmgr_conf_path(i),
            node.data_dir.display(),
            node.log_file.display(),
        );
        let conf_s = conf.display();
        let text = format!(
            "# Written by the pgpivot test fixture.\n\
             node_id={id}\n\
             node_name='{name}'\n\
             conninfo='host=127.0.0.1 port={port} user={REPMGR_USER} dbname={REPMGR_USER} connect_timeout=2'\n\
             data_directory='{data}'\n\
             pg_bindir='{bin}'\n\
             use_replication_slots=yes\n\
             log_file='{repmgr_log}'\n\
             log_level=INFO\n\
             failover=automatic\n\
             promote_command='{bin}/repmgr standby promote -f {conf_s} --log-to-file'\n\
             follow_command='{bin}/repmgr standby follow -f {conf_s} --log-to-file --upstream-node-id=%n'\n\
             monitor_interval_secs=1\n\
             reconnect_attempts=3\n\
             reconnect_interval=1\n\
             primary_visibility_consensus=false\n\
             repmgrd_pid_file='{pid}'\n\
             ssh_options='-q'\n\
             service_start_command='{bin}/pg_ctl -D {data} -l {log} -w -t 60 start'\n\
             service_stop_command='{bin}/pg_ctl -D {data} -m fast -w -t 60 stop'\n\
             service_restart_command='{bin}/pg_ctl -D {data} -l {log} -m fast -w -t 60 restart'\n\
             service_promote_command='{bin}/pg_ctl -D {data} -w -t 60 promote'\n",
            id = i + 1,
            name = node.name(),
            port = node.port,
            repmgr_log = node.dir.join("repmgr.log").display(),
            pid = node.dir.join("repmgrd.pid").display(),
        );
        write_pg_file(&conf, &text)
    }

    /// `repmgr -f nodeN/repmgr.conf <args>` as the postgres account, with the ssh shim first in
    /// `PATH`. Returns the output whatever the exit status.
    pub fn repmgr(&self, i: usize, args: &[&str]) -> anyhow::Result<CmdOutput> {
        let mut cmd = self.repmgr_command(i)?;
        cmd.args(args);
        run(&mut cmd, Some(TOOL_TIMEOUT))
    }

    /// Like [`Cluster::repmgr`], failing on a non-zero exit.
    pub fn repmgr_ok(&self, i: usize, args: &[&str]) -> anyhow::Result<CmdOutput> {
        let mut cmd = self.repmgr_command(i)?;
        cmd.args(args);
        run_ok(&mut cmd, TOOL_TIMEOUT).with_context(|| format!("repmgr on node{i}"))
    }

    fn repmgr_command(&self, i: usize) -> anyhow::Result<Command> {
        let mut cmd = pg_command("repmgr", &self.node(i).dir)?;
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", self.shim_dir().display()))
            .arg("-f")
            .arg(self.repmgr_conf_path(i));
        Ok(cmd)
    }

    /// `repmgr primary register` on node 0 (installs the extension, records the node).
    pub(crate) fn repmgr_register_primary(&self) -> anyhow::Result<()> {
        self.write_ssh_shim()?;
        self.write_repmgr_conf(0)?;
        self.repmgr_ok(0, &["primary", "register"])?;
        Ok(())
    }

    /// `repmgr standby clone` of node `i` from node 0 into its (absent) data dir; the per-node
    /// settings are written afterwards (the clone copied node 0's).
    pub(crate) fn repmgr_clone(&self, i: usize) -> anyhow::Result<()> {
        self.write_repmgr_conf(i)?;
        let port = self.port(0).to_string();
        self.repmgr_ok(
            i,
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                REPMGR_USER,
                "-d",
                REPMGR_USER,
                "standby",
                "clone",
                "--fast-checkpoint",
            ],
        )?;
        self.node(i).write_node_conf()
    }

    /// `repmgr standby register` of the running standby `i` (upstream: node 0).
    pub(crate) fn repmgr_register_standby(&self, i: usize) -> anyhow::Result<()> {
        self.write_repmgr_conf(i)?;
        self.repmgr_ok(i, &["standby", "register", "--upstream-node-id=1"])?;
        Ok(())
    }

    /// Starts `repmgrd` (foreground, own process group) on node `i`.
    pub fn start_repmgrd(&self, i: usize) -> anyhow::Result<()> {
        let mut cmd = pg_command("repmgrd", &self.node(i).dir)?;
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", self.shim_dir().display()))
            .arg("-f")
            .arg(self.repmgr_conf_path(i))
            .arg("--daemonize=false")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().context("spawning repmgrd")?;
        self.lock_daemons().children.push((i, child));
        Ok(())
    }

    /// Kills `repmgrd` on node `i` (it will not promote or follow any more).
    pub fn stop_repmgrd(&self, i: usize) {
        self.lock_daemons().stop(Some(i));
    }

    pub(crate) fn stop_all_repmgrd(&self) {
        self.lock_daemons().stop(None);
    }

    fn lock_daemons(&self) -> std::sync::MutexGuard<'_, Daemons> {
        self.repmgrd.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until repmgrd on every node reports that it monitors (a `repmgrd_start` event
    /// per node), so a failure injected next is noticed.
    pub fn wait_repmgrd_monitoring(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let started = self
                .repmgr_events(0)
                .map(|ev| {
                    (0..self.nodes.len()).all(|i| {
                        ev.iter()
                            .any(|e| e.node == i && e.event == "repmgrd_start" && e.successful)
                    })
                })
                .unwrap_or(false);
            if started {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("repmgrd did not start monitoring on every node within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// repmgr's event log (`repmgr.events`, what `repmgr cluster event` shows) read on node
    /// `on`, oldest first, with sub-second timestamps.
    pub fn repmgr_events(&self, on: usize) -> anyhow::Result<Vec<RepmgrEvent>> {
        let out = self.psql_db(
            on,
            REPMGR_USER,
            "SELECT node_id, event, successful, extract(epoch from event_timestamp), \
             replace(coalesce(details, ''), '|', '/') \
             FROM repmgr.events ORDER BY event_timestamp",
        )?;
        let mut events = Vec::new();
        for line in out.lines().filter(|l| !l.is_empty()) {
            let f: Vec<&str> = line.splitn(5, '|').collect();
            if f.len() < 5 {
                continue;
            }
            events.push(RepmgrEvent {
                node: f[0].parse::<usize>().unwrap_or(1).saturating_sub(1),
                event: f[1].to_string(),
                successful: f[2] == "t",
                epoch: f[3].parse().unwrap_or(0.0),
                details: f[4].to_string(),
            });
        }
        Ok(events)
    }

    /// Waits until repmgrd has promoted node `i` (it is out of recovery and repmgr logged a
    /// successful `standby_promote` for it at or after `since`, epoch seconds); returns that
    /// event.
    pub fn wait_repmgr_promoted(
        &self,
        i: usize,
        since: f64,
        timeout: Duration,
    ) -> anyhow::Result<RepmgrEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if matches!(self.is_in_recovery(i), Ok(false)) {
                if let Ok(ev) = self.repmgr_events(i) {
                    if let Some(e) = ev.into_iter().rev().find(|e| {
                        e.node == i
                            && e.event == "standby_promote"
                            && e.successful
                            && e.epoch >= since
                    }) {
                        return Ok(e);
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "repmgrd did not promote node{i} within {timeout:?}; repmgr log:\n{}",
                    self.repmgr_log_tail(i, 4000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `repmgr node rejoin --force-rewind` of the stopped (or crashed) node `i` to `primary`:
    /// pg_rewind onto the new timeline, standby configuration, start, attach. The per-node
    /// settings file is kept (pg_rewind would copy the primary's).
    pub fn repmgr_rejoin(&self, i: usize, primary: usize) -> anyhow::Result<CmdOutput> {
        let data_dir = self.node(i).data_dir.clone();
        // Whatever is left of a crashed postmaster (orphans, lock file) must go first.
        procs::kill_all(&data_dir);
        procs::remove_stale_shm(&data_dir);
        let _ = fs::remove_file(data_dir.join("postmaster.pid"));
        // pg_rewind reads the source's timeline from its control file, which a just-promoted
        // primary updates only at its first checkpoint: without one it finds "the same
        // timeline, no rewind required" and the node cannot follow.
        self.psql_db(primary, "postgres", "CHECKPOINT")?;
        let conninfo = format!(
            "host=127.0.0.1 port={} user={REPMGR_USER} dbname={REPMGR_USER} connect_timeout=2",
            self.port(primary)
        );
        // (repmgr keeps the files in `<dir>/repmgr-config-archive-nodeN` meanwhile)
        let archive_arg = format!("--config-archive-dir={}", self.node(i).dir.display());
        let keep_arg = format!("--config-files={NODE_CONF}");
        let out = self.repmgr_ok(
            i,
            &[
                "-d",
                &conninfo,
                "node",
                "rejoin",
                "--force-rewind",
                &keep_arg,
                &archive_arg,
                "--verbose",
            ],
        )?;
        // repmgrd gives up on a node whose server it saw die; an operator restarts it.
        if !self.lock_daemons().running(i) {
            self.stop_repmgrd(i);
            self.start_repmgrd(i)?;
        }
        Ok(out)
    }

    /// `repmgr standby switchover` run on standby `i`: the primary is shut down cleanly, `i`
    /// promoted, the old primary rejoined as its standby. repmgrd is paused meanwhile.
    pub fn repmgr_switchover(&self, i: usize) -> anyhow::Result<CmdOutput> {
        self.repmgr_ok(i, &["standby", "switchover", "--verbose"])
    }

    /// `repmgr cluster show` as repmgr prints it.
    pub fn repmgr_cluster_show(&self, on: usize) -> String {
        match self.repmgr(on, &["cluster", "show"]) {
            Ok(out) => out.stdout,
            Err(e) => format!("(repmgr cluster show failed: {e})"),
        }
    }
}

/// True when the repmgr binaries are installed next to the PostgreSQL ones.
pub(crate) fn check_repmgr_binaries() -> anyhow::Result<()> {
    for b in ["repmgr", "repmgrd"] {
        if !pg_bin(b).is_file() {
            bail!(
                "{} not found (install postgresql-15-repmgr: deploy/local/install-deps.sh)",
                pg_bin(b).display()
            );
        }
    }
    Ok(())
}
