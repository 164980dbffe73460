//! The routing table: one immutable snapshot of "who is primary", swapped as a whole.
//!
//! Sessions read it with a lock-free `ArcSwap` load at transaction boundaries and compare the
//! generation number: a new generation means "look again". Waiters (connections arriving during a
//! failover gap) park on a `Notify` that fires on every publish.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use super::node::NodeView;

/// Where writes go right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryRoute {
    pub node_id: usize,
    pub host: String,
    pub port: u16,
    pub timeline: Option<u32>,
}

impl PrimaryRoute {
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone)]
pub struct RoutingTable {
    pub generation: u64,
    pub primary: Option<PrimaryRoute>,
    /// Why there is no primary, when there is none (shown to waiting clients that time out).
    pub no_primary_reason: Option<String>,
    pub published_at: SystemTime,
}

impl RoutingTable {
    pub fn empty() -> Self {
        RoutingTable {
            generation: 0,
            primary: None,
            no_primary_reason: Some("the role monitor has not probed the backends yet".into()),
            published_at: SystemTime::now(),
        }
    }
}

/// The shared handle: current table plus change notification, and the monitor's live view of
/// every node (refreshed on every probe without waking anyone, for SHOW commands).
/// An operator's instruction to the monitor (admin console, SIGHUP).
#[derive(Debug, Clone)]
pub enum Operator {
    Detach(usize),
    Attach(usize),
    SetPrimary(Option<usize>),
    /// A new backend list and probe settings (RELOAD).
    Reload(Arc<crate::config::Config>),
}

pub type OperatorReply = tokio::sync::oneshot::Sender<Result<String, String>>;

/// One change of primary, kept for `SHOW FAILOVERS` (the admin crate's own record).
pub type FailoverRecord = pgpivot_admin::FailoverInfo;

/// Backend ids pgpivot keeps counters for (Pgpool allows 0..127).
const MAX_NODES: usize = 128;

/// How many failovers `SHOW FAILOVERS` remembers.
const HISTORY: usize = 100;

pub struct Topology {
    table: ArcSwap<RoutingTable>,
    changed: Notify,
    nodes: ArcSwap<Vec<NodeView>>,
    operator: std::sync::OnceLock<tokio::sync::mpsc::Sender<(Operator, OperatorReply)>>,
    history: std::sync::Mutex<std::collections::VecDeque<FailoverRecord>>,
    /// Statements and errors per node, indexed by node id (Pgpool's ids are 0..127; a RELOAD
    /// may add nodes, so every id has its slot).
    counters: Box<[super::counters::NodeCounters]>,
    /// Sessions that lost their server to a primary change not yet recorded (during the gap).
    affected_pending: std::sync::atomic::AtomicU64,
}

impl Topology {
    pub fn new(initial: RoutingTable, nodes: Vec<NodeView>) -> Arc<Self> {
        Arc::new(Topology {
            table: ArcSwap::from_pointee(initial),
            changed: Notify::new(),
            nodes: ArcSwap::from_pointee(nodes),
            operator: Default::default(),
            history: Default::default(),
            affected_pending: Default::default(),
            counters: (0..MAX_NODES).map(|_| Default::default()).collect(),
        })
    }

    /// Counters of one node (`None` for an unknown id).
    #[inline]
    pub fn counters(&self, node_id: usize) -> Option<&super::counters::NodeCounters> {
        self.counters.get(node_id)
    }

    pub fn statements(&self, node_id: usize) -> pgpivot_admin::StatementCounts {
        self.counters(node_id)
            .map(|c| c.snapshot())
            .unwrap_or_default()
    }

    /// Connects the monitor's operator channel (once, when the monitor starts).
    pub fn set_operator(&self, tx: tokio::sync::mpsc::Sender<(Operator, OperatorReply)>) {
        let _ = self.operator.set(tx);
    }

    /// Passes an operator's instruction to the monitor and waits for its verdict.
    pub async fn operate(&self, op: Operator) -> Result<String, String> {
        let tx = self
            .operator
            .get()
            .ok_or_else(|| "the role monitor is not running".to_string())?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        tx.send((op, reply))
            .await
            .map_err(|_| "the role monitor stopped".to_string())?;
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .map_err(|_| "the role monitor did not answer".to_string())?
            .map_err(|_| "the role monitor stopped".to_string())?
    }

    pub fn record_failover(&self, mut record: FailoverRecord) {
        use std::sync::atomic::Ordering;
        record.clients_affected += self.affected_pending.swap(0, Ordering::Relaxed);
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(record);
    }

    /// A session lost its server connection to the latest change of primary.
    pub fn note_client_affected(&self) {
        let generation = self.generation();
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        match h.back_mut() {
            // The new primary is already routed: this session belongs to that failover.
            Some(last) if last.generation == generation => last.clients_affected += 1,
            _ => {
                self.affected_pending
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    pub fn failovers(&self) -> Vec<FailoverRecord> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Every node as the monitor last saw it.
    pub fn nodes(&self) -> Arc<Vec<NodeView>> {
        self.nodes.load_full()
    }

    pub fn set_nodes(&self, nodes: Vec<NodeView>) {
        self.nodes.store(Arc::new(nodes));
    }

    /// The current table (cheap; do not hold across `.await` for long).
    pub fn current(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// Current generation, without taking a reference count.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.table.load().generation
    }

    /// Installs a new table and wakes every waiter. The generation is assigned here so it is
    /// strictly increasing whoever publishes.
    pub fn publish(&self, mut table: RoutingTable) -> Arc<RoutingTable> {
        let prev = self.table.load();
        table.generation = prev.generation + 1;
        let table = Arc::new(table);
        self.table.store(table.clone());
        self.changed.notify_waiters();
        table
    }

    /// Resolves on the next publish after the call.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// The raw notification future, for callers that must `enable()` it before checking state
    /// so a publish in between is not missed.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Waits until a primary is known, up to `timeout`. Returns the table that has one, or the
    /// last table seen (without a primary) on timeout.
    pub async fn wait_for_primary(
        &self,
        timeout: Duration,
    ) -> Result<Arc<RoutingTable>, Arc<RoutingTable>> {
        // The common case, without registering as a waiter (a shared lock) on every checkout.
        let t = self.current();
        if t.primary.is_some() {
            return Ok(t);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Register before looking, so a publish between the look and the await is not lost.
            notified.as_mut().enable();
            let t = self.current();
            if t.primary.is_some() {
                return Ok(t);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(t);
            }
            if tokio::time::timeout(left, notified).await.is_err() {
                let t = self.current();
                return if t.primary.is_some() { Ok(t) } else { Err(t) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_primary(id: usize) -> RoutingTable {
        let mut t = RoutingTable::empty();
        t.primary = Some(PrimaryRoute {
            node_id: id,
            host: "127.0.0.1".into(),
            port: 5432,
            timeline: Some(1),
        });
        t
    }

    #[tokio::test]
    async fn waiters_wake_on_publish_and_time_out_otherwise() {
        let topo = Topology::new(RoutingTable::empty(), Vec::new());
        assert!(topo
            .wait_for_primary(Duration::from_millis(20))
            .await
            .is_err());
        let t2 = topo.clone();
        let waiter = tokio::spawn(async move { t2.wait_for_primary(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let published = topo.publish(with_primary(1));
        assert_eq!(published.generation, 1);
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(got.primary.as_ref().unwrap().node_id, 1);
        assert_eq!(topo.publish(with_primary(0)).generation, 2);
        assert_eq!(topo.generation(), 2);
    }
}
