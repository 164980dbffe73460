//! One pool of server connections for a (node, user, database, options) key.
//!
//! Checkout order: an idle connection opened with the client's startup parameters (most recently
//! used first, warm caches) whose backend is still there, else a new one if the pool is under its
//! size (or in place of an idle one opened for other parameters), else wait in FIFO order up to
//! the query wait timeout. A connection that comes back in a bad state is closed and its slot
//! handed to the next waiter; one whose backend ends while idle is closed at the next checkout
//! or within a second.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pgpivot_protocol::startup::StartupMessage;
use tokio::sync::oneshot;

use super::server::Server;
use crate::backend::connect::{connect, ConnectError};
use crate::stats::PoolStats;

/// What a waiter is handed: a ready connection, or the right to open one. (Not boxed: the
/// channel allocates its slot anyway, and boxing would add an allocation per handoff.)
#[allow(clippy::large_enum_variant)]
enum Handoff {
    Server(Server),
    Slot,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("no server connection available within {0} ms (pool of {1} is busy)")]
    Timeout(u128, usize),
    #[error("{0}")]
    Connect(#[from] ConnectError),
    #[error("the pool was closed (its node stopped being primary)")]
    Closed,
}

/// Shared by every pool and swapped whole by RELOAD (a new size applies to existing pools too).
pub type SharedPoolSettings = Arc<arc_swap::ArcSwap<PoolSettings>>;

#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub size: usize,
    pub connect_timeout: Duration,
    pub lifetime: Duration,
    pub idle_timeout: Duration,
}

struct Inner {
    idle: Vec<Server>,
    /// Connections that exist (idle, checked out, or being opened).
    total: usize,
    waiters: VecDeque<oneshot::Sender<Handoff>>,
    closed: bool,
}

pub struct Pool {
    pub node_id: usize,
    pub addr: String,
    pub user: String,
    pub database: String,
    settings: SharedPoolSettings,
    inner: Mutex<Inner>,
    pub stats: PoolStats,
    /// The parameters the first server connection reported: what a client is greeted with when
    /// it logs in while every connection is busy (transaction pooling needs no server to log in).
    welcome: Mutex<Option<Arc<std::collections::HashMap<String, String>>>>,
}

/// A snapshot for SHOW POOLS and metrics.
#[derive(Debug, Clone)]
pub struct PoolCounts {
    pub idle: usize,
    pub active: usize,
    pub waiting: usize,
}

impl Pool {
    pub fn new(
        node_id: usize,
        addr: String,
        user: String,
        database: String,
        settings: SharedPoolSettings,
    ) -> Self {
        Pool {
            node_id,
            addr,
            user,
            database,
            settings,
            inner: Mutex::new(Inner {
                idle: Vec::new(),
                total: 0,
                waiters: VecDeque::new(),
                closed: false,
            }),
            stats: PoolStats::default(),
            welcome: Mutex::new(None),
        }
    }

