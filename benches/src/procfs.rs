//! What the benchmark programs read from `/proc`: a process's stat fields, its CPU time and
//! context switches, and the machine's idle time.

use std::fs;

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces and
/// parentheses): index 0 is the state, 1 the parent pid, 11 and 12 user and system ticks.
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The unit of the tick counts in `/proc` (USER_HZ).
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64).max(1.0)
}

/// A process's user and system CPU time so far, in seconds (all its threads).
pub fn cpu_seconds(pid: u32) -> Option<(f64, f64)> {
    let f = stat_fields(pid)?;
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    let hz = clock_ticks_per_second();
    Some((ticks(11)? / hz, ticks(12)? / hz))
}

/// User and system CPU time, in seconds, of this process's children that have been waited for
/// (pgbench runs, for instance).
pub fn children_cpu_seconds() -> (f64, f64) {
    // SAFETY: getrusage writes into the zeroed struct we pass and has no other preconditions.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) } != 0 {
        return (0.0, 0.0);
    }
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (s(u.ru_utime), s(u.ru_stime))
}

/// Context switches of every thread of a process so far: (voluntary, involuntary).
pub fn context_switches(pid: u32) -> (u64, u64) {
    let mut out = (0, 0);
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in dir.flatten() {
        let status = fs::read_to_string(t.path().join("status")).unwrap_or_default();
        for l in status.lines() {
            let n = || {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            if l.starts_with("voluntary_ctxt_switches") {
                out.0 += n();
            } else if l.starts_with("nonvoluntary_ctxt_switches") {
                out.1 += n();
            }
        }
    }
    out
}

/// The machine's idle (idle + iowait) and total jiffies so far, from `/proc/stat`, summed
/// over all CPUs, in clock ticks.
pub fn machine_jiffies() -> (f64, f64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (idle, v.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let f = stat_fields(me).expect("own stat");
        // State, then the parent pid: ours.
        assert_eq!(f[0].len(), 1);
        assert_eq!(
            f[1].parse::<u32>().ok(),
            Some(std::os::unix::process::parent_id())
        );
        assert!(cpu_seconds(me).is_some());
        let (vol, invol) = context_switches(me);
        assert!(vol + invol > 0);
        let (idle, total) = machine_jiffies();
        assert!(total > 0.0 && idle <= total);
        let before = children_cpu_seconds();
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .expect("sh runs");
        assert!(status.success());
        let after = children_cpu_seconds();
        assert!(
            after.0 + after.1 > before.0 + before.1,
            "{before:?} -> {after:?}"
        );
    }
}
