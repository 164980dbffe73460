//! Failure injection and lifecycle control of individual nodes: the
//! operations failover tests are made of (crash, freeze, stop, restart,
//! promote, rebuild as standby).

use crate::cluster::{log_len, log_since, Cluster, TOOL_TIMEOUT};
use crate::exec::{pg_command, run_ok};
use crate::procs;
use anyhow::{anyhow, bail, Context};
use std::fs;
use std::thread;
use std::time::{Duration, Instant};

/// How long `start_node` keeps retrying while orphaned backends of a
/// SIGKILLed postmaster still hold the old shared memory segment.
const ORPHAN_WAIT: Duration = Duration::from_secs(30);

impl Cluster {
    /// TCP port of node `i` on 127.0.0.1.
    pub fn port(&self, i: usize) -> u16 {
        self.node(i).port
    }

    /// `pg_ctl` with `-D <data dir of node i>` and the given arguments.
    fn pg_ctl(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let node = self.node(i);
        let mut cmd = pg_command("pg_ctl", self.root())?;
        cmd.arg("-D").arg(&node.data_dir).args(args);
        let out = run_ok(&mut cmd, TOOL_TIMEOUT)?;
        Ok(out.stdout)
    }

    fn running_postmaster(&self, i: usize) -> anyhow::Result<i32> {
        self.node(i)
            .postmaster_pid()
            .ok_or_else(|| anyhow!("node{i} is not running (no live postmaster)"))
    }

    /// SIGKILLs only the postmaster of node `i`, like a crash of the
    /// postmaster: its backends are orphaned and linger until they notice.
    /// Returns once the postmaster is gone.
    pub fn kill9(&self, i: usize) -> anyhow::Result<()> {
        let pm = self.running_postmaster(i)?;
        procs::signal(pm, libc::SIGKILL);
        if !procs::wait_until(Duration::from_secs(10), || !procs::alive(pm)) {
            bail!("postmaster {pm} of node{i} survived SIGKILL");
        }
        Ok(())
    }

    /// SIGKILLs the postmaster and every other process of node `i` (a
    /// machine crash, as far as this node is concerned).
    pub fn kill9_all(&self, i: usize) -> anyhow::Result<()> {
        let data_dir = &self.node(i).data_dir;
        if procs::node_processes(data_dir).is_empty() {
            bail!("node{i} has no running processes");
        }
        if !procs::kill_all(data_dir) {
            bail!("could not kill every process of node{i}");
        }
        Ok(())
    }

    /// `pg_ctl stop -m immediate` (no shutdown checkpoint; crash recovery on
    /// the next start).
    pub fn stop_immediate(&self, i: usize) -> anyhow::Result<()> {
        self.pg_ctl(i, &["stop", "-m", "immediate", "-w", "-t", "60"])
            .with_context(|| format!("stopping node{i} (immediate)"))?;
        Ok(())
    }

    /// `pg_ctl stop -m fast` (clean shutdown: clients disconnected,
    /// checkpoint written).
    pub fn stop_fast(&self, i: usize) -> anyhow::Result<()> {
        self.pg_ctl(i, &["stop", "-m", "fast", "-w", "-t", "60"])
            .with_context(|| format!("stopping node{i} (fast)"))?;
        Ok(())
    }

