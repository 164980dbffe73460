//! Nothing the benchmarks start may outlive them, whether they end normally, fail, are
//! interrupted (Ctrl-C, SIGTERM) or are killed outright.
//!
//! * Normal end and errors: every process group and directory is owned by a value whose `Drop`
//!   stops or removes it (the PostgreSQL clusters clean up the same way, see `pgpivot-tests`).
//! * Ctrl-C / SIGTERM / SIGHUP: [`install`] blocks those signals in every thread and waits for
//!   them on one; on arrival it exits the process, which the next point turns into cleanup.
//! * Any exit at all (including SIGKILL): a watchdog shell in its own session reads a pipe whose
//!   write end only this process holds. We tell it each process group and directory as we create
//!   them (and again when we have cleaned them up ourselves); when the pipe closes without a
//!   final `ok` it SIGKILLs the groups still listed and removes the directories. The clusters'
//!   own guardians do the same for PostgreSQL.
//!
//! Every process we start runs in its own process group (so a terminal's Ctrl-C reaches only
//! us, and the whole group — Pgpool-II's children, pgbench's threads — can be signalled at once).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command};
use std::sync::{Mutex, OnceLock};

const SCRIPT: &str = r#"
trap '' HUP INT TERM PIPE
groups=" "
dirs=""
while IFS= read -r line; do
  case "$line" in
    ok) exit 0 ;;
    "+g "*) groups="$groups${line#+g } " ;;
    "-g "*) groups=$(printf '%s' "$groups" | sed "s/ ${line#-g } / /") ;;
    "+d "*) dirs="$dirs
${line#+d }" ;;
    "-d "*) dirs=$(printf '%s\n' "$dirs" | grep -vxF -- "${line#-d }") ;;
  esac
done
for g in $groups; do kill -TERM "-$g" 2>/dev/null; done
sleep 1
for g in $groups; do kill -KILL "-$g" 2>/dev/null; done
printf '%s\n' "$dirs" | while IFS= read -r d; do [ -n "$d" ] && rm -rf -- "$d"; done
"#;

struct Watchdog {
    stdin: Option<ChildStdin>,
    child: Child,
}

fn watchdog() -> &'static Mutex<Option<Watchdog>> {
    static W: OnceLock<Mutex<Option<Watchdog>>> = OnceLock::new();
    W.get_or_init(|| {
        let w = match pgpivot_tests::spawn_watchdog(SCRIPT, "pgpivot-bench-watchdog", &[]) {
            Ok(mut child) => Some(Watchdog {
                stdin: child.stdin.take(),
                child,
            }),
            Err(e) => {
                eprintln!("warning: no cleanup watchdog ({e}); a killed run may leave processes");
                None
            }
        };
        Mutex::new(w)
    })
}

fn tell(line: &str) {
    let mut g = watchdog().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(w) = g.as_mut() {
        if let Some(stdin) = w.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }
}

/// The process group `pgid` must be killed if we die.
pub fn watch_group(pgid: u32) {
    tell(&format!("+g {pgid}"));
}

/// The group is gone (we stopped it ourselves).
pub fn forget_group(pgid: u32) {
    tell(&format!("-g {pgid}"));
}

/// `dir` must be removed if we die.
pub fn watch_dir(dir: &Path) {
    tell(&format!("+d {}", dir.display()));
}

pub fn forget_dir(dir: &Path) {
    tell(&format!("-d {}", dir.display()));
}

/// Normal end: everything was cleaned up, the watchdog can go.
pub fn disarm() {
    let mut g = watchdog().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(mut w) = g.take() {
        if let Some(mut stdin) = w.stdin.take() {
            let _ = stdin.write_all(b"ok\n");
        }
        let _ = w.child.wait();
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (call it first in `main`, before any other
/// thread or runtime exists, so every thread inherits the mask) and waits for them on a thread
/// of their own: on arrival the process exits with 128 + signal, and the watchdogs clean up.
pub fn install() {
    // Start the watchdog now, so it exists before anything it must clean up.
    let _ = watchdog();
    // SAFETY: sigset manipulation on a local set; pthread_sigmask on the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let set = SigSet(set);
        std::thread::spawn(move || {
            let set = set;
            let mut sig: libc::c_int = 0;
            if libc::sigwait(&set.0, &mut sig) == 0 {
                eprintln!("\ninterrupted (signal {sig}): stopping everything this run started");
                // Dropping the watchdog's pipe (by exiting) makes it and the clusters' guardians
                // clean up.
                std::process::exit(128 + sig);
            }
        });
    }
}

struct SigSet(libc::sigset_t);
// SAFETY: a sigset_t is plain data.
unsafe impl Send for SigSet {}

/// Prepares `cmd` to run in a process group of its own.
pub fn own_group(cmd: &mut Command) {
    cmd.process_group(0);
}

/// Signals a whole process group.
pub fn signal_group(pgid: u32, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) on a negative pid (a group we created) has no memory effects.
    pgid > 1 && unsafe { libc::kill(-(pgid as i32), sig) } == 0
}
