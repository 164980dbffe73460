//! Memory of a process or of a whole process group, from `/proc`.
//!
//! RSS counts every resident page a process maps, shared or not: summed over forked processes
//! (Pgpool-II's children share most of their pages with their parent) it counts those pages many
//! times. PSS divides each page among the processes mapping it, so the sum over a group is the
//! memory the group really uses; for one process it is close to RSS.

use std::fs;

/// Resident and proportional set sizes, KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub rss_kib: u64,
    pub pss_kib: u64,
    pub processes: usize,
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(self, o: Usage) -> Usage {
        Usage {
            rss_kib: self.rss_kib + o.rss_kib,
            pss_kib: self.pss_kib + o.pss_kib,
            processes: self.processes + o.processes,
        }
    }
}

fn field_kib(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// One process (None if it is gone).
pub fn process(pid: u32) -> Option<Usage> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some(Usage {
        rss_kib: field_kib(&text, "Rss:")?,
        pss_kib: field_kib(&text, "Pss:")?,
        processes: 1,
    })
}

/// Process group of `pid` (field 5 of `/proc/PID/stat`).
fn pgrp(pid: u32) -> Option<u32> {
    let f = crate::procfs::stat_fields(pid)?;
    if f.first().is_some_and(|state| state == "Z" || state == "X") {
        return None;
    }
    f.get(2)?.parse().ok()
}

/// Every live process of process group `pgid`.
pub fn group_pids(pgid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| pgrp(p) == Some(pgid))
        .collect()
}

/// The sum over a whole process group.
pub fn group(pgid: u32) -> Usage {
    group_pids(pgid)
        .into_iter()
        .filter_map(process)
        .fold(Usage::default(), |a, b| a + b)
}
