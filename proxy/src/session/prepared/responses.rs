//! The server→client half: a [`ResponsePlan`] lines the server's responses up with the client
//! messages that caused them, so probe replies can be rewritten, pgpivot's own Parse replies
//! swallowed, and cached-statement bookkeeping undone when the server fails or skips a message.
//!
//! Two modes keep the common case free:
//!
//! * **Counting** (queue empty). While no message needs special handling the plan only keeps
//!   three counters: ReadyForQuery replies owed for Syncs/Queries already sent, extended messages
//!   sent since the last Sync, and their terminal replies seen since the last ReadyForQuery. A
//!   pgbench `-M prepared` loop (Bind/Execute/Sync on a server that has the statement) stays here:
//!   O(1) integer work per message, no queue, and the server→client pump stops only at `Z`/`E`.
//!   (The counting cannot be skipped: a plan consulted only while it has entries could not tell
//!   where its first special reply goes, since replies to earlier messages may still be in flight
//!   or already forwarded.)
//! * **Tracking** (queue non-empty), from the first special message until everything before and
//!   including it has been answered. The counters become the queue's head — "n ReadyForQuery
//!   first", "then n extended replies" — which is exactly what is needed to know where the
//!   special reply sits, even when earlier replies were already forwarded (Flush, a result set
//!   larger than the server's send buffer) or earlier batches are still in flight. Consecutive
//!   ordinary messages collapse into one counted entry.
//!
//! Every extended-protocol message (Parse, Bind, Describe, Execute, Close) ends with exactly one
//! *terminal* reply — `1 2 3 T n C I s` — or an ErrorResponse; `t`, DataRow and COPY traffic come
//! before it and NoticeResponse / ParameterStatus / NotificationResponse may come anywhere. After
//! an error in extended protocol the server ignores every message up to Sync (Query and
//! FunctionCall included), so queued entries up to the next Sync are dropped and their
//! bookkeeping undone, newest first.
//!
//! SQL that drops statements (`DEALLOCATE`, `DISCARD ALL`) puts a zero-width *watch* marker in
//! the queue ahead of the message that runs it; from the marker's turn until the next
//! ReadyForQuery the plan also stops at CommandComplete, where the server confirms each drop,
//! and undoes those it did not confirm (see `resets.rs`).

use std::collections::VecDeque;

use bytes::BytesMut;
use pgpivot_protocol::views::ErrorView;

use super::resets::{Completed, WatchSet};
use super::special::{Reply, Special};
use super::{ClientStatements, ServerStatements, INVALID_SQL_STATEMENT_NAME};

/// The server's stream no longer matches what was sent: the session cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("server sent message type {tag:?} where {expected} was expected")]
    Unexpected { tag: char, expected: &'static str },
    #[error("malformed message of type {0:?} from server")]
    Malformed(char),
}

impl PlanError {
    pub fn sqlstate(&self) -> &'static str {
        pgpivot_protocol::sqlstate::PROTOCOL_VIOLATION
    }
}

/// One reply that ends an extended-protocol message.
#[inline]
fn is_terminal(tag: u8) -> bool {
    matches!(tag, b'1' | b'2' | b'3' | b'T' | b'n' | b'C' | b'I' | b's')
}

#[derive(Debug)]
enum Entry {
    /// Replies up to and including this many ReadyForQuery: Syncs, and at the head, everything
    /// sent before tracking started. An error inside is the server's business.
    Ready(u32),
    /// Query / FunctionCall: up to and including ReadyForQuery. Ignored by a server that is
    /// skipping to Sync.
    Simple(u32),
    /// Extended messages forwarded (maybe renamed): this many terminal replies.
    Units(u32),
    Special(Special),
    /// No reply of its own: from here to the next ReadyForQuery, watch CommandCompletes.
    Watch(Box<WatchSet>),
}

