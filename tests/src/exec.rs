//! Locating and running the PostgreSQL binaries.
//!
//! PostgreSQL refuses to run as root, and CI runs as root. Instead of going
//! through `runuser` (an extra PAM-session process between us and the
//! PostgreSQL tool, which complicates timeouts and kills), we switch to the
//! `postgres` account directly in the child with `CommandExt::uid/gid` —
//! exactly what `runuser -u postgres --` would do, minus the middleman.
//! When we are not root, tools run as the current user.
//!
//! Every command gets a timeout so a test never hangs forever on, say, a
//! `psql` against a SIGSTOPped server; the whole process group of the command
//! is SIGKILLed when it expires.

use anyhow::{anyhow, bail, Context};
use std::ffi::{CStr, OsStr};
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::Duration;

/// Where the PostgreSQL 15 binaries live unless `PGPIVOT_PG_BIN` says otherwise.
pub const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Environment variable overriding [`DEFAULT_PG_BIN`].
pub const PG_BIN_ENV: &str = "PGPIVOT_PG_BIN";

/// Directory holding the PostgreSQL binaries (`$PGPIVOT_PG_BIN` or the default).
pub fn pg_bin_dir() -> PathBuf {
    match std::env::var_os(PG_BIN_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_PG_BIN),
    }
}

/// Full path of a PostgreSQL binary such as `"pg_ctl"` or `"pgbench"`.
pub fn pg_bin(name: &str) -> PathBuf {
    pg_bin_dir().join(name)
}

/// Fails loudly when a required PostgreSQL binary is missing: the fixture
/// must never silently skip tests because the server is not installed.
pub fn check_pg_binaries() -> anyhow::Result<()> {
    for name in ["initdb", "pg_ctl", "pg_basebackup", "postgres", "psql"] {
        let path = pg_bin(name);
        if !path.is_file() {
            bail!(
                "PostgreSQL binary {} not found; install postgresql-15 or set {PG_BIN_ENV} \
                 to the directory holding initdb/pg_ctl/postgres",
                path.display()
            );
        }
    }
    Ok(())
}

