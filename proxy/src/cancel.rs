//! Cancel keys: clients get a pid and pgpivot's own secret; a CancelRequest arriving on a new
//! connection is mapped to the backend connection the client holds at that moment.
//!
//! The pid is the server's own for a client given a server connection at login in session mode
//! (what PostgreSQL would have said: `pg_backend_pid()`, NOTIFY's sender pid); otherwise the
//! client's id, above Linux's `PID_MAX_LIMIT`, so that no backend can have it and
//! `pg_terminate_backend(<that pid>)` can never hit someone else's session. Two clients may
//! report the same server pid (servers on different nodes, or a client that kept its pid
//! through a failover): a cancel is matched on the pid and the secret together.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use dashmap::DashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::session::forward::Shared;

/// Where a cancel for one client must go: a server connection's key, made once per
/// connection and shared (attaching a client to it is a reference count, not a copy).
#[derive(Debug, Clone)]
pub struct BackendKey {
    pub addr: SocketAddr,
    pub pid: i32,
    pub secret: Vec<u8>,
    /// The node the connection is on.
    pub node: usize,
    /// Cancel requests sent to this connection's backend that PostgreSQL has not finished with.
    pub in_flight: CancelsInFlight,
}

/// Cancel requests on their way to one backend. A cancel that arrives after its query ended
/// would hit whatever the backend runs next: under pooling, possibly another client's query.
/// So a connection with a cancel in flight is not handed to anyone until PostgreSQL has
/// processed it (it closes the cancel connection once it has signalled the backend, which an
/// idle backend then ignores).
#[derive(Debug, Default)]
pub struct CancelsInFlight(std::sync::atomic::AtomicU32);

impl Clone for CancelsInFlight {
    /// A copy of a key is a new key: nothing of its own in flight.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl CancelsInFlight {
    fn begin(&self) -> InFlight<'_> {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlight(&self.0)
    }

    /// Waits (at most `bound`) until no cancel request to this backend is in flight.
    pub async fn settled(&self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        while self.0.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub fn any(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }
}

/// One cancel request in flight (counted until dropped).
struct InFlight<'a>(&'a std::sync::atomic::AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl BackendKey {
    /// False for a connection whose server sent no BackendKeyData: a cancel to it could only
    /// be a meaningless packet.
    pub fn can_cancel(&self) -> bool {
        !self.secret.is_empty()
    }
}

/// Linux's largest possible pid (`PID_MAX_LIMIT` on 64-bit kernels): pgpivot's own pids are
/// above it.
pub const PID_MAX_LIMIT: i32 = 4_194_304;

struct Entry {
    /// The pid the client was told.
    pid: i32,
    secret: [u8; 4],
    meta: ClientMeta,
    /// The session's shared state: how KILL CLIENT stops it, and (`Shared::backend`) which
    /// server connection the client holds now.
    session: Option<Arc<crate::session::forward::Shared>>,
}

/// Who a client is, for SHOW CLIENTS and the pool_* views.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    pub user: String,
    pub database: String,
    pub application_name: String,
    /// `None` for the unix socket.
    pub addr: Option<std::net::SocketAddr>,
    /// TLS version and cipher suite when the client talks TLS (SHOW CLIENTS `tls`).
    pub tls: Option<String>,
    pub connected_at: Option<std::time::SystemTime>,
}

/// A client as SHOW CLIENTS lists it.
#[derive(Debug, Clone)]
pub struct ClientRow {
    pub id: i32,
    pub meta: ClientMeta,
    pub server_pid: Option<i32>,
    pub node: Option<usize>,
    /// Seconds since the client last sent something, if it is not waiting for an answer now.
    pub idle_seconds: Option<u64>,
}

/// Every client's cancel key and identity; also how `KILL CLIENT` reaches a session.
#[derive(Default)]
pub struct CancelRegistry {
    next_id: AtomicI32,
    /// By client id (SHOW CLIENTS, KILL CLIENT).
    entries: DashMap<i32, Entry>,
    /// Clients told a server's pid (their id differs from it), by that pid.
    by_server_pid: DashMap<i32, Vec<i32>>,
}