/// Per-client alignment of the server's response stream with what was sent (see module docs).
///
/// Call protocol. The plan, the client's [`ClientStatements`] and the attached server
/// connection's [`ServerStatements`] are used by both pumps (keep them under one lock). All plan
/// updates for client bytes must happen before those bytes are written to the server.
///
/// * client→server: every client message is reported exactly once — P/B/D/C (and any other
///   message the caller reads whole) through
///   [`rewrite_client_message`](super::rewrite_client_message), which writes what to send; every
///   other one is forwarded by the caller and reported with [`ResponsePlan::on_client_message`]
///   (from the `Scanner` closure, which sees each declined header exactly once).
/// * server→client: **every** message header goes through [`ResponsePlan::wants`], also while
///   [`is_empty`](Self::is_empty) — the plan counts replies in that mode, which is what lets it
///   place a later special reply correctly. The `Scanner` closure is
///   `|t| caller_wants(t) || plan.wants(t)` (in that order: `wants` must not see a message
///   twice). Every message the scanner stops at goes, whole, to
///   [`ResponsePlan::on_server_message`], which appends what the client must see to `out`;
///   passed bytes go to the client untouched, in order.
/// * Release / switch server connections only when [`is_settled`](Self::is_settled).
#[derive(Debug, Default)]
pub struct ResponsePlan {
    queue: VecDeque<Entry>,
    /// Counting mode: ReadyForQuery still owed for Syncs/Queries/FunctionCalls sent.
    owed_ready: u32,
    /// Counting mode: extended messages sent since the last Sync/Query/FunctionCall.
    open_units: u32,
    /// Counting mode: terminal replies seen since the last ReadyForQuery (meaningful only when
    /// `owed_ready` is 0, i.e. they belong to the open batch).
    done_units: u32,
    /// The server reported an extended-protocol error and no Sync has been sent since: it is
    /// ignoring everything until then. Implies an empty queue.
    skipping: bool,
    /// The drops whose turn it is (until the next ReadyForQuery).
    watch: Option<Box<WatchSet>>,
    /// The last ReadyForQuery said the session is in a transaction block.
    in_transaction: bool,
}

impl ResponsePlan {
    pub fn new() -> Self {
        Self::default()
    }

    /// No special reply is pending (counting mode: `wants` then stops only at `Z` and `E`).
    /// Informational — it does not mean the server stream may bypass [`Self::wants`].
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Nothing sent is still unanswered or un-Synced: the client may move to another server
    /// connection (the plan and [`ServerStatements`] stay consistent).
    pub fn is_settled(&self) -> bool {
        self.queue.is_empty() && self.owed_ready == 0 && self.open_units == 0 && !self.skipping
    }

    /// Settled, and outside a transaction block: pgpivot may send messages of its own first.
    pub(super) fn is_idle(&self) -> bool {
        self.is_settled() && !self.in_transaction
    }

    /// Forget everything (the server connection was lost).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// A client message the caller forwarded itself (anything but what went through
    /// `rewrite_client_message`). Call exactly once per message, before writing it.
    pub fn on_client_message(&mut self, tag: u8) {
        match tag {
            b'P' | b'B' | b'D' | b'E' | b'C' => self.push_unit(),
            b'S' => self.push_sync(),
            b'Q' | b'F' => self.push_simple(),
            // Flush, CopyData/CopyDone/CopyFail, Terminate: no reply of their own.
            _ => {}
        }
    }

    /// The client ended a COPY FROM started by an Execute: the `n` Syncs it sent after that
    /// Execute (libpq and tokio-postgres send one before the data) were ignored by the server,
    /// which answers only the Sync after CopyDone/CopyFail. Forget them.
    pub fn forget_syncs(&mut self, n: u32) {
        let mut left = n;
        if self.queue.is_empty() {
            self.owed_ready = self.owed_ready.saturating_sub(left);
            return;
        }
        let mut i = self.queue.len();
        while left > 0 && i > 0 {
            i -= 1;
            if let Some(Entry::Ready(r)) = self.queue.get_mut(i) {
                let take = (*r).min(left);
                *r -= take;
                left -= take;
                if *r == 0 {
                    self.queue.remove(i);
                }
            }
        }
    }

    pub(super) fn push_unit(&mut self) {
        match self.queue.back_mut() {
            None => self.open_units = self.open_units.saturating_add(1),
            Some(Entry::Units(n)) => *n = n.saturating_add(1),
            Some(_) => self.queue.push_back(Entry::Units(1)),
        }
    }

    fn push_sync(&mut self) {
        self.skipping = false;
        match self.queue.back_mut() {
            None => {
                self.owed_ready = self.owed_ready.saturating_add(1);
                self.open_units = 0;
            }
            Some(Entry::Ready(n)) => *n = n.saturating_add(1),
            Some(_) => self.queue.push_back(Entry::Ready(1)),
        }
    }

