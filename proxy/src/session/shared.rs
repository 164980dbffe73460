//! State the two pumps and the engine share for one client session: request and transaction
//! bookkeeping (atomics), pinning, the prepared-statement state, and the stop/wake channel.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use super::prepared::{ClientStatements, ResponsePlan, ServerStatements};
use super::tally::Tally;

/// State both pumps and the engine see. Lives for the whole client session.
pub struct Shared {
    /// Requests (Query, Sync, FunctionCall) sent whose ReadyForQuery has not come back.
    pub pending: AtomicU32,
    /// The last ReadyForQuery said "idle" (not in a transaction block).
    pub idle: AtomicBool,
    /// The last ReadyForQuery's status byte (`I`, `T`, `E`): what a locally answered command
    /// reports.
    pub status: AtomicU8,
    /// The client pump stopped at a command pgpivot answers itself (`SHOW pool_*`): the server
    /// pump hands the connection back as soon as nothing is outstanding.
    pub yield_wanted: AtomicBool,
    /// A transaction or request is outstanding (counted in PAUSE's wait).
    pub busy: AtomicBool,
    /// When the client last sent something, in [`crate::idle_limit::Clock`] seconds.
    pub last_active: std::sync::atomic::AtomicU64,
    /// Extended-protocol messages sent since the last Sync.
    pub unsynced: AtomicBool,
    /// Syncs the client sent since its last Execute: if a COPY FROM follows, the server ignores
    /// them (see `ResponsePlan::forget_syncs`).
    pub(super) syncs_since_execute: AtomicU32,
    /// Bytes of the client buffer being written to the server right now (0 = not writing).
    pub in_flight: AtomicUsize,
    /// The client stream is at a message boundary.
    pub client_boundary: AtomicBool,
    /// The server→client stream is at a message boundary.
    pub server_boundary: AtomicBool,
    /// Why the client is pinned to its server connection, if it is.
    pub pinned: Mutex<Option<&'static str>>,
    pub(super) pin_counted: AtomicBool,
    /// The client ran RESET, DISCARD ALL or `SET … TO DEFAULT` during this attachment: the
    /// connection's parameters went back to its own startup values (see
    /// `Server::after_client_reset`).
    params_reset: AtomicBool,
    /// Prepared-statement state both pumps use (never held across an await).
    pub prep: Mutex<PrepState>,
    /// A FATAL the server sent before closing (the raw frame), held back until it is known
    /// whether the node is going away (the client stays and gets its words as an ERROR) or only
    /// this backend ended (the frame goes to the client as it is, and the session ends).
    pub server_fatal: Mutex<Option<bytes::Bytes>>,
    stop: Mutex<Option<Box<(&'static str, String)>>>,
    pub(super) wake: Notify,
    /// The server connection the client holds now: where its cancel requests go.
    backend: Mutex<Option<std::sync::Arc<crate::cancel::BackendKey>>>,
    /// Traffic counts not yet added to the pool's and the process's totals.
    pub tally: Tally,
    /// ReadyForQuery messages the client has been sent: a cancel request is meant for the
    /// request running when it arrived, so it is dropped once this moves on.
    ready_count: AtomicU64,
    /// Cancel requests of this client on their way to PostgreSQL: its next requests wait for
    /// them (a late cancel would hit them instead of the query it was meant for).
    cancels: AtomicU32,
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

impl Shared {
    pub fn new() -> Self {
        Shared {
            pending: AtomicU32::new(0),
            syncs_since_execute: AtomicU32::new(0),
            idle: AtomicBool::new(true),
            status: AtomicU8::new(b'I'),
            yield_wanted: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            last_active: std::sync::atomic::AtomicU64::new(0),
            unsynced: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            client_boundary: AtomicBool::new(true),
            server_boundary: AtomicBool::new(true),
            pinned: Mutex::new(None),
            pin_counted: AtomicBool::new(false),
            params_reset: AtomicBool::new(false),
            prep: Mutex::new(PrepState::default()),
            server_fatal: Mutex::new(None),
            stop: Mutex::new(None),
            wake: Notify::new(),
            backend: Mutex::new(None),
            tally: Tally::default(),
            ready_count: AtomicU64::new(0),
            cancels: AtomicU32::new(0),
        }
    }

    /// A request that gets its own ReadyForQuery (Query, Sync, FunctionCall) is sent.
    pub fn request_sent(&self) {
        let before = self.pending.fetch_add(1, Ordering::Relaxed);
        self.tally.request(before);
    }

    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Seconds since the client last sent something, `now` on the same clock.
    pub fn silent_for(&self, now: u64) -> u64 {
        now.saturating_sub(self.last_active.load(Ordering::Relaxed))
    }

    pub fn pinned(&self) -> Option<&'static str> {
        *self.pinned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Idle outside a transaction with nothing outstanding on either stream.
    pub fn quiescent(&self) -> bool {
        self.prep().plan.is_settled()
            && self.pending() == 0
            && self.idle.load(Ordering::Relaxed)
            && !self.unsynced.load(Ordering::Relaxed)
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.client_boundary.load(Ordering::Relaxed)
            && self.server_boundary.load(Ordering::Relaxed)
    }

    /// Nothing outstanding on either stream, in a transaction or not: the server connection can
    /// be set aside while pgpivot answers a command itself.
    pub fn can_yield(&self) -> bool {
        self.prep().plan.is_settled()
            && self.pending() == 0
            && !self.unsynced.load(Ordering::Relaxed)
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.client_boundary.load(Ordering::Relaxed)
            && self.server_boundary.load(Ordering::Relaxed)
    }

    /// Fresh per-attachment state (a new server connection starts idle with nothing pending).
    pub fn reset_for_attach(&self) {
        self.pending.store(0, Ordering::Relaxed);
        self.idle.store(true, Ordering::Relaxed);
        self.status.store(b'I', Ordering::Relaxed);
        self.unsynced.store(false, Ordering::Relaxed);
        self.in_flight.store(0, Ordering::Relaxed);
        self.server_boundary.store(true, Ordering::Relaxed);
        self.prep().plan.reset();
        self.tally.reset_timers();
        *self.server_fatal.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Points the client's cancel requests at `key` (None: it holds no server connection).
    pub fn set_backend(&self, key: Option<std::sync::Arc<crate::cancel::BackendKey>>) {
        let old = std::mem::replace(
            &mut *self.backend.lock().unwrap_or_else(|e| e.into_inner()),
            key,
        );
        // Dropped outside the lock.
        drop(old);
    }

    pub fn backend(&self) -> Option<std::sync::Arc<crate::cancel::BackendKey>> {
        self.backend
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn prep(&self) -> std::sync::MutexGuard<'_, PrepState> {
        self.prep.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn request_stop(&self, code: &'static str, message: String) {
        if let Ok(mut s) = self.stop.lock() {
            s.get_or_insert_with(|| Box::new((code, message)));
        }
        self.wake.notify_one();
    }

    pub fn take_stop(&self) -> Option<(&'static str, String)> {
        self.stop.lock().ok().and_then(|mut s| s.take()).map(|b| *b)
    }

    pub(super) fn note_params_reset(&self) {
        self.params_reset.store(true, Ordering::Relaxed);
    }

    /// A ReadyForQuery went to the client.
    pub fn ready_sent(&self) {
        self.ready_count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn ready_count(&self) -> u64 {
        self.ready_count.load(Ordering::Relaxed)
    }

    /// A cancel request of this client is on its way (`false` once it is done).
    pub fn cancel_in_flight(&self, on: bool) {
        if on {
            self.cancels.fetch_add(1, Ordering::AcqRel);
        } else {
            self.cancels.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub fn cancels_in_flight(&self) -> bool {
        self.cancels.load(Ordering::Acquire) > 0
    }

    pub(super) fn params_reset_pending(&self) -> bool {
        self.params_reset.load(Ordering::Relaxed)
    }

    pub(super) fn take_params_reset(&self) -> bool {
        self.params_reset.swap(false, Ordering::Relaxed)
    }

    pub(super) fn pin(&self, why: &'static str) {
        let mut p = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none() {
            *p = Some(why);
            tracing::debug!(reason = why, "client pinned to its server connection");
        }
    }
}

/// Prepared statements of the client and of the attached server connection, and the plan that
/// keeps the server's replies aligned with what the client sent.
#[derive(Default)]
pub struct PrepState {
    pub plan: ResponsePlan,
    pub client: ClientStatements,
    /// The attached server connection's statements (swapped in and out at attach/detach).
    pub server: ServerStatements,
    /// Statements and portals of `SHOW pool_*` commands pgpivot answers itself (extended
    /// protocol); boxed, as most clients never have one.
    pub local: Option<Box<pgpivot_admin::Responder>>,
    /// The client's named statements whose text resets parameters (`DISCARD ALL`, `RESET`):
    /// executing one is a reset (see `Shared::note_params_reset`). Rare, so boxed.
    pub param_resetters: Option<Box<std::collections::HashSet<Vec<u8>>>>,
}