/// Removes the client's key when its session ends, however it ends.
pub struct CancelHandle {
    registry: Arc<CancelRegistry>,
    /// pgpivot's number for the client, above `PID_MAX_LIMIT`.
    pub id: i32,
    /// The pid the client is told.
    pub pid: i32,
    pub secret: [u8; 4],
}

impl Drop for CancelHandle {
    fn drop(&mut self) {
        self.registry.entries.remove(&self.id);
        if self.pid != self.id {
            self.registry
                .by_server_pid
                .remove_if_mut(&self.pid, |_, ids| {
                    ids.retain(|id| *id != self.id);
                    ids.is_empty()
                });
        }
    }
}

impl CancelHandle {
    /// Lets `KILL CLIENT` reach the session, and cancels the server connection it holds
    /// (which the session keeps in `Shared::backend`, not here: attaching happens at every
    /// transaction and should not touch this map).
    pub fn set_session(&self, shared: Arc<crate::session::forward::Shared>) {
        if let Some(mut e) = self.registry.entries.get_mut(&self.id) {
            e.session = Some(shared);
        }
    }
}

impl CancelRegistry {
    pub fn new() -> Arc<Self> {
        Arc::new(CancelRegistry {
            next_id: AtomicI32::new(PID_MAX_LIMIT + 1 + i32::from(rand::random::<u16>())),
            entries: DashMap::new(),
            by_server_pid: DashMap::new(),
        })
    }

    /// Issues a fresh key for a new client: the pid it is told is `server_pid` (the server
    /// connection it was given at login, session mode) or its own id.
    pub fn register(self: &Arc<Self>, meta: ClientMeta, server_pid: Option<i32>) -> CancelHandle {
        loop {
            let mut id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id <= PID_MAX_LIMIT {
                // Wrapped: start again above the pids of processes.
                self.next_id.store(PID_MAX_LIMIT + 2, Ordering::Relaxed);
                id = PID_MAX_LIMIT + 1;
            }
            let pid = server_pid
                .filter(|p| (1..=PID_MAX_LIMIT).contains(p))
                .unwrap_or(id);
            let secret: [u8; 4] = rand::random();
            if let dashmap::Entry::Vacant(v) = self.entries.entry(id) {
                v.insert(Entry {
                    pid,
                    secret,
                    meta,
                    session: None,
                });
                if pid != id {
                    self.by_server_pid.entry(pid).or_default().push(id);
                }
                return CancelHandle {
                    registry: self.clone(),
                    id,
                    pid,
                    secret,
                };
            }
        }
    }