    fn push_simple(&mut self) {
        if self.skipping {
            return; // the server ignores it: no reply at all
        }
        if self.queue.is_empty() {
            if self.open_units == 0 {
                self.owed_ready = self.owed_ready.saturating_add(1);
                return;
            }
            // Un-Synced extended messages before it: if one fails, this Query is skipped and
            // never answered, which only the queue can express.
            self.start_tracking();
        }
        match self.queue.back_mut() {
            Some(Entry::Simple(n)) => *n = n.saturating_add(1),
            _ => self.queue.push_back(Entry::Simple(1)),
        }
    }

    pub(super) fn push_special(
        &mut self,
        special: Special,
        client: &mut ClientStatements,
        server: &mut ServerStatements,
    ) {
        if self.skipping {
            // The server will ignore it, as PostgreSQL would have ignored the client's message.
            special.undo(client, server);
            return;
        }
        if self.queue.is_empty() {
            self.start_tracking();
        }
        self.queue.push_back(Entry::Special(special));
    }

    /// The server is skipping to Sync: it will ignore what is sent now.
    pub(super) fn is_skipping(&self) -> bool {
        self.skipping
    }

    /// The next message sent runs these drops (applied already): watch its CommandCompletes.
    /// Not while [`Self::is_skipping`].
    pub(super) fn push_watch(&mut self, watch: WatchSet) {
        if self.queue.is_empty() {
            self.start_tracking();
        }
        self.queue.push_back(Entry::Watch(Box::new(watch)));
    }

    /// Markers at the head of the queue: their turn has come.
    #[inline]
    fn activate(&mut self) {
        while let Some(Entry::Watch(_)) = self.queue.front() {
            if let Some(Entry::Watch(w)) = self.queue.pop_front() {
                match &mut self.watch {
                    Some(active) => active.append(*w),
                    None => self.watch = Some(w),
                }
            }
        }
    }

    /// Counting → tracking: the counters become the queue's head.
    fn start_tracking(&mut self) {
        let units = if self.owed_ready > 0 {
            self.queue.push_back(Entry::Ready(self.owed_ready));
            self.open_units
        } else {
            self.open_units.saturating_sub(self.done_units)
        };
        if units > 0 {
            self.queue.push_back(Entry::Units(units));
        }
        self.owed_ready = 0;
        self.open_units = 0;
        self.done_units = 0;
    }

    /// For the server-side `Scanner` closure. True: stop at this message and hand it whole to
    /// [`Self::on_server_message`] (no state changed, so being asked again is harmless). False:
    /// it has been accounted for and passes untouched (so call this once per such message).
    #[inline]
    pub fn wants(&mut self, tag: u8) -> bool {
        if tag == b'Z' || tag == b'E' {
            return true;
        }
        if !is_terminal(tag) {
            return false; // DataRow, 't', COPY, async messages: nothing to account
        }
        self.activate();
        if tag == b'C' && self.watch.is_some() {
            return true;
        }
        self.account(tag)
    }

    /// A terminal reply that is not a special's: counted. True if a special is waiting for a
    /// different one (the caller must stop).
    fn account(&mut self, tag: u8) -> bool {
        match self.queue.front_mut() {
            None => self.done_units = self.done_units.saturating_add(1),
            Some(Entry::Ready(_) | Entry::Simple(_)) => {}
            Some(Entry::Units(n)) => {
                *n -= 1;
                if *n == 0 {
                    self.queue.pop_front();
                }
            }
            Some(Entry::Special(s)) => match s.reply(tag) {
                Some(Reply::Forward) => {
                    self.queue.pop_front();
                }
                _ => return true,
            },
            // `activate` ran first.
            Some(Entry::Watch(_)) => {}
        }
        false
    }

    /// One whole server message (`frame` = tag + length + body). Appends to `out` what the
    /// client must see in its place: the message itself, a replacement, or nothing.
    pub fn on_server_message(
        &mut self,
        tag: u8,
        frame: &[u8],
        out: &mut BytesMut,
        client: &mut ClientStatements,
        server: &mut ServerStatements,
    ) -> Result<(), PlanError> {
        let body = server_body(tag, frame)?;
        self.activate();
        match tag {
            b'Z' => {
                self.on_ready(body, client, server)?;
                out.extend_from_slice(frame);
            }
            b'E' => self.on_error(body, frame, out, client, server),
            t if is_terminal(t) => {
                if let Some(Entry::Special(s)) = self.queue.front() {
                    let reply = s.reply(t).ok_or(PlanError::Unexpected {
                        tag: t as char,
                        expected: s.expected(),
                    })?;
                    self.queue.pop_front();
                    match reply {
                        Reply::Forward => out.extend_from_slice(frame),
                        Reply::Drop => {}
                        Reply::Replace(with) => out.extend_from_slice(with),
                    }
                } else {
                    let wanted = self.account(t);
                    debug_assert!(!wanted);
                    let completed = match (&mut self.watch, t) {
                        (Some(w), b'C') => w.on_complete(body),
                        _ => Completed::Client,
                    };
                    if completed == Completed::UnforeseenDropAll {
                        client.clear();
                        server.clear();
                    }
                    if completed != Completed::Own {
                        out.extend_from_slice(frame);
                    }
                }
            }
            _ => out.extend_from_slice(frame),
        }
        Ok(())
    }

