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

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pgpivot_protocol::views::ErrorView;

use super::{ClientStatements, ServerStatements, StatementDef, INVALID_SQL_STATEMENT_NAME};

/// ParseComplete, for a cached Parse whose probe was answered with CloseComplete.
const PARSE_COMPLETE: &[u8] = &[b'1', 0, 0, 0, 4];

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

/// A client message whose reply needs more than forwarding.
#[derive(Debug)]
pub(super) enum Special {
    /// The client's Parse, sent under the global name: undone if it fails.
    ParseSent {
        name: Vec<u8>,
        def: Arc<StatementDef>,
    },
    /// The client's Parse of a statement this server already has: a Close probe went instead and
    /// its CloseComplete becomes the client's ParseComplete.
    ParseCached {
        name: Vec<u8>,
        def: Arc<StatementDef>,
    },
    /// pgpivot's own Parse before a Bind/Describe: its ParseComplete is not the client's.
    Prepare { hash: u64 },
    /// The client's Close of a statement (kept on the server): a Close probe went instead.
    Closed {
        name: Vec<u8>,
        removed: Option<Arc<StatementDef>>,
    },
    /// A message PostgreSQL would reject: a Describe probe fails on the server (26000) and the
    /// client gets this ErrorResponse in its place.
    Reject { error: Bytes },
}

/// What happens to a special entry's terminal reply.
enum Reply {
    Forward,
    Drop,
    Replace(&'static [u8]),
}

impl Special {
    /// `None`: this terminal cannot be the reply to this message.
    fn reply(&self, tag: u8) -> Option<Reply> {
        match (self, tag) {
            (Special::ParseSent { .. }, b'1') => Some(Reply::Forward),
            (Special::ParseCached { .. }, b'3') => Some(Reply::Replace(PARSE_COMPLETE)),
            (Special::Prepare { .. }, b'1') => Some(Reply::Drop),
            (Special::Closed { .. }, b'3') => Some(Reply::Forward),
            // The probe statement exists after all (someone created it): pass the reply on.
            (Special::Reject { .. }, b'T' | b'n') => Some(Reply::Forward),
            _ => None,
        }
    }

    fn expected(&self) -> &'static str {
        match self {
            Special::ParseSent { .. } | Special::Prepare { .. } => "ParseComplete",
            Special::ParseCached { .. } | Special::Closed { .. } => "CloseComplete",
            Special::Reject { .. } => "ErrorResponse",
        }
    }

    /// The server failed or skipped this message: put the maps back as if it was never sent.
    fn undo(self, client: &mut ClientStatements, server: &mut ServerStatements) {
        match self {
            Special::ParseSent { name, def } => {
                client.remove_if_same(&name, &def);
                server.remove(def.hash);
            }
            Special::ParseCached { name, def } => client.remove_if_same(&name, &def),
            Special::Prepare { hash } => {
                server.remove(hash);
            }
            Special::Closed { name, removed } => {
                if let Some(def) = removed {
                    client.restore(&name, &def);
                }
            }
            Special::Reject { .. } => {}
        }
    }
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
        match tag {
            b'Z' => {
                self.on_ready()?;
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
                    let wanted = self.wants(t);
                    debug_assert!(!wanted);
                    out.extend_from_slice(frame);
                }
                if t == b'C' && command_clears_statements(body) {
                    client.clear();
                    server.clear();
                }
            }
            _ => out.extend_from_slice(frame),
        }
        Ok(())
    }

    fn on_ready(&mut self) -> Result<(), PlanError> {
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
            if let Some(Entry::Special(s)) = self.queue.pop_front() {
                undo.push(s);
            }
        }
        for s in undo.into_iter().rev() {
            s.undo(client, server);
        }
        if self.queue.is_empty() {
            self.skipping = true;
        }
    }
}

/// CommandComplete body of `DISCARD ALL` / `DEALLOCATE ALL`: the session's prepared statements
/// (so the server's, and the client's names) are gone. [`ResponsePlan::on_server_message`]
/// clears both maps on it; to get that, the caller's scanner must stop at `C`.
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
mod tests {
    use super::super::rewrite::tests::{bind, describe_s, execute, msg, parse, sync};
    use super::super::*;
    use super::*;

