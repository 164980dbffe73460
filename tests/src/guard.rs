//! A watchdog process that cleans up a cluster if the test process dies
//! without running `Drop` (SIGKILL by a test-runner timeout, Ctrl-C, abort,
//! or a cluster parked in a `static` that is never dropped).
//!
//! The guardian is a tiny `sh` script in its own session (so terminal
//! signals aimed at the test do not reach it) that blocks reading its stdin,
//! a pipe whose write end only this process holds. When the test process
//! exits for any reason the kernel closes the pipe, `read` returns, and the
//! script stops every server process working inside the cluster directory
//! (SIGQUIT to postmasters first so they release shared memory, SIGKILL for
//! stragglers) and deletes the directory. A normal `Drop` cleans up itself
//! and then tells the guardian "ok" so it exits without doing anything.

use anyhow::Context;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

const SCRIPT: &str = r#"
trap '' HUP INT TERM PIPE
dir="$1"
IFS= read -r line
[ "$line" = ok ] && exit 0
inside() {
  for p in /proc/[0-9]*; do
    c=$(readlink "$p/cwd" 2>/dev/null) || continue
    case "$c" in "$dir"/*) echo "${p#/proc/}" ;; esac
  done
}
pids=$(inside)
[ -n "$pids" ] && kill -CONT $pids 2>/dev/null
for f in "$dir"/node*/data/postmaster.pid; do
  [ -f "$f" ] && kill -QUIT "$(head -n 1 "$f")" 2>/dev/null
done
i=0
while [ $i -lt 50 ] && [ -n "$(inside)" ]; do sleep 0.1; i=$((i+1)); done
pids=$(inside)
[ -n "$pids" ] && kill -KILL $pids 2>/dev/null
sleep 0.2
for f in "$dir"/node*/data/postmaster.pid; do
  [ -f "$f" ] || continue
  id=$(sed -n 7p "$f" | awk '{print $2}')
  [ -n "$id" ] && ipcrm -m "$id" 2>/dev/null
done
rm -rf "$dir"
"#;

/// Handle on the guardian process; see the module docs.
pub(crate) struct Guardian {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// Starts `sh -c script name args...` in its own session (terminal signals aimed at us do not
/// reach it), reading from a pipe only we hold: when we exit for any reason its `read` returns.
/// The pattern behind the fixture's guardian and the benchmarks' watchdog.
pub fn spawn_watchdog(script: &str, name: &str, args: &[&OsStr]) -> std::io::Result<Child> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .arg(name)
        .args(args)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no Rust state.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn()
}

impl Guardian {
    /// Starts a guardian responsible for the cluster directory `dir`.
    pub(crate) fn spawn(dir: &Path) -> anyhow::Result<Guardian> {
        let mut child = spawn_watchdog(SCRIPT, "pgpivot-guardian", &[dir.as_os_str()])
            .context("spawning the cleanup guardian")?;
        let stdin = child.stdin.take();
        Ok(Guardian { child, stdin })
    }

    /// Tells the guardian the cluster was cleaned up normally and reaps it.
    pub(crate) fn disarm(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"ok\n");
        }
        let _ = self.child.wait();
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        // Dropping without disarming means something went wrong between
        // spawn and normal cleanup: let the guardian do its job now.
        if self.stdin.take().is_some() {
            let _ = self.child.wait();
        }
    }
}