    /// Looks up a cancel request's target; `None` if no client was told this pid with this
    /// secret, or it holds no server connection now.
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        let ids = if pid > PID_MAX_LIMIT {
            vec![pid]
        } else {
            self.by_server_pid.get(&pid)?.clone()
        };
        let session = ids.iter().find_map(|id| {
            let e = self.entries.get(id)?;
            let matches = e.pid == pid && secret.len() == 4 && constant_time_eq(&e.secret, secret);
            matches.then(|| e.session.clone()).flatten()
        })?;
        let key = session.backend()?;
        let ready_at = session.ready_count();
        Some(CancelTarget {
            session,
            key,
            ready_at,
        })
    }

    /// Every client now connected.
    pub fn clients(&self, now: u64) -> Vec<ClientRow> {
        self.entries
            .iter()
            .map(|e| {
                let backend = e.session.as_ref().and_then(|s| s.backend());
                ClientRow {
                    id: *e.key(),
                    meta: e.meta.clone(),
                    server_pid: backend.as_ref().map(|b| b.pid),
                    node: backend.as_ref().map(|b| b.node),
                    idle_seconds: e
                        .session
                        .as_ref()
                        .filter(|s| s.pending() == 0)
                        .map(|s| s.silent_for(now)),
                }
            })
            .collect()
    }

    /// Every session's shared state (for the idle-limit sweep).
    pub fn sessions(&self) -> Vec<Arc<crate::session::forward::Shared>> {
        self.entries
            .iter()
            .filter_map(|e| e.session.clone())
            .collect()
    }

    /// Ends a client's session (FATAL 57P01 at its next message boundary); false if there is
    /// no such client.
    pub fn kill(&self, id: i32) -> bool {
        let Some(session) = self.entries.get(&id).and_then(|e| e.session.clone()) else {
            return false;
        };
        session.request_stop(
            pgpivot_protocol::sqlstate::ADMIN_SHUTDOWN,
            "terminating connection due to administrator command".into(),
        );
        true
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The server connection a client held when its cancel request arrived.
pub struct CancelTarget {
    session: Arc<Shared>,
    pub key: Arc<BackendKey>,
    /// The client's ReadyForQuery count then: the request the cancel is meant for ends with
    /// the next one.
    ready_at: u64,
}

impl CancelTarget {
    /// Still held by the same client, running the same request. In transaction mode the
    /// connection may go back to the pool (and to another client) while the cancel connection
    /// is being opened, and in any mode the request may end meanwhile and the client send its
    /// next: checked again right before the packet is sent, so neither another client's query
    /// nor the client's next one is cancelled.
    pub fn still_held(&self) -> bool {
        self.session.ready_count() == self.ready_at
            && self
                .session
                .backend()
                .is_some_and(|b| Arc::ptr_eq(&b, &self.key))
    }

    /// Sends the cancel; the client's next requests wait until PostgreSQL has processed it.
    pub async fn send(self) {
        self.session.cancel_in_flight(true);
        send_cancel_if(self.key.clone(), || self.still_held()).await;
        self.session.cancel_in_flight(false);
    }
}

/// Sends a CancelRequest to a backend on a new connection (bounded in time; errors are only
/// logged, as PostgreSQL gives the canceller no answer either).
pub async fn send_cancel(key: Arc<BackendKey>) {
    send_cancel_if(key, || true).await
}

/// As [`send_cancel`], if `still_meant()` holds once the connection is open.
async fn send_cancel_if(key: Arc<BackendKey>, still_meant: impl Fn() -> bool) {
    if !key.can_cancel() {
        tracing::debug!(backend = %key.addr, "no cancel key from this server; cancel not sent");
        return;
    }
    let _in_flight = key.in_flight.begin();
    let result = tokio::time::timeout(Duration::from_secs(5), async {
        let mut s = tokio::net::TcpStream::connect(key.addr).await?;
        if !still_meant() {
            return Ok(false);
        }
        let mut b = BytesMut::with_capacity(16 + key.secret.len());
        b.put_i32(12 + key.secret.len() as i32);
        b.put_i32(pgpivot_protocol::startup::CANCEL_REQUEST_CODE);
        b.put_i32(key.pid);
        b.put_slice(&key.secret);
        s.write_all(&b).await?;
        s.shutdown().await?;
        // PostgreSQL closes the connection once it has signalled the backend: until then the
        // cancel is in flight (and the connection not handed to anyone else).
        let mut rest = [0u8; 64];
        while s.read(&mut rest).await? > 0 {}
        Ok::<_, std::io::Error>(true)
    })
    .await;
    match result {
        Ok(Ok(true)) => tracing::debug!(backend = %key.addr, pid = key.pid, "cancel request sent"),
        Ok(Ok(false)) => {
            tracing::debug!(backend = %key.addr, pid = key.pid, "connection changed hands; cancel not sent")
        }
        Ok(Err(e)) => tracing::warn!(backend = %key.addr, error = %e, "cancel request failed"),
        Err(_) => tracing::warn!(backend = %key.addr, "cancel request timed out"),
    }
}

#[cfg(test)]
#[path = "cancel_tests.rs"]
mod tests;