    /// Server replies.
    fn reply(tag: u8) -> Vec<u8> {
        msg(tag, b"")
    }
    fn error(code: &str) -> Vec<u8> {
        let mut b = BytesMut::new();
        pgpivot_protocol::build::error_response(
            &mut b,
            &pgpivot_protocol::build::ErrorFields {
                severity: "ERROR",
                code,
                message: "boom",
                detail: None,
                hint: None,
            },
        );
        b.to_vec()
    }
    fn ready() -> Vec<u8> {
        msg(b'Z', b"I")
    }
    fn row() -> Vec<u8> {
        msg(b'D', b"\0\x01\0\0\0\x011")
    }
    fn complete() -> Vec<u8> {
        msg(b'C', b"SELECT 1\0")
    }

    struct Client {
        stmts: ClientStatements,
        plan: ResponsePlan,
        /// Bytes the server received.
        sent: BytesMut,
        /// Bytes the client received.
        got: Vec<u8>,
        /// How often the server-side scanner had to stop.
        stops: usize,
    }

    impl Client {
        fn new() -> Self {
            Client {
                stmts: ClientStatements::new(),
                plan: ResponsePlan::new(),
                sent: BytesMut::new(),
                got: Vec::new(),
                stops: 0,
            }
        }
        fn send(&mut self, server: &mut ServerStatements, frame: &[u8]) -> Rewrite {
            let tag = frame[0];
            if is_statement_message(tag) {
                rewrite_client_message(
                    tag,
                    frame,
                    &mut self.stmts,
                    server,
                    &mut self.plan,
                    &mut self.sent,
                )
                .unwrap()
            } else {
                self.plan.on_client_message(tag);
                self.sent.extend_from_slice(frame);
                Rewrite::Forwarded
            }
        }
        /// Feeds whole server messages the way the pump does.
        fn recv(&mut self, server: &mut ServerStatements, frames: &[Vec<u8>]) {
            for f in frames {
                if self.plan.wants(f[0]) {
                    self.stops += 1;
                    let mut out = BytesMut::new();
                    self.plan
                        .on_server_message(f[0], f, &mut out, &mut self.stmts, server)
                        .unwrap();
                    self.got.extend_from_slice(&out);
                } else {
                    self.got.extend_from_slice(f);
                }
            }
        }
        fn take_sent(&mut self) -> Vec<u8> {
            self.sent.split().to_vec()
        }
        fn take_got(&mut self) -> Vec<u8> {
            std::mem::take(&mut self.got)
        }
    }

    fn cat(frames: &[Vec<u8>]) -> Vec<u8> {
        frames.concat()
    }

    fn close_probe() -> Vec<u8> {
        let mut b = vec![b'S'];
        b.extend_from_slice(PROBE_NAME);
        b.push(0);
        msg(b'C', &b)
    }

    fn global(sql: &str) -> String {
        StatementDef::new(sql.as_bytes(), &[0, 0])
            .unwrap()
            .global_name
    }

    #[test]
    fn second_client_parse_is_answered_from_cache_in_place() {
        let mut server = ServerStatements::new();
        let mut a = Client::new();
        a.send(&mut server, &parse("a1", "SELECT 1"));
        a.send(&mut server, &sync());
        let g = global("SELECT 1");
        assert_eq!(a.take_sent(), cat(&[parse(&g, "SELECT 1"), sync()]));
        a.recv(&mut server, &[reply(b'1'), ready()]);
        assert_eq!(a.take_got(), cat(&[reply(b'1'), ready()]));
        assert!(a.plan.is_settled());

        // Client B, same server, same SQL under another name, in one pipeline.
        let mut b = Client::new();
        assert_eq!(
            b.send(&mut server, &parse("b1", "SELECT 1")),
            Rewrite::AnsweredLocally
        );
        b.send(&mut server, &bind("", "b1", &[]));
        b.send(&mut server, &execute());
        b.send(&mut server, &sync());
        assert_eq!(
            b.take_sent(),
            cat(&[close_probe(), bind("", &g, &[]), execute(), sync()])
        );
        assert!(!b.plan.is_empty());
        // The server answers the probe with CloseComplete; the client sees ParseComplete.
        b.recv(
            &mut server,
            &[reply(b'3'), reply(b'2'), row(), complete(), ready()],
        );
        assert_eq!(
            b.take_got(),
            cat(&[reply(b'1'), reply(b'2'), row(), complete(), ready()])
        );
        assert!(b.plan.is_settled());
        assert_eq!((server.len(), b.stmts.len()), (1, 1));
    }