    fn on_ready(
        &mut self,
        body: &[u8],
        client: &mut ClientStatements,
        server: &mut ServerStatements,
    ) -> Result<(), PlanError> {
        if let Some(w) = self.watch.take() {
            // Not confirmed: the server did not run them.
            w.undo(client, server);
        }
        self.in_transaction = body.first().is_some_and(|&s| s != b'I');
        match self.queue.front_mut() {
            None => {
                self.owed_ready = self.owed_ready.saturating_sub(1);
                self.done_units = 0;
            }
            Some(Entry::Ready(n) | Entry::Simple(n)) => {
                *n -= 1;
                if *n == 0 {
                    self.queue.pop_front();
                }
            }
            Some(Entry::Units(_)) => {
                return Err(PlanError::Unexpected {
                    tag: 'Z',
                    expected: "an extended-protocol reply",
                })
            }
            Some(Entry::Special(s)) => {
                return Err(PlanError::Unexpected {
                    tag: 'Z',
                    expected: s.expected(),
                })
            }
            Some(Entry::Watch(_)) => {}
        }
        Ok(())
    }

    fn on_error(
        &mut self,
        body: &[u8],
        frame: &[u8],
        out: &mut BytesMut,
        client: &mut ClientStatements,
        server: &mut ServerStatements,
    ) {
        // Positions in a query pgpivot rewrote are put back in the client's terms.
        let shifted = self.watch.as_ref().and_then(|w| w.shift_position(frame));
        let frame = shifted.as_deref().unwrap_or(frame);
        match self.queue.front() {
            None => {
                // An error in the open (un-Synced) batch: the server now skips to Sync.
                if self.owed_ready == 0 && self.open_units > self.done_units {
                    self.skipping = true;
                }
                out.extend_from_slice(frame);
                return;
            }
            // Inside a Query, FunctionCall, Sync (commit) or an earlier batch: just forwarded.
            Some(Entry::Ready(_) | Entry::Simple(_)) => {
                out.extend_from_slice(frame);
                return;
            }
            Some(Entry::Special(Special::Reject { error }))
                if ErrorView::new(body).sqlstate() == Some(INVALID_SQL_STATEMENT_NAME) =>
            {
                out.extend_from_slice(error);
            }
            Some(_) => out.extend_from_slice(frame),
        }
        // Extended-protocol error: everything up to the next Sync is skipped by the server.
        let mut undo = Vec::new();
        while let Some(entry) = self.queue.front() {
            if matches!(entry, Entry::Ready(_)) {
                break;
            }
            if let Some(e @ (Entry::Special(_) | Entry::Watch(_))) = self.queue.pop_front() {
                undo.push(e);
            }
        }
        for e in undo.into_iter().rev() {
            match e {
                Entry::Special(s) => s.undo(client, server),
                Entry::Watch(w) => w.undo(client, server),
                _ => {}
            }
        }
        if self.queue.is_empty() {
            self.skipping = true;
        }
    }
}

/// CommandComplete body of `DISCARD ALL` / `DEALLOCATE ALL`: the session's prepared statements
/// (so the server's, and the client's names) are gone.
pub fn command_clears_statements(body: &[u8]) -> bool {
    matches!(body, b"DISCARD ALL\0" | b"DEALLOCATE ALL\0")
}

/// Validates a server frame's header against its length and returns the body.
fn server_body(tag: u8, frame: &[u8]) -> Result<&[u8], PlanError> {
    let malformed = PlanError::Malformed(tag as char);
    let (head, body) = frame.split_first_chunk::<5>().ok_or(malformed.clone())?;
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if head[0] != tag || usize::try_from(len).ok() != Some(body.len() + 4) {
        return Err(malformed);
    }
    Ok(body)
}

#[cfg(test)]
#[path = "responses_tests.rs"]
mod tests;
