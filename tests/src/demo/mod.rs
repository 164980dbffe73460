//! The failover demo: a write workload through both pgpivot instances of a [`Topology`], the
//! primary taken away, repmgrd promoting the standby, and a report of what clients saw.
//!
//! Writers insert unique ids (autocommit, one prepared statement per connection, a short think
//! time) and remember every id whose commit was acknowledged. Idle clients connect and run one
//! query before the fault, then nothing until both instances write to the new primary; then
//! each runs one write transaction. A sampler reads both instances' routing tables every 2 ms.
//! At the end every acknowledged id is looked up on the new primary.
//!
//! Blocking fixture calls run under `block_in_place`: the demo needs the multi-thread runtime.

mod report;

pub use report::{clock, DemoReport, Fault, InstanceReport};

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use tokio::sync::watch;

use crate::topology::Topology;
use crate::{connect, Cluster};

/// Workload and fault of one demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub writers_per_instance: usize,
    pub idle_per_instance: usize,
    /// Pause between a writer's transactions.
    pub think: Duration,
    pub fault: Fault,
    /// How long repmgrd may take to promote the standby.
    pub promote_timeout: Duration,
    /// How long writes must keep flowing through both instances after the failover.
    pub settle: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            writers_per_instance: 10,
            idle_per_instance: 5,
            think: Duration::from_millis(10),
            fault: Fault::Kill,
            promote_timeout: Duration::from_secs(60),
            settle: Duration::from_secs(1),
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Counters one instance's clients update.
#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    writer_errors: AtomicU64,
    idle_errors: AtomicU64,
    dropped: AtomicU64,
}

/// State shared by the workload's tasks.
struct Shared {
    stop: AtomicBool,
    next_id: AtomicI64,
    /// Every acknowledged write.
    acked: Mutex<Vec<Ack>>,
    counters: Vec<Counters>,
}

/// An acknowledged write: its id, when, through which instance, on which node (the row's
/// `node` column defaults to the server's `cluster_name`, `nodeN`).
#[derive(Clone, Copy)]
struct Ack {
    id: i64,
    at: f64,
    instance: usize,
    node: Option<usize>,
}