    #[test]
    fn lazy_prepare_on_a_fresh_server_swallows_exactly_one_parse_complete() {
        let mut first = ServerStatements::new();
        let mut c = Client::new();
        c.send(&mut first, &parse("s", "SELECT 1"));
        c.send(&mut first, &sync());
        c.recv(&mut first, &[reply(b'1'), ready()]);
        c.take_sent();
        c.take_got();

        // Next transaction lands on another server connection.
        let mut fresh = ServerStatements::new();
        let g = global("SELECT 1");
        for _ in 0..2 {
            c.send(&mut fresh, &bind("", "s", &[]));
            c.send(&mut fresh, &execute());
        }
        c.send(&mut fresh, &sync());
        assert_eq!(
            c.take_sent(),
            cat(&[
                parse(&g, "SELECT 1"),
                bind("", &g, &[]),
                execute(),
                bind("", &g, &[]),
                execute(),
                sync()
            ])
        );
        assert!(fresh.contains(StatementDef::new(b"SELECT 1", &[0, 0]).unwrap().hash));
        let answer = [row(), complete()];
        c.recv(&mut fresh, &[reply(b'1'), reply(b'2')]);
        c.recv(&mut fresh, &answer);
        c.recv(&mut fresh, &[reply(b'2')]);
        c.recv(&mut fresh, &answer);
        c.recv(&mut fresh, &[ready()]);
        assert_eq!(
            c.take_got(),
            cat(&[
                reply(b'2'),
                row(),
                complete(),
                reply(b'2'),
                row(),
                complete(),
                ready()
            ])
        );
        assert!(c.plan.is_settled());
    }

    #[test]
    fn describe_statement_prepares_lazily_and_is_renamed() {
        let mut server = ServerStatements::new();
        let mut c = Client::new();
        c.send(&mut server, &parse("s", "SELECT 1"));
        c.send(&mut server, &sync());
        c.recv(&mut server, &[reply(b'1'), ready()]);
        c.take_sent();
        c.take_got();

        let mut other = ServerStatements::new();
        c.send(&mut other, &describe_s("s"));
        c.send(&mut other, &sync());
        let g = global("SELECT 1");
        assert_eq!(
            c.take_sent(),
            cat(&[parse(&g, "SELECT 1"), describe_s(&g), sync()])
        );
        let t = msg(b't', b"\0\0");
        let rd = msg(b'T', b"\0\0");
        c.recv(&mut other, &[reply(b'1'), t.clone(), rd.clone(), ready()]);
        assert_eq!(c.take_got(), cat(&[t, rd, ready()]));
        assert!(c.plan.is_settled());

        // Already there: just renamed, no tracking at all.
        c.send(&mut other, &describe_s("s"));
        assert!(c.plan.is_empty());
        assert_eq!(c.take_sent(), describe_s(&g));
    }

    #[test]
    fn close_is_answered_locally_and_the_statement_stays_on_the_server() {
        let mut server = ServerStatements::new();
        let mut c = Client::new();
        c.send(&mut server, &parse("s", "SELECT 1"));
        c.send(&mut server, &sync());
        c.recv(&mut server, &[reply(b'1'), ready()]);
        c.take_sent();
        c.take_got();

        let close = msg(b'C', b"Ss\0");
        assert_eq!(c.send(&mut server, &close), Rewrite::AnsweredLocally);
        c.send(&mut server, &sync());
        assert_eq!(c.take_sent(), cat(&[close_probe(), sync()]));
        assert!(c.stmts.is_empty());
        assert_eq!(server.len(), 1);
        c.recv(&mut server, &[reply(b'3'), ready()]);
        assert_eq!(c.take_got(), cat(&[reply(b'3'), ready()]));
        assert!(c.plan.is_settled());
        // Closing a portal is the server's business.
        let close_portal = msg(b'C', b"Pp\0");
        c.send(&mut server, &close_portal);
        assert_eq!(c.take_sent(), close_portal);
        assert!(c.plan.is_empty());
    }

