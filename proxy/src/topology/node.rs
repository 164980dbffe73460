//! What the monitor knows about one backend node.

use std::time::{Duration, SystemTime};

use crate::config::NodeFlag;

/// Is the node reachable and answering probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not probed yet.
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// The role pgpivot assigns after fencing. For a node that is down it is the role last known
/// (a standby stays a standby, a stale primary stays fenced); a lost primary is `Unknown`, since
/// it no longer gets writes. Whether the node answers is [`Health`]'s business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Unknown,
    Primary,
    Standby,
    /// Answers "not in recovery" but lost the decision (older timeline, or a tie): gets nothing.
    StalePrimary,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::StalePrimary => "stale primary",
        }
    }
}

/// One probe's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeOutcome {
    Ok {
        in_recovery: bool,
        timeline: Option<u32>,
        lsn: Option<u64>,
        /// A standby's WAL receiver status (`streaming`, `stopping`, ...; `None` when it has no
        /// receiver, e.g. while it cannot reach its upstream).
        receiver: Option<String>,
        /// A standby's replay delay in seconds.
        replay_lag: Option<f64>,
        /// A standby: the `application_name` its WAL receiver gives the upstream.
        wal_name: Option<String>,
        /// A primary: its WAL senders' `application_name` and `sync_state`
        /// (`pg_stat_replication`), how `SHOW pool_nodes` tells a sync standby from an async one.
        senders: Vec<(String, String)>,
        latency: Duration,
    },
    /// Connection refused or reset: the postmaster is gone. Down at once.
    Refused(String),
    /// The server itself says it takes no connections (`57P02` crash shutdown, `57P03` starting
    /// up / shutting down / not accepting connections). Down at once.
    Unavailable(String),
    /// No answer in time: counts toward the retry budget.
    Timeout,
    /// Any other error (`53300` too many clients, `28xxx` the check user's login, a failed probe
    /// query, `57P01` on the probe's own session...): says nothing certain about the node, so it
    /// counts toward the retry budget like a timeout instead of opening a failover gap.
    Error(String),
}

impl ProbeOutcome {
    /// Takes the node down at once (rather than counting toward the retry budget).
    pub fn is_down_at_once(&self) -> bool {
        matches!(
            self,
            ProbeOutcome::Refused(_) | ProbeOutcome::Unavailable(_)
        )
    }
}

/// A node as shown to operators and used by the decision.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub id: usize,
    pub host: String,
    pub port: u16,
    pub weight: f64,
    pub flag: NodeFlag,
    pub health: Health,
    pub role: Role,
    /// What the node itself says (`pg_is_in_recovery()`), as of the last good probe.
    pub in_recovery: Option<bool>,
    pub timeline: Option<u32>,
    pub lsn: Option<u64>,
    /// A standby's WAL receiver status and replay delay, as of the last good probe.
    pub receiver: Option<String>,
    pub replay_lag: Option<f64>,
    /// A standby's WAL receiver name and a primary's WAL senders, as of the last good probe.
    pub wal_name: Option<String>,
    pub senders: Vec<(String, String)>,
    pub last_probe: Option<SystemTime>,
    pub last_latency: Option<Duration>,
    pub consecutive_failures: u32,
    pub successes_in_row: u32,
    pub fenced: Option<String>,
    pub last_error: Option<String>,
    pub last_status_change: SystemTime,
    /// Out of service by `DETACH NODE` until `ATTACH NODE`.
    pub detached: bool,
    /// Probe history for `SHOW pool_health_check_stats`.
    pub checks: pgpivot_admin::CheckStats,
}

impl NodeView {
    pub fn new(n: &crate::config::BackendNode) -> Self {
        NodeView {
            id: n.id,
            host: n.host.clone(),
            port: n.port,
            weight: n.weight,
            flag: n.flag,
            health: Health::Unknown,
            role: Role::Unknown,
            in_recovery: None,
            timeline: None,
            lsn: None,
            receiver: None,
            replay_lag: None,
            wal_name: None,
            senders: Vec::new(),
            last_probe: None,
            last_latency: None,
            consecutive_failures: 0,
            successes_in_row: 0,
            fenced: None,
            last_error: None,
            last_status_change: SystemTime::now(),
            detached: false,
            checks: Default::default(),
        }
    }
}

/// Formats an LSN the way PostgreSQL prints it (`16/B374D848`).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Parses PostgreSQL's `X/Y` LSN text.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
        return None;
    }
    Some((hi << 32) | lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trip() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("zz"), None);
        assert_eq!(parse_lsn("1/100000000"), None);
    }
}