impl Shared {
    fn ack(&self, id: i64, k: usize, node: Option<&str>) {
        self.counters[k].acked.fetch_add(1, Ordering::Relaxed);
        let node = node.and_then(|n| n.strip_prefix("node")?.parse().ok());
        let ack = Ack {
            id,
            at: now(),
            instance: k,
            node,
        };
        self.acked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ack);
    }

    fn acks(&self) -> Vec<Ack> {
        self.acked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

const INSERT: &str = "INSERT INTO pgpivot_probe (id) VALUES ($1) RETURNING node";

/// One writer: insert, remember the acknowledged id, think, repeat; reconnect when the
/// connection breaks (counted as dropped).
async fn writer(conn: String, k: usize, shared: Arc<Shared>, think: Duration) {
    let mut session = None;
    while !shared.stop.load(Ordering::Relaxed) {
        if session.is_none() {
            match open_writer(&conn).await {
                Ok(s) => session = Some(s),
                Err(_) => {
                    shared.counters[k]
                        .writer_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some((client, stmt)) = session.as_ref() else {
            continue;
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let r = tokio::time::timeout(Duration::from_secs(30), client.query_one(stmt, &[&id])).await;
        match r {
            Ok(Ok(row)) => shared.ack(id, k, row.try_get::<_, &str>(0).ok()),
            _ => {
                shared.counters[k]
                    .writer_errors
                    .fetch_add(1, Ordering::Relaxed);
                if client.is_closed() || r.is_err() {
                    shared.counters[k].dropped.fetch_add(1, Ordering::Relaxed);
                    session = None;
                }
            }
        }
        tokio::time::sleep(think).await;
    }
}

async fn open_writer(
    conn: &str,
) -> anyhow::Result<(tokio_postgres::Client, tokio_postgres::Statement)> {
    let client = connect(conn).await?;
    let stmt = client.prepare(INSERT).await?;
    Ok((client, stmt))
}

/// One idle client: a query before the fault, one write transaction after `go`.
async fn idle_client(
    conn: String,
    k: usize,
    shared: Arc<Shared>,
    mut go: watch::Receiver<bool>,
    ready: tokio::sync::mpsc::Sender<()>,
) {
    let bump = |c: &AtomicU64| c.fetch_add(1, Ordering::Relaxed);
    let client = match connect(&conn).await {
        Ok(c) => c,
        Err(_) => {
            bump(&shared.counters[k].idle_errors);
            let _ = ready.send(()).await;
            return;
        }
    };
    if client.simple_query("SELECT 1").await.is_err() {
        bump(&shared.counters[k].idle_errors);
    }
    let _ = ready.send(()).await;
    let _ = go.wait_for(|g| *g).await;
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let tx = format!("BEGIN; INSERT INTO pgpivot_probe (id) VALUES ({id}) RETURNING node; COMMIT");
    match tokio::time::timeout(Duration::from_secs(30), client.simple_query(&tx)).await {
        Ok(Ok(msgs)) => {
            let node = msgs.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            });
            shared.ack(id, k, node.as_deref())
        }
        _ => {
            bump(&shared.counters[k].idle_errors);
            if client.is_closed() {
                bump(&shared.counters[k].dropped);
            }
        }
    }
}

/// Routing samples of one instance: (time, node routed to).
type Samples = Vec<(f64, Option<usize>)>;

/// Samples every instance's routing table every 2 ms until `stop`.
async fn sample_routes(
    tables: Vec<Arc<pgpivot::topology::Topology>>,
    stop: Arc<AtomicBool>,
) -> Vec<Samples> {
    let mut out = vec![Samples::new(); tables.len()];
    while !stop.load(Ordering::Relaxed) {
        let t = now();
        for (k, table) in tables.iter().enumerate() {
            out[k].push((t, table.current().primary.as_ref().map(|p| p.node_id)));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    out
}

/// Runs the demo on a topology whose primary both instances route to.
pub async fn run(topo: &Topology, opts: &DemoOptions) -> anyhow::Result<DemoReport> {
    let old = topo.routes_to(0).context("pgpivot A knows no primary")?;
    if topo.routes_to(1) != Some(old) {
        bail!("the two instances disagree on the primary before the demo");
    }
    let n = topo.pivots.len();
    let mut instances = Vec::new();
    for k in 0..n {
        instances.push(InstanceReport {
            name: Topology::name(k),
            port: topo.pivots[k].addr.port(),
            pool_nodes_before: topo.pool_nodes(k).await?,
            ..Default::default()
        });
    }
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        // Unique across runs on the same cluster.
        next_id: AtomicI64::new((now() * 1000.0) as i64 * 1000),
        acked: Mutex::new(Vec::new()),
        counters: (0..n).map(|_| Counters::default()).collect(),
    });
    let (go_tx, go_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(1024);
    let mut tasks = Vec::new();
    for (k, pivot) in topo.pivots.iter().enumerate() {
        for _ in 0..opts.idle_per_instance {
            let (conn, s, go, ready) = (
                pivot.conn_string(),
                shared.clone(),
                go_rx.clone(),
                ready_tx.clone(),
            );
            tasks.push(tokio::spawn(idle_client(conn, k, s, go, ready)));
        }
    }
    for _ in 0..n * opts.idle_per_instance {
        ready_rx.recv().await;
    }
    for (k, pivot) in topo.pivots.iter().enumerate() {
        for _ in 0..opts.writers_per_instance {
            let conn = pivot.conn_string();
            tasks.push(tokio::spawn(writer(conn, k, shared.clone(), opts.think)));
        }
    }
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let tables = topo
        .pivots
        .iter()
        .filter_map(|p| p.running.as_ref().map(|r| r.topology()))
        .collect();
    let sampler = tokio::spawn(sample_routes(tables, sampler_stop.clone()));

    // Let the workload run, then take the primary away.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cluster = &topo.cluster;
    let fault_at = now();
    tokio::task::block_in_place(|| match opts.fault {
        Fault::Kill => cluster.kill9(old),
        Fault::Freeze => cluster.sigstop(old),
    })?;
    let promoted = tokio::task::block_in_place(|| wait_promotion(cluster, old, fault_at, opts))?;
    let new = promoted.node;

    // Writes must reach the new primary through both instances, then the idle clients go.
    let deadline = now() + 30.0;
    loop {
        let written: Vec<bool> = (0..n)
            .map(|k| first_write_on(&shared.acks(), k, new).is_some())
            .collect();
        if written.iter().all(|w| *w) {
            break;
        }
        if now() > deadline {
            bail!("no write through every instance within 30 s of the promotion: {written:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = go_tx.send(true);
    tokio::time::sleep(opts.settle).await;
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    sampler_stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.context("sampler task")?;

    let acks = shared.acks();
    for (k, inst) in instances.iter_mut().enumerate() {
        let c = &shared.counters[k];
        inst.writes_acked = c.acked.load(Ordering::Relaxed);
        inst.writer_errors = c.writer_errors.load(Ordering::Relaxed);
        inst.idle_errors = c.idle_errors.load(Ordering::Relaxed);
        inst.dropped = c.dropped.load(Ordering::Relaxed);
        inst.first_write_at = first_write_on(&acks, k, new);
        let after: Vec<_> = samples[k]
            .iter()
            .filter(|(t, _)| *t >= promoted.epoch)
            .collect();
        inst.samples_after_promotion = after.len() as u64;
        inst.old_primary_samples_after_promotion =
            after.iter().filter(|(_, r)| *r == Some(old)).count() as u64;
        inst.routed_at = samples[k]
            .iter()
            .find(|(t, r)| *t >= fault_at && *r == Some(new))
            .map(|(t, _)| *t);
        inst.left_new_primary_samples = samples[k]
            .iter()
            .filter(|(t, r)| inst.routed_at.is_some_and(|at| *t > at) && *r != Some(new))
            .count() as u64;
        inst.pool_nodes_after = topo.pool_nodes(k).await?;
    }
    let ids: Vec<i64> = acks.iter().map(|a| a.id).collect();
    let acked_on_old_after_fault = acks
        .iter()
        .filter(|a| a.at > fault_at && a.node == Some(old))
        .count() as u64;
    let direct = connect(&cluster.app_conn_string(new)).await?;
    let row = direct
        .query_one(
            "SELECT count(*) FROM pgpivot_probe WHERE id = ANY($1)",
            &[&ids],
        )
        .await?;
    let found: i64 = row.get(0);
    let show = tokio::task::block_in_place(|| cluster.repmgr_cluster_show(new));
    Ok(DemoReport {
        fault: opts.fault,
        old_primary: old,
        new_primary: new,
        pool_mode: topo.pool_mode.clone(),
        synchronous: cluster.options().synchronous,
        writers: opts.writers_per_instance,
        idle_clients: opts.idle_per_instance,
        fault_at,
        promoted_at: promoted.epoch,
        instances,
        acked: ids.len() as u64,
        acked_on_old_after_fault,
        acked_on_new_primary: found as u64,
        repmgr_cluster_show: show,
    })
}

/// When the first write through instance `k` that landed on `node` was acknowledged.
fn first_write_on(acks: &[Ack], k: usize, node: usize) -> Option<f64> {
    acks.iter()
        .filter(|a| a.instance == k && a.node == Some(node))
        .map(|a| a.at)
        .reduce(f64::min)
}

/// Waits until repmgrd promotes one of the standbys of `old`.
fn wait_promotion(
    cluster: &Cluster,
    old: usize,
    since: f64,
    opts: &DemoOptions,
) -> anyhow::Result<crate::RepmgrEvent> {
    let candidates: Vec<usize> = (0..cluster.nodes.len()).filter(|i| *i != old).collect();
    let deadline = std::time::Instant::now() + opts.promote_timeout;
    loop {
        for &i in &candidates {
            if let Ok(e) = cluster.wait_repmgr_promoted(i, since, Duration::ZERO) {
                return Ok(e);
            }
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "repmgrd promoted no standby within {:?}; repmgr log of node{}:\n{}",
                opts.promote_timeout,
                candidates[0],
                cluster.repmgr_log_tail(candidates[0], 4000)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