    #[test]
    fn error_mid_pipeline_drops_pending_replies_until_sync() {
        let mut server = ServerStatements::new();
        let mut a = Client::new();
        for sql in ["SELECT 1", "SELECT 2"] {
            a.send(&mut server, &parse(sql, sql));
        }
        a.send(&mut server, &sync());
        a.recv(&mut server, &[reply(b'1'), reply(b'1'), ready()]);

        // Client c: Bind/Execute (fails), then Parse of a cached statement, Close, Bind, Sync.
        let mut c = Client::new();
        c.send(&mut server, &parse("keep", "SELECT 1"));
        c.send(&mut server, &sync());
        c.recv(&mut server, &[reply(b'3'), ready()]);
        c.take_got();
        c.send(&mut server, &bind("", "keep", &[]));
        c.send(&mut server, &execute());
        c.send(&mut server, &parse("s2", "SELECT 2"));
        c.send(&mut server, &msg(b'C', b"Skeep\0"));
        c.send(&mut server, &bind("", "s2", &[]));
        c.send(&mut server, &execute());
        c.send(&mut server, &sync());
        assert!(!c.plan.is_empty());
        // The server fails the Execute and skips everything else up to Sync.
        c.recv(&mut server, &[reply(b'2'), error("22012"), ready()]);
        assert_eq!(c.take_got(), cat(&[reply(b'2'), error("22012"), ready()]));
        assert!(c.plan.is_empty() && c.plan.is_settled());
        // PostgreSQL never ran the Parse or the Close: "s2" does not exist, "keep" still does.
        assert!(c.stmts.get(b"s2").is_none());
        assert!(c.stmts.get(b"keep").is_some());
        assert_eq!(server.len(), 2);
    }

    #[test]
    fn failed_parse_is_undone_on_client_and_server() {
        let mut server = ServerStatements::new();
        let mut c = Client::new();
        c.send(&mut server, &parse("s", "SELEC 1"));
        c.send(&mut server, &bind("", "s", &[]));
        c.send(&mut server, &sync());
        assert_eq!(server.len(), 1);
        c.recv(&mut server, &[error("42601"), ready()]);
        assert_eq!(c.take_got(), cat(&[error("42601"), ready()]));
        assert!(c.stmts.is_empty() && server.is_empty() && c.plan.is_settled());
        // So the client can define it again, and it is sent again.
        c.take_sent();
        assert_eq!(
            c.send(&mut server, &parse("s", "SELEC 1")),
            Rewrite::Forwarded
        );
    }

    #[test]
    fn error_before_the_sync_is_sent_skips_later_messages_too() {
        let mut server = ServerStatements::new();
        let mut a = Client::new();
        a.send(&mut server, &parse("x", "SELECT 1"));
        a.send(&mut server, &sync());
        a.recv(&mut server, &[reply(b'1'), ready()]);

        let mut c = Client::new();
        c.send(&mut server, &bind("", "nope", &[]));
        // The probe's 26000 comes back before the client has finished the batch.
        c.recv(&mut server, &[error("26000")]);
        let got = c.take_got();
        assert!(got.windows(4).any(|w| w == b"nope"), "client's own name");
        // Everything now is skipped by the server: nothing may be expected or kept.
        assert_eq!(
            c.send(&mut server, &parse("p", "SELECT 1")),
            Rewrite::AnsweredLocally
        );
        assert!(c.stmts.is_empty(), "undone at once");
        c.send(&mut server, &execute());
        c.send(&mut server, &msg(b'Q', b"SELECT 1\0"));
        assert!(c.plan.is_empty());
        c.send(&mut server, &sync());
        c.recv(&mut server, &[ready()]);
        assert_eq!(c.take_got(), ready());
        assert!(c.plan.is_settled());
    }

