//! What the failover demo measured, and how it prints.

use std::fmt;

/// How the primary was taken away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` of the postmaster (connections are refused at once).
    Kill,
    /// `kill -STOP` of every process of the node: a blackholed server that accepts nothing and
    /// answers nothing, found only by timeouts.
    Freeze,
}

/// One pgpivot instance's view of the failover.
#[derive(Debug, Clone, Default)]
pub struct InstanceReport {
    pub name: char,
    pub port: u16,
    /// When the instance's routing table first named the new primary (epoch seconds).
    pub routed_at: Option<f64>,
    /// When the first write after the fault was acknowledged through this instance.
    pub first_write_at: Option<f64>,
    /// Routing-table samples naming the old primary after the promotion (must be 0).
    pub old_primary_samples_after_promotion: u64,
    /// Routing-table samples taken after the promotion.
    pub samples_after_promotion: u64,
    /// Samples, after the instance first routed to the new primary, that name anything else
    /// (flapping; must be 0).
    pub left_new_primary_samples: u64,
    pub writes_acked: u64,
    /// Errors seen by writers (one per transaction in flight at the fault is expected).
    pub writer_errors: u64,
    /// Errors seen by clients that were idle at the fault (must be 0).
    pub idle_errors: u64,
    /// Client connections that broke and had to be reopened.
    pub dropped: u64,
    pub pool_nodes_before: String,
    pub pool_nodes_after: String,
}

/// The demo's result.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub fault: Fault,
    pub old_primary: usize,
    pub new_primary: usize,
    pub pool_mode: String,
    pub synchronous: bool,
    pub writers: usize,
    pub idle_clients: usize,
    /// When the fault was injected (epoch seconds).
    pub fault_at: f64,
    /// When repmgrd promoted the standby (repmgr's `standby_promote` event).
    pub promoted_at: f64,
    pub instances: Vec<InstanceReport>,
    /// Writes acknowledged to clients, and how many of them the new primary has.
    pub acked: u64,
    pub acked_on_new_primary: u64,
    /// Writes acknowledged by the old primary after the fault (a killed postmaster's orphaned
    /// backends can still finish a commit; they must also be on the new primary).
    pub acked_on_old_after_fault: u64,
    pub repmgr_cluster_show: String,
}

impl DemoReport {
    /// Acknowledged writes missing from the new primary.
    pub fn lost(&self) -> u64 {
        self.acked.saturating_sub(self.acked_on_new_primary)
    }

    fn rel(&self, t: Option<f64>) -> String {
        match t {
            Some(t) => format!("{:+.3} s", t - self.fault_at),
            None => "never".into(),
        }
    }
}

/// `HH:MM:SS.mmm` UTC of an epoch time.
pub fn clock(epoch: f64) -> String {
    let ms = (epoch * 1000.0).round() as u64;
    let (s, ms) = (ms / 1000, ms % 1000);
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60
    )
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fault = match self.fault {
            Fault::Kill => "kill -9 of the postmaster",
            Fault::Freeze => "kill -STOP of every process (blackholed)",
        };
        writeln!(f, "== failover demo ==")?;
        writeln!(
            f,
            "workload: {} writers and {} idle clients per instance, pool mode {}, {} replication",
            self.writers,
            self.idle_clients,
            self.pool_mode,
            if self.synchronous {
                "synchronous"
            } else {
                "asynchronous"
            }
        )?;
        writeln!(
            f,
            "fault:     node{} ({fault}) at {} UTC",
            self.old_primary,
            clock(self.fault_at)
        )?;
        writeln!(
            f,
            "promotion: node{} by repmgrd at {} UTC ({}, repmgr cluster event standby_promote)",
            self.new_primary,
            clock(self.promoted_at),
            self.rel(Some(self.promoted_at))
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<10}{:>10}{:>13}{:>13}{:>10}{:>9}{:>9}{:>9}{:>12}",
            "instance",
            "port",
            "routes new",
            "1st write",
            "acked",
            "w.err",
            "idle.err",
            "dropped",
            "to old*"
        )?;
        for i in &self.instances {
            writeln!(
                f,
                "{:<10}{:>10}{:>13}{:>13}{:>10}{:>9}{:>9}{:>9}{:>12}",
                format!("pgpivot {}", i.name),
                i.port,
                self.rel(i.routed_at),
                self.rel(i.first_write_at),
                i.writes_acked,
                i.writer_errors,
                i.idle_errors,
                i.dropped,
                format!(
                    "{}/{}",
                    i.old_primary_samples_after_promotion, i.samples_after_promotion
                )
            )?;
        }
        writeln!(
            f,
            "(times relative to the fault; w.err: errors of writers in flight at the fault; \
             *routing samples naming the old primary after the promotion)"
        )?;
        for i in &self.instances {
            if let Some(w) = i.first_write_at {
                writeln!(
                    f,
                    "pgpivot {}: first write {:.3} s after the promotion",
                    i.name,
                    w - self.promoted_at
                )?;
            }
        }
        writeln!(f)?;
        writeln!(
            f,
            "rows acknowledged: {}   on the new primary: {}   lost: {}   \
             (acknowledged by the old primary after the fault: {})",
            self.acked,
            self.acked_on_new_primary,
            self.lost(),
            self.acked_on_old_after_fault
        )?;
        for i in &self.instances {
            writeln!(f)?;
            writeln!(f, "SHOW pool_nodes via pgpivot {} before:", i.name)?;
            write!(f, "{}", i.pool_nodes_before)?;
            writeln!(f, "after:")?;
            write!(f, "{}", i.pool_nodes_after)?;
        }
        writeln!(f)?;
        writeln!(f, "repmgr cluster show (after):")?;
        write!(f, "{}", self.repmgr_cluster_show)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clock_formats_utc() {
        assert_eq!(super::clock(3661.5), "01:01:01.500");
        assert_eq!(super::clock(86400.0 + 59.9994), "00:00:59.999");
    }
}