/// True when this process runs as root and PostgreSQL tools must be run as
/// the `postgres` account.
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The account PostgreSQL runs as when we are root.
#[derive(Debug, Clone)]
pub(crate) struct PgAccount {
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Looks up the `postgres` account once (getpwnam is not thread-safe, hence
/// the `OnceLock`).
pub(crate) fn pg_account() -> anyhow::Result<PgAccount> {
    static ACCOUNT: OnceLock<Result<PgAccount, String>> = OnceLock::new();
    ACCOUNT
        .get_or_init(|| {
            // SAFETY: the name is a valid C string; the returned record is
            // copied out immediately and only used under the OnceLock.
            unsafe {
                let pw = libc::getpwnam(c"postgres".as_ptr());
                if pw.is_null() {
                    return Err("running as root but there is no `postgres` user \
                                (install postgresql-15, which creates it)"
                        .to_string());
                }
                let home = CStr::from_ptr((*pw).pw_dir).to_string_lossy().into_owned();
                Ok(PgAccount {
                    uid: (*pw).pw_uid,
                    gid: (*pw).pw_gid,
                    home: PathBuf::from(home),
                })
            }
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Makes `path` owned by the `postgres` account when we are root (no-op
/// otherwise), so the server can create its files there.
pub fn chown_to_pg(path: &Path) -> anyhow::Result<()> {
    if running_as_root() {
        let acct = pg_account()?;
        std::os::unix::fs::chown(path, Some(acct.uid), Some(acct.gid))
            .with_context(|| format!("chown {} to postgres", path.display()))?;
    }
    Ok(())
}

/// A PostgreSQL server-side tool (`initdb`, `pg_ctl`, `psql` as superuser…)
/// prepared to run as the `postgres` account when we are root.
pub(crate) fn pg_command(name: &str, cwd: &Path) -> anyhow::Result<Command> {
    let mut cmd = Command::new(pg_bin(name));
    cmd.current_dir(cwd);
    as_postgres(&mut cmd)?;
    Ok(cmd)
}

/// Makes `cmd` run as the `postgres` account when we are root (no-op otherwise): PostgreSQL,
/// PgBouncer and Pgpool-II refuse to run as root.
pub fn as_postgres(cmd: &mut Command) -> anyhow::Result<()> {
    if running_as_root() {
        let acct = pg_account()?;
        cmd.uid(acct.uid).gid(acct.gid);
        cmd.env("HOME", &acct.home)
            .env("USER", "postgres")
            .env("LOGNAME", "postgres");
    }
    Ok(())
}

/// Captured result of a finished command.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Describes a command for error messages.
fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn reader<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// `PGPIVOT_FIXTURE_TRACE=1` prints every command the fixture runs with
/// its duration (to diagnose slow or hanging tests).
fn trace_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("PGPIVOT_FIXTURE_TRACE").is_some_and(|v| v != "0"))
}

/// Runs `cmd` to completion (stdin = /dev/null), capturing its output.
///
/// With `timeout`, the command's whole process group is SIGKILLed when it
/// runs too long and an error is returned. A non-zero exit is *not* an error
/// here; see [`run_ok`].
pub(crate) fn run(cmd: &mut Command, timeout: Option<Duration>) -> anyhow::Result<CmdOutput> {
    let what = describe(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = std::time::Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("spawning {what}"))?;
    let out = reader(child.stdout.take().expect("stdout was piped"));
    let err = reader(child.stderr.take().expect("stderr was piped"));
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match timeout {
        None => rx.recv().map_err(|_| anyhow!("waiter thread vanished"))?,
        Some(t) => match rx.recv_timeout(t) {
            Ok(s) => s,
            Err(_) => {
                // SAFETY: plain kill(2) on the process group we created.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                let _ = rx.recv();
                let _ = waiter.join();
                let (o, e) = (
                    out.join().unwrap_or_default(),
                    err.join().unwrap_or_default(),
                );
                bail!("{what} timed out after {t:?}\nstdout: {o}\nstderr: {e}");
            }
        },
    }
    .with_context(|| format!("waiting for {what}"))?;
    let _ = waiter.join();
    if trace_enabled() {
        eprintln!("[pgpivot fixture] {:>8.1?} {what}", started.elapsed());
    }
    Ok(CmdOutput {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Like [`run`] but turns a non-zero exit into an error carrying the output.
pub(crate) fn run_ok(cmd: &mut Command, timeout: Duration) -> anyhow::Result<CmdOutput> {
    let what = describe(cmd);
    let out = run(cmd, Some(timeout))?;
    if !out.success() {
        let code = out
            .status
            .code()
            .map(|c| format!("exit code {c}"))
            .unwrap_or_else(|| format!("signal {:?}", out.status.signal()));
        bail!(
            "{what} failed ({code})\nstdout: {}\nstderr: {}",
            out.stdout.trim(),
            out.stderr.trim()
        );
    }
    Ok(out)
}

/// Runs `pgbench` with `PGPASSWORD=password` and the given arguments (host,
/// port, user, database and so on are up to the caller, e.g. the proxy's
/// port). Returns the output whatever the exit status; only a failure to
/// run pgbench at all is an error. pgbench is a client, so it runs as the
/// current user even when that is root.
pub fn pgbench<I, S>(password: &str, args: I) -> anyhow::Result<CmdOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let bin = pg_bin("pgbench");
    if !bin.is_file() {
        bail!(
            "pgbench not found at {} (install postgresql-15 or set {PG_BIN_ENV})",
            bin.display()
        );
    }
    let mut cmd = Command::new(bin);
    cmd.args(args).env("PGPASSWORD", password);
    run(&mut cmd, None)
}

/// `pgbench -i -q -s <scale>` straight against node 0 of `cluster` as its app user (the tables
/// the pgbench runs in tests use). Fails with pgbench's output if it fails.
/// pgbench as the fixture's `app` user (password `secret`) against database `bench` on
/// 127.0.0.1:`port` (a node or a pgpivot), with `args` (the run's options).
pub fn pgbench_app(port: u16, args: &[&str]) -> anyhow::Result<CmdOutput> {
    let port = port.to_string();
    let target = ["-h", "127.0.0.1", "-p", &port, "-U", "app"];
    pgbench(
        "secret",
        target.iter().chain(args).chain(std::iter::once(&"bench")),
    )
}

pub fn pgbench_init(cluster: &crate::Cluster, scale: u32) -> anyhow::Result<()> {
    let o = cluster.options();
    let out = pgbench(
        &o.app_password,
        [
            "-i",
            "-q",
            "-s",
            &scale.to_string(),
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port(0).to_string(),
            "-U",
            &o.app_user,
            &o.database,
        ],
    )?;
    if !out.success() {
        bail!("pgbench -i failed: {}", out.stderr);
    }
    Ok(())
}