    #[test]
    fn pgbench_prepared_loop_stays_in_counting_mode() {
        let mut server = ServerStatements::new();
        let mut c = Client::new();
        c.send(
            &mut server,
            &parse("P0_1", "SELECT abalance FROM pgbench_accounts"),
        );
        c.send(&mut server, &sync());
        c.recv(&mut server, &[reply(b'1'), ready()]);
        assert!(c.plan.is_empty());
        c.stops = 0;
        let rounds = 1000;
        for i in 0..rounds {
            c.send(&mut server, &bind("", "P0_1", &[b"42"]));
            c.send(&mut server, &execute());
            c.send(&mut server, &sync());
            assert!(c.plan.is_empty(), "round {i}");
            c.recv(&mut server, &[reply(b'2'), row()]);
            assert!(c.plan.is_empty(), "round {i}");
            c.recv(&mut server, &[complete(), ready()]);
            assert!(c.plan.is_empty() && c.plan.is_settled(), "round {i}");
        }
        // The server→client pump only stopped at ReadyForQuery, as it does without the plan,
        // and no queue entry was made (the queue is empty after every single message).
        assert_eq!(c.stops, rounds);
    }

    #[test]
    fn tracking_starts_mid_batch_after_replies_were_already_forwarded() {
        let mut server = ServerStatements::new();
        let mut a = Client::new();
        a.send(&mut server, &parse("x", "SELECT 2"));
        a.send(&mut server, &sync());
        a.recv(&mut server, &[reply(b'1'), ready()]);

        let mut c = Client::new();
        c.send(&mut server, &parse("s", "SELECT 1"));
        c.send(&mut server, &sync());
        c.recv(&mut server, &[reply(b'1'), ready()]);
        c.take_got();
        // Bind/Execute/Describe, plain; part of their replies already passed (Flush, big rows).
        c.send(&mut server, &bind("", "s", &[]));
        c.send(&mut server, &execute());
        c.send(&mut server, &describe_s("s"));
        c.send(&mut server, &msg(b'H', b""));
        c.recv(&mut server, &[reply(b'2'), row(), row()]);
        assert!(c.plan.is_empty());
        // Now a cached Parse: its reply belongs after Execute's and Describe's.
        c.send(&mut server, &parse("y", "SELECT 2"));
        c.send(&mut server, &sync());
        let t = msg(b't', b"\0\0");
        c.recv(
            &mut server,
            &[
                row(),
                complete(),
                t.clone(),
                reply(b'n'),
                reply(b'3'),
                ready(),
            ],
        );
        assert_eq!(
            c.take_got(),
            cat(&[
                reply(b'2'),
                row(),
                row(),
                row(),
                complete(),
                t,
                reply(b'n'),
                reply(b'1'),
                ready()
            ])
        );
        assert!(c.plan.is_settled());
    }

    #[test]
    fn tracking_starts_behind_batches_still_in_flight() {
        let mut server = ServerStatements::new();
        let mut c = Client::new();
        c.send(&mut server, &parse("s", "SELECT 1"));
        c.send(&mut server, &sync());
        c.recv(&mut server, &[reply(b'1'), ready()]);
        c.take_got();
        // A batch and a simple query are sent; no reply has arrived yet (counting mode).
        c.send(&mut server, &bind("", "s", &[]));
        c.send(&mut server, &execute());
        c.send(&mut server, &sync());
        c.send(&mut server, &msg(b'Q', b"SELECT 1; SELECT 2\0"));
        assert!(c.plan.is_empty());
        // Then Close and a cached Parse: their replies come after two ReadyForQuery.
        c.send(&mut server, &msg(b'C', b"Ss\0"));
        c.send(&mut server, &parse("s", "SELECT 1"));
        c.send(&mut server, &sync());
        assert!(!c.plan.is_empty());
        let mut replies = vec![reply(b'2'), row(), complete(), ready()];
        replies.extend([
            reply(b'T'),
            row(),
            complete(),
            reply(b'T'),
            row(),
            complete(),
        ]);
        replies.extend([error("22012"), ready()]);
        c.recv(&mut server, &replies);
        c.recv(&mut server, &[reply(b'3'), reply(b'3'), ready()]);
        replies.extend([reply(b'3'), reply(b'1'), ready()]);
        assert_eq!(c.take_got(), cat(&replies));
        assert!(c.plan.is_settled());
        assert!(c.stmts.get(b"s").is_some());
    }

