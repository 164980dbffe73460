//! A server process the benchmarks started (PgBouncer, Pgpool-II, pgpivot), in a process group
//! of its own, stopped with its whole group when dropped, and watched by the reaper meanwhile.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::reaper;

pub struct Daemon {
    pub name: &'static str,
    child: Child,
    /// Signal that asks for a quick shutdown (the group gets SIGKILL after a grace period).
    stop_signal: libc::c_int,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` in its own process group, stdout and stderr appended to `log`.
    pub fn spawn(
        name: &'static str,
        mut cmd: Command,
        log: &Path,
        stop_signal: libc::c_int,
    ) -> anyhow::Result<Daemon> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        reaper::own_group(&mut cmd);
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        reaper::watch_group(child.id());
        Ok(Daemon {
            name,
            child,
            stop_signal,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the log's tail if the process already exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 3000)
            );
        }
        Ok(())
    }

    /// Waits until `addr` accepts TCP connections (and the process is still alive).
    pub fn wait_listening(&mut self, addr: &str, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            if std::net::TcpStream::connect(addr).is_ok() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} not listening on {addr} after {timeout:?}; log:\n{}",
                    self.name,
                    tail(&self.log, 3000)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops the whole group: the stop signal, up to 5 s, then SIGKILL.
    pub fn stop(&mut self) {
        let pgid = self.child.id();
        if self.child.try_wait().ok().flatten().is_none() {
            reaper::signal_group(pgid, self.stop_signal);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Children of the group (Pgpool-II's) may outlive the leader.
        reaper::signal_group(pgid, libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        reaper::forget_group(pgid);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `max` bytes of a log file.
pub fn tail(path: &Path, max: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    String::from_utf8_lossy(&text[start..]).into_owned()
}

/// A private working directory (configs, logs, sockets) readable by the `postgres` account,
/// removed when dropped (and by the reaper if we die).
pub struct WorkDir {
    dir: Option<tempfile::TempDir>,
}

impl WorkDir {
    pub fn new(prefix: &str) -> anyhow::Result<WorkDir> {
        use std::os::unix::fs::PermissionsExt;
        let base = pgpivot_tests::default_tmp_base();
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&base)
            .with_context(|| format!("creating a temp dir in {}", base.display()))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        crate::account::chown_to_postgres(dir.path())?;
        reaper::watch_dir(dir.path());
        Ok(WorkDir { dir: Some(dir) })
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("work dir present").path()
    }

    /// Keeps the directory (for a post-mortem) instead of removing it.
    pub fn keep(mut self) -> PathBuf {
        let dir = self.dir.take().expect("work dir present");
        reaper::forget_dir(dir.path());
        dir.keep()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            let _ = dir.close();
            reaper::forget_dir(&path);
        }
    }
}