    pub fn welcome(&self) -> Option<Arc<std::collections::HashMap<String, String>>> {
        self.welcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another task panicked mid-update; the counts are still
        // the best we have.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Traffic and wait counters of this pool (for `SHOW STATS`).
    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    pub fn counts(&self) -> PoolCounts {
        let g = self.lock();
        PoolCounts {
            idle: g.idle.len(),
            active: g.total - g.idle.len(),
            waiting: g.waiters.len(),
        }
    }

    /// Gets a connection, opening one (with `startup`/`password`) when allowed.
    pub async fn checkout(
        &self,
        startup: &StartupMessage,
        password: &str,
        wait: Duration,
    ) -> Result<Server, CheckoutError> {
        let started = Instant::now();
        let result = self.checkout_inner(startup, password, wait).await;
        self.stats
            .wait_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        if result.is_ok() {
            self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn checkout_inner(
        &self,
        startup: &StartupMessage,
        password: &str,
        wait: Duration,
    ) -> Result<Server, CheckoutError> {
        let rx = {
            let mut g = self.lock();
            if g.closed {
                return Err(CheckoutError::Closed);
            }
            let now = Instant::now();
            // Most recently used first, among those opened with the client's startup GUCs (all
            // of them in transaction mode, where connections are opened without any).
            let mut i = g.idle.len();
            while i > 0 {
                i -= 1;
                if self.expired(&g.idle[i], now) || !still_open(&g.idle[i]) {
                    g.idle.remove(i);
                    g.total -= 1;
                } else if g.idle[i].opened_with(startup) {
                    return Ok(g.idle.remove(i));
                }
            }
            if g.total < self.settings.load().size {
                g.total += 1;
                None
            } else if let Some(other) = g.idle.pop() {
                // Full, and nothing idle fits: one opened for other parameters gives way.
                drop(other);
                None
            } else {
                let (tx, rx) = oneshot::channel();
                g.waiters.push_back(tx);
                Some(rx)
            }
        };
        if let Some(rx) = rx {
            match tokio::time::timeout(wait, rx).await {
                Ok(Ok(Handoff::Server(s))) if s.opened_with(startup) => return Ok(s),
                // Opened for other parameters: its slot opens one for these.
                Ok(Ok(Handoff::Server(_))) => {}
                Ok(Ok(Handoff::Slot)) => {}
                Ok(Err(_)) => return Err(CheckoutError::Closed),
                Err(_) => {
                    return Err(CheckoutError::Timeout(
                        wait.as_millis(),
                        self.settings.load().size,
                    ))
                }
            }
        }
        // We hold a slot: open a connection.
        // Boxed: opening a connection is rare, and its state would otherwise sit in every
        // client's task.
        match Box::pin(connect(
            &self.addr,
            startup,
            password,
            self.settings.load().connect_timeout,
        ))
        .await
        {
            Ok(conn) => {
                self.stats.created.fetch_add(1, Ordering::Relaxed);
                let mut w = self.welcome.lock().unwrap_or_else(|e| e.into_inner());
                if w.is_none() {
                    let mut params = std::collections::HashMap::new();
                    super::server::absorb_parameter_status(&conn.greeting, &mut params);
                    *w = Some(Arc::new(params));
                }
                drop(w);
                Ok(Server::new(conn, self.node_id, startup))
            }
            Err(e) => {
                self.release_slot();
                Err(e.into())
            }
        }
    }

    fn expired(&self, s: &Server, now: Instant) -> bool {
        let settings = self.settings.load();
        now.duration_since(s.created) >= settings.lifetime
            || now.duration_since(s.last_used) >= settings.idle_timeout
    }

    /// Gives a slot back (a connection was closed or never opened): the first live waiter may
    /// open one.
    fn release_slot(&self) {
        let mut g = self.lock();
        while let Some(w) = g.waiters.pop_front() {
            if w.send(Handoff::Slot).is_ok() {
                return;
            }
        }
        g.total = g.total.saturating_sub(1);
    }

    /// Returns a connection. `reusable` is the caller's verdict (idle, at a message boundary,
    /// nothing pending); anything else is closed.
    pub fn checkin(&self, mut server: Server, reusable: bool) {
        let now = Instant::now();
        if !reusable || self.expired(&server, now) || self.lock().closed {
            if !reusable {
                self.stats.closed_bad_state.fetch_add(1, Ordering::Relaxed);
            }
            drop(server);
            self.release_slot();
            return;
        }
        server.last_used = now;
        let mut g = self.lock();
        while let Some(w) = g.waiters.pop_front() {
            match w.send(Handoff::Server(server)) {
                Ok(()) => return,
                Err(Handoff::Server(s)) => server = s,
                Err(Handoff::Slot) => return,
            }
        }
        g.idle.push(server);
    }

    /// Closes every idle connection and refuses new checkouts (the node stopped being primary).
    pub fn close(&self) {
        let mut g = self.lock();
        g.closed = true;
        let n = g.idle.len();
        g.idle.clear();
        g.total = g.total.saturating_sub(n);
        g.waiters.clear();
    }

    /// Drops idle connections past their lifetime or idle limit, or whose backend is gone
    /// (called every second).
    pub fn reap(&self) {
        let now = Instant::now();
        let mut g = self.lock();
        let before = g.idle.len();
        let (lifetime, idle) = {
            let s = self.settings.load();
            (s.lifetime, s.idle_timeout)
        };
        g.idle.retain(|s| {
            now.duration_since(s.created) < lifetime
                && now.duration_since(s.last_used) < idle
                && still_open(s)
        });
        let removed = before - g.idle.len();
        g.total = g.total.saturating_sub(removed);
    }

    /// The idle connections' backend pids and ages, for SHOW SERVERS.
    pub fn idle_servers(&self) -> Vec<(i32, Duration)> {
        self.lock()
            .idle
            .iter()
            .map(|s| (s.conn.pid, s.created.elapsed()))
            .collect()
    }

    /// Whether this pool connects where `route` points (a RELOAD may move a node id).
    pub fn addr_matches(&self, route: &crate::topology::PrimaryRoute) -> bool {
        // Compared without formatting: this runs for every transaction.
        self.addr.rsplit_once(':').is_some_and(|(host, port)| {
            host.trim_start_matches('[').trim_end_matches(']') == route.host
                && port.parse::<u16>() == Ok(route.port)
        })
    }

    pub fn size(&self) -> usize {
        self.settings.load().size
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// Whether an idle connection's backend is still there. An idle PostgreSQL backend sends
/// nothing until it ends (`pg_terminate_backend`, `idle_session_timeout`, a shutdown, its
/// postmaster's death): then a FATAL and the end of the stream. So anything readable — bytes
/// or EOF — means it is gone, and the next client must not get it. One non-blocking peek, which
/// leaves the socket as it was.
fn still_open(server: &Server) -> bool {
    let sock = socket2::SockRef::from(&server.conn.stream);
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(sock.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}