    #[test]
    fn probe_error_is_replaced_only_when_it_is_the_expected_26000() {
        let mut server = ServerStatements::new();
        let mut c = Client::new();
        c.send(&mut server, &bind("", "ghost", &[]));
        c.send(&mut server, &sync());
        // In an aborted transaction PostgreSQL reports 25P02 first, so does the server: pass it.
        c.recv(&mut server, &[error("25P02"), ready()]);
        assert_eq!(c.take_got(), cat(&[error("25P02"), ready()]));
        c.send(&mut server, &bind("", "ghost", &[]));
        c.send(&mut server, &sync());
        c.recv(&mut server, &[error("26000"), ready()]);
        let got = c.take_got();
        let body = &got[5..got.len() - 6];
        let e = ErrorView::new(body);
        assert_eq!(e.sqlstate(), Some("26000"));
        assert_eq!(
            e.message(),
            Some("prepared statement \"ghost\" does not exist")
        );
    }

    #[test]
    fn deallocate_all_clears_both_maps() {
        let mut server = ServerStatements::new();
        let mut c = Client::new();
        c.send(&mut server, &parse("s", "SELECT 1"));
        c.send(&mut server, &sync());
        c.recv(&mut server, &[reply(b'1'), ready()]);
        c.send(&mut server, &msg(b'Q', b"DEALLOCATE ALL\0"));
        let done = msg(b'C', b"DEALLOCATE ALL\0");
        // The caller opted into stopping at CommandComplete.
        let mut out = BytesMut::new();
        c.plan
            .on_server_message(b'C', &done, &mut out, &mut c.stmts, &mut server)
            .unwrap();
        assert_eq!(&out[..], &done[..]);
        assert!(c.stmts.is_empty() && server.is_empty());
        assert!(command_clears_statements(b"DISCARD ALL\0"));
        assert!(!command_clears_statements(b"DISCARD PLANS\0"));
    }

    #[test]
    fn random_traffic_never_panics() {
        let mut seed = 0x0bad_cafe_dead_beefu64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut server = ServerStatements::new();
        let mut c = Client::new();
        let names = ["a", "b", "c"];
        for _ in 0..50_000 {
            let name = names[next(3) as usize];
            if next(2) == 0 {
                let frame = match next(8) {
                    0 => parse(name, ["SELECT 1", "SELECT 2"][next(2) as usize]),
                    1 => bind("", name, &[]),
                    2 => describe_s(name),
                    3 => msg(b'C', format!("S{name}\0").as_bytes()),
                    4 => sync(),
                    5 => msg(b'Q', b"SELECT 1\0"),
                    6 => execute(),
                    _ => msg(b'H', b""),
                };
                c.send(&mut server, &frame);
            } else {
                let tag = b"123TnCIsZEtDNSAGHdc"[next(19) as usize];
                let frame = match tag {
                    b'E' => error(["26000", "22012"][next(2) as usize]),
                    b'Z' => ready(),
                    t => reply(t),
                };
                let mut out = BytesMut::new();
                let (p, s) = (&mut c.plan, &mut c.stmts);
                if p.wants(tag)
                    && p.on_server_message(tag, &frame, &mut out, s, &mut server)
                        .is_err()
                {
                    p.reset();
                }
            }
            c.take_sent();
        }
    }

    #[test]
    fn desynchronised_or_malformed_server_messages_are_errors() {
        let mut server = ServerStatements::new();
        let mut c = Client::new();
        c.send(&mut server, &parse("s", "SELECT 1"));
        let mut out = BytesMut::new();
        let (p, s) = (&mut c.plan, &mut c.stmts);
        assert!(matches!(
            p.on_server_message(b'2', &reply(b'2'), &mut out, s, &mut server),
            Err(PlanError::Unexpected { tag: '2', .. })
        ));
        assert!(matches!(
            p.on_server_message(b'Z', &ready(), &mut out, s, &mut server),
            Err(PlanError::Unexpected { tag: 'Z', .. })
        ));
        for bad in [
            &b""[..],
            b"Z\0\0",
            b"Z\0\0\0\x05",
            b"Z\0\0\0\x07I!",
            b"1\xff\xff\xff\xff",
        ] {
            let tag = bad.first().copied().unwrap_or(b'Z');
            assert!(matches!(
                p.on_server_message(tag, bad, &mut out, s, &mut server),
                Err(PlanError::Malformed(_))
            ));
        }
        assert!(matches!(
            p.on_server_message(b'1', &ready(), &mut out, s, &mut server),
            Err(PlanError::Malformed('1'))
        ));
        assert!(out.is_empty());
        assert_eq!(PlanError::Malformed('x').sqlstate(), "08P01");
    }
}
