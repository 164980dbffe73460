//! The clients of the failover-gap benchmark: writers that insert unique ids through a proxy as
//! fast as a short pause allows, reconnecting whenever their connection is gone, and idle
//! clients that only check, once the dust has settled, whether their connection survived.
//!
//! Everything is simple-protocol SQL (`simple_query`), which every target supports (PgBouncer
//! 1.18's transaction pooling has no named prepared statements, and tokio-postgres' `execute`
//! prepares them).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

/// The table the writers insert into (created on the primary before the run).
pub const TABLE: &str = "gap_writes";

pub fn create_table_sql(owner: &str) -> [String; 2] {
    [
        format!(
            "CREATE TABLE {TABLE} (id bigint PRIMARY KEY, writer int NOT NULL, \
             at timestamptz NOT NULL DEFAULT clock_timestamp())"
        ),
        format!("ALTER TABLE {TABLE} OWNER TO \"{owner}\""),
    ]
}

/// What all writers saw, with times relative to [`Shared::t0`].
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub acked: Vec<u64>,
    pub failed_writes: u64,
    pub failed_connects: u64,
    /// Connections found closed (and reopened).
    pub dropped: u64,
    /// Each writer's first successful write at or after `since` (set by the driver).
    pub first_ok_after: Vec<Option<Duration>>,
    /// First error messages, for the report.
    pub sample_errors: Vec<String>,
}

pub struct Shared {
    pub t0: Instant,
    pub stop: AtomicBool,
    next_id: AtomicU64,
    /// Writes count as "after promotion" from this offset (u64::MAX: not yet).
    since_us: AtomicU64,
    pub tally: Mutex<Tally>,
}

impl Shared {
    pub fn new(writers: usize) -> Arc<Shared> {
        Arc::new(Shared {
            t0: Instant::now(),
            stop: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            since_us: AtomicU64::new(u64::MAX),
            tally: Mutex::new(Tally {
                first_ok_after: vec![None; writers],
                ..Default::default()
            }),
        })
    }

    /// From now on, successful writes count toward "first write after promotion".
    pub fn mark(&self, at: Instant) {
        let us = at.duration_since(self.t0).as_micros() as u64;
        self.since_us.store(us, Ordering::SeqCst);
    }

    pub fn since(&self) -> Option<Duration> {
        match self.since_us.load(Ordering::SeqCst) {
            u64::MAX => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Writers that have written since the mark.
    pub fn recovered(&self) -> usize {
        self.lock().first_ok_after.iter().flatten().count()
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note_error(&self, t: &mut Tally, what: &str, e: &tokio_postgres::Error) {
        if t.sample_errors.len() < 6 {
            let msg = match e.as_db_error() {
                Some(db) => format!("{what}: {} {}", db.code().code(), db.message()),
                None => format!("{what}: {e}"),
            };
            if !t.sample_errors.contains(&msg) {
                t.sample_errors.push(msg);
            }
        }
    }
}

/// True when the error means the connection is gone (FATAL, or closed under us).
async fn connection_lost(c: &Client, e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if e.as_db_error()
        .is_some_and(|d| d.severity() == "FATAL" || d.severity() == "PANIC")
    {
        return true;
    }
    // The connection task may notice EOF a moment after the error arrived.
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.is_closed()
}

async fn connect(conn: &str, timeout: Duration) -> Result<Client, String> {
    match tokio::time::timeout(
        timeout,
        tokio_postgres::connect(conn, tokio_postgres::NoTls),
    )
    .await
    {
        Ok(Ok((client, connection))) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(client)
        }
        Ok(Err(e)) => Err(match e.as_db_error() {
            Some(db) => format!("connect: {} {}", db.code().code(), db.message()),
            None => format!("connect: {e}"),
        }),
        Err(_) => Err("connect: timed out".into()),
    }
}

/// One writer: insert, pause `interval`, repeat until told to stop.
pub async fn writer(
    shared: Arc<Shared>,
    conn: String,
    w: usize,
    interval: Duration,
    op_timeout: Duration,
) {
    let mut client: Option<Client> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let c = match client.take() {
            Some(c) => c,
            None => match connect(&conn, op_timeout).await {
                Ok(c) => c,
                Err(msg) => {
                    {
                        let mut t = shared.lock();
                        t.failed_connects += 1;
                        if t.sample_errors.len() < 6 && !t.sample_errors.contains(&msg) {
                            t.sample_errors.push(msg);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let sql = format!("INSERT INTO {TABLE} (id, writer) VALUES ({id}, {w})");
        match tokio::time::timeout(op_timeout, c.simple_query(&sql)).await {
            Ok(Ok(_)) => {
                let now = shared.t0.elapsed();
                {
                    let mut t = shared.lock();
                    t.acked.push(id);
                    if let Some(since) = shared.since() {
                        if now >= since && t.first_ok_after[w].is_none() {
                            t.first_ok_after[w] = Some(now);
                        }
                    }
                }
                client = Some(c);
                tokio::time::sleep(interval).await;
            }
            Ok(Err(e)) => {
                let lost = connection_lost(&c, &e).await;
                {
                    let mut t = shared.lock();
                    t.failed_writes += 1;
                    if lost {
                        t.dropped += 1;
                    }
                    shared.note_error(&mut t, "write", &e);
                }
                if !lost {
                    client = Some(c);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => {
                // No answer within the bound: give up on this connection (counted as an error,
                // not as a connection the proxy dropped).
                let mut t = shared.lock();
                t.failed_writes += 1;
                if t.sample_errors.len() < 6 {
                    t.sample_errors
                        .push(format!("write: no answer within {op_timeout:?}"));
                }
            }
        }
    }
}

/// An idle client's verdict after the failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleOutcome {
    /// Its first query after the failover worked.
    Fine,
    /// It got an error but its connection still works.
    Error,
    /// Its connection was gone.
    Dropped,
}

/// Opens `n` idle clients (each runs one query first).
pub async fn open_idle(conn: &str, n: usize) -> anyhow::Result<Vec<Client>> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let c = connect(conn, Duration::from_secs(10))
            .await
            .map_err(|e| anyhow::anyhow!("idle client {i}: {e}"))?;
        c.simple_query("SELECT 1").await?;
        v.push(c);
    }
    Ok(v)
}

/// Each idle client runs one query now.
pub async fn check_idle(clients: &[Client], op_timeout: Duration) -> Vec<IdleOutcome> {
    let mut out = Vec::with_capacity(clients.len());
    for c in clients {
        let r = tokio::time::timeout(op_timeout, c.simple_query("SELECT 1")).await;
        out.push(match r {
            Ok(Ok(_)) => IdleOutcome::Fine,
            Ok(Err(e)) if connection_lost(c, &e).await => IdleOutcome::Dropped,
            _ => {
                // An error on a connection that is still open: does it still work?
                match tokio::time::timeout(op_timeout, c.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => IdleOutcome::Error,
                    _ => IdleOutcome::Dropped,
                }
            }
        });
    }
    out
}