    /// `pg_ctl start -w` on node `i`'s data dir, in whatever role it has
    /// (a killed old primary comes back as a primary on its old timeline:
    /// split brain). Waits for orphaned backends of a SIGKILLed postmaster
    /// to exit, retrying for up to 30 s while they block the start.
    pub fn start_node(&self, i: usize) -> anyhow::Result<()> {
        let node = self.node(i);
        if let Some(pm) = node.postmaster_pid() {
            bail!("node{i} is already running (postmaster {pm})");
        }
        let deadline = Instant::now() + ORPHAN_WAIT;
        loop {
            self.clear_stale_lock(i);
            let before = log_len(&node.log_file);
            let log = node.log_file.to_string_lossy().into_owned();
            let err = match self.pg_ctl(i, &["start", "-w", "-t", "60", "-l", &log]) {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let new_log = log_since(&node.log_file, before);
            let blocked = new_log.contains("pre-existing shared memory block")
                || new_log.contains("already exists");
            if blocked && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(200));
                continue;
            }
            return Err(err.context(format!("starting node{i}; server log:\n{new_log}")));
        }
    }

    /// A SIGKILLed postmaster can stay a zombie when PID 1 does not reap
    /// orphans, and PostgreSQL then believes it is still running. Once no
    /// process works in the data dir any more, the lock file and shared
    /// memory are provably stale, so remove them.
    fn clear_stale_lock(&self, i: usize) {
        let data_dir = &self.node(i).data_dir;
        let pid_file = data_dir.join("postmaster.pid");
        if pid_file.exists()
            && self.node(i).postmaster_pid().is_none()
            && procs::in_dir(data_dir).is_empty()
        {
            procs::remove_stale_shm(data_dir);
            let _ = fs::remove_file(pid_file);
        }
    }

    /// `pg_ctl promote -w`: node `i` leaves recovery and becomes a primary
    /// on a new timeline.
    pub fn promote(&self, i: usize) -> anyhow::Result<()> {
        self.pg_ctl(i, &["promote", "-w", "-t", "60"])
            .with_context(|| format!("promoting node{i}"))?;
        Ok(())
    }

    /// SIGSTOPs the postmaster and all its processes (a frozen or
    /// partitioned server: connections hang instead of failing).
    pub fn sigstop(&self, i: usize) -> anyhow::Result<()> {
        let pm = self.running_postmaster(i)?;
        // Postmaster first so it cannot fork new children meanwhile.
        procs::signal(pm, libc::SIGSTOP);
        for pid in procs::node_processes(&self.node(i).data_dir) {
            procs::signal(pid, libc::SIGSTOP);
        }
        Ok(())
    }

    /// SIGCONTs every process of node `i` (undoes [`Cluster::sigstop`]).
    pub fn sigcont(&self, i: usize) -> anyhow::Result<()> {
        let pids = procs::node_processes(&self.node(i).data_dir);
        if pids.is_empty() {
            bail!("node{i} has no processes to continue");
        }
        // Children first, postmaster (first in the list) last.
        for pid in pids.iter().rev() {
            procs::signal(*pid, libc::SIGCONT);
        }
        Ok(())
    }

    /// Rebuilds node `i` as a fresh standby of `primary`: stops whatever is
    /// left of node `i`, deletes its data dir, takes a new base backup from
    /// `primary` (re-creating slot `slotI` there), starts it on the same
    /// port and waits until it streams. This is how a dead old primary
    /// rejoins after a failover.
    pub fn restart_as_standby_of(&self, i: usize, primary: usize) -> anyhow::Result<()> {
        if i == primary {
            bail!("node{i} cannot be a standby of itself");
        }
        let node = self.node(i);
        for pid in procs::node_processes(&node.data_dir) {
            procs::signal(pid, libc::SIGCONT);
        }
        if let Some(pm) = node.postmaster_pid() {
            procs::signal(pm, libc::SIGQUIT);
            procs::wait_until(Duration::from_secs(5), || {
                procs::node_processes(&node.data_dir).is_empty()
            });
        }
        if !procs::kill_all(&node.data_dir) {
            bail!("could not stop the old processes of node{i}");
        }
        procs::remove_stale_shm(&node.data_dir);
        if node.data_dir.exists() {
            fs::remove_dir_all(&node.data_dir)
                .with_context(|| format!("removing {}", node.data_dir.display()))?;
        }
        self.drop_slot(primary, &node.slot_name())?;
        self.base_backup(i, primary)?;
        self.start_node(i)?;
        self.wait_standby_streaming(primary, i)
    }

    /// Repoints the running standby `i` at `primary` without a new base
    /// backup (`ALTER SYSTEM SET primary_conninfo/primary_slot_name` +
    /// reload; slot `slotI` is created on `primary` if missing) and waits
    /// until it streams. Like a real `follow`, this only works while the
    /// standby has not replayed WAL beyond the new primary's timeline
    /// switch; otherwise it times out and [`Cluster::restart_as_standby_of`]
    /// is the way back.
    pub fn follow(&self, i: usize, primary: usize) -> anyhow::Result<()> {
        if i == primary {
            bail!("node{i} cannot follow itself");
        }
        let node = self.node(i);
        let slot = crate::node::sql_literal(&node.slot_name());
        self.psql_db(
            primary,
            "postgres",
            &format!(
                "SELECT count(pg_create_physical_replication_slot({slot}, true)) \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = {slot})"
            ),
        )?;
        let conninfo = format!(
            "host=127.0.0.1 port={} user=postgres application_name={}",
            self.port(primary),
            node.name()
        );
        self.psql_multi(
            i,
            "postgres",
            &[
                format!(
                    "ALTER SYSTEM SET primary_conninfo = {}",
                    crate::node::sql_literal(&conninfo)
                ),
                format!("ALTER SYSTEM SET primary_slot_name = {slot}"),
                "SELECT pg_reload_conf()".into(),
            ],
        )?;
        self.wait_standby_streaming(primary, i)
    }

    /// Drops replication slot `slot` on node `primary` if it exists, waiting
    /// for a walsender of a dead standby to release it.
    fn drop_slot(&self, primary: usize, slot: &str) -> anyhow::Result<()> {
        let lit = crate::node::sql_literal(slot);
        let sql = format!(
            "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots \
             WHERE slot_name = {lit} AND NOT active"
        );
        let exists = format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = {lit}");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            self.psql_db(primary, "postgres", &sql)?;
            if self.psql_db(primary, "postgres", &exists)? == "0" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("replication slot {slot} on node{primary} stays active");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}
