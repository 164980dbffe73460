//! Finding and signalling a node's server processes through `/proc`.
//!
//! Failover tests kill postmasters with SIGKILL, which orphans their
//! backends (they are re-parented to init). Walking the ppid tree alone
//! would lose those, so we also identify a node's processes by their
//! working directory: every PostgreSQL server process `chdir`s into its data
//! directory. Together this lets cleanup guarantee no process is left.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// Parsed fields of `/proc/<pid>/stat` that we need.
struct Stat {
    state: char,
    ppid: i32,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `comm` is in parentheses and may itself contain spaces or ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Stat { state, ppid })
}

fn all_pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// True when `pid` exists and is not a zombie (a SIGKILLed postmaster may
/// stay a zombie if PID 1 in a container does not reap orphans).
pub(crate) fn alive(pid: i32) -> bool {
    matches!(stat(pid), Some(s) if s.state != 'Z' && s.state != 'X')
}

/// All live descendants of `pid` (children, grandchildren, ...).
pub(crate) fn descendants(pid: i32) -> Vec<i32> {
    let table: Vec<(i32, i32)> = all_pids()
        .into_iter()
        .filter_map(|p| stat(p).filter(|s| s.state != 'Z').map(|s| (p, s.ppid)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &table {
            if pp == parent && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

/// Live processes whose working directory is `dir` or below it (including
/// a deleted `dir`, which the kernel reports with a " (deleted)" suffix).
pub(crate) fn in_dir(dir: &Path) -> Vec<i32> {
    let own = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&p| p != own)
        .filter(|&p| {
            let Ok(cwd) = fs::read_link(format!("/proc/{p}/cwd")) else {
                return false;
            };
            let s = cwd.to_string_lossy();
            let cwd = PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s));
            cwd.starts_with(dir)
        })
        .filter(|&p| alive(p))
        .collect()
}

/// PID of the postmaster recorded in `data_dir/postmaster.pid`, if any.
pub(crate) fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// The running postmaster of `data_dir`, if it is alive.
pub(crate) fn live_postmaster(data_dir: &Path) -> Option<i32> {
    postmaster_pid(data_dir).filter(|&p| alive(p))
}

/// Every live process belonging to the node in `data_dir`: the postmaster,
/// its descendants, and orphans still working in the data directory.
pub(crate) fn node_processes(data_dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    if let Some(pm) = live_postmaster(data_dir) {
        pids.push(pm);
        pids.extend(descendants(pm));
    }
    for p in in_dir(data_dir) {
        if !pids.contains(&p) {
            pids.push(p);
        }
    }
    pids
}

/// Sends `sig` to `pid`; returns false if the process does not exist.
pub(crate) fn signal(pid: i32, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) with a concrete positive pid has no memory effects.
    pid > 0 && unsafe { libc::kill(pid, sig) } == 0
}

/// Polls until `cond` holds or `timeout` passes; returns whether it held.
pub(crate) fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILLs every process of the node (repeatedly, in case a dying
/// postmaster forks one last child) and waits until they are gone.
pub(crate) fn kill_all(data_dir: &Path) -> bool {
    wait_until(Duration::from_secs(10), || {
        let pids = node_processes(data_dir);
        for &p in &pids {
            signal(p, libc::SIGKILL);
        }
        pids.is_empty()
    })
}

/// Removes the System V shared memory segment left behind by a postmaster
/// that did not shut down cleanly (its `postmaster.pid` still exists).
///
/// PostgreSQL would reclaim it on the next start in the same data
/// directory, but a killed node that is never restarted (or whose temp dir
/// is deleted) would leak it. We only remove it when nobody is attached and
/// the key matches the one recorded in `postmaster.pid`.
pub(crate) fn remove_stale_shm(data_dir: &Path) {
    let Ok(text) = fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return;
    };
    // Line 7: "<shmem key> <shmem id>".
    let Some(line) = text.lines().nth(6) else {
        return;
    };
    let mut it = line.split_whitespace();
    let (Some(Ok(key)), Some(Ok(id))) = (
        it.next().map(str::parse::<libc::key_t>),
        it.next().map(str::parse::<libc::c_int>),
    ) else {
        return;
    };
    // SAFETY: shmid_ds is plain old data; shmctl only writes into it.
    unsafe {
        let mut ds: libc::shmid_ds = std::mem::zeroed();
        if libc::shmctl(id, libc::IPC_STAT, &mut ds) == 0
            && ds.shm_perm.__key == key
            && ds.shm_nattch == 0
        {
            libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        }
    }
}
