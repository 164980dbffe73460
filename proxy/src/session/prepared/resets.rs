//! SQL that drops prepared statements: `DEALLOCATE name`, `DEALLOCATE ALL`, `DISCARD ALL`, sent
//! as a simple Query (alone or among other statements) or run through the extended protocol
//! (at the Execute of a portal bound to such a statement).
//!
//! Like every other change to the statement maps, a drop is applied when the client's message
//! is sent — so messages pipelined after it are judged as PostgreSQL will judge them — and
//! undone if the server never runs it (an earlier statement of the query failed, the server was
//! skipping to Sync, the name did not exist). A [`WatchSet`] rides in the reply plan ahead of
//! the message: from its turn until the next ReadyForQuery each CommandComplete of a drop
//! confirms the next one, and what is left unconfirmed at ReadyForQuery is undone. (Drops are
//! not undone by a ROLLBACK: PostgreSQL's are not either.)
//!
//! Where the server does not know the client's statement under the client's name — always in
//! transaction pooling, and in session pooling after a failover until its first use — a
//! `DEALLOCATE name` is rewritten to drop a throw-away placeholder instead (in transaction
//! pooling the shared statement stays for other clients, as with a Close). Its CommandComplete
//! then says `DEALLOCATE` exactly as PostgreSQL's would, and error positions after the
//! rewritten part are shifted back to the client's text.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;

use super::special::Special;
use super::{
    put_frame, ClientStatements, Naming, PrepError, ResponsePlan, ServerStatements, StatementDef,
};
use crate::session::sql::Reset;

/// One drop, applied, with what undoing it takes.
#[derive(Debug)]
enum Watch {
    /// `DEALLOCATE ALL` / `DISCARD ALL`: everything both maps held.
    All {
        client: HashMap<Vec<u8>, Arc<StatementDef>>,
        server: ServerStatements,
    },
    /// `DEALLOCATE` of the client's `name`.
    Named {
        name: Vec<u8>,
        removed: Option<Arc<StatementDef>>,
        server_had: bool,
    },
    /// The CommandComplete of pgpivot's own `PREPARE` of a placeholder: not the client's.
    OwnPrepare,
}

impl Watch {
    fn undo(self, client: &mut ClientStatements, server: &mut ServerStatements) {
        match self {
            Watch::All {
                client: names,
                server: statements,
            } => {
                client.merge(names);
                server.merge(statements);
            }
            Watch::Named {
                name,
                removed,
                server_had,
            } => {
                if let Some(def) = removed {
                    client.restore(&name, &def);
                }
                if server_had {
                    server.insert_named(&name);
                }
            }
            Watch::OwnPrepare => {}
        }
    }
}

/// Where pgpivot's rewrite of a query changed its length (in characters, as error positions
/// count them): positions past `after` move back by `delta`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shift {
    after: u64,
    delta: i64,
}

/// What a CommandComplete seen while watching is.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Completed {
    /// The client's: forwarded.
    Client,
    /// The reply to pgpivot's own `PREPARE` of a placeholder: dropped.
    Own,
    /// The client's, a drop of everything that pgpivot did not see coming (in a function, say):
    /// forwarded, and both maps are cleared.
    UnforeseenDropAll,
}

/// The drops one message runs, applied, in statement order; and how its text was rewritten.
#[derive(Debug, Default)]
pub(super) struct WatchSet {
    items: VecDeque<Watch>,
    shifts: Vec<Shift>,
}

impl WatchSet {
    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Another marker's turn came before this one's ReadyForQuery (an extended batch).
    pub(super) fn append(&mut self, mut other: WatchSet) {
        self.items.append(&mut other.items);
        self.shifts.append(&mut other.shifts);
    }

    /// The server will not run what is left (newest undone first).
    pub(super) fn undo(mut self, client: &mut ClientStatements, server: &mut ServerStatements) {
        while let Some(w) = self.items.pop_back() {
            w.undo(client, server);
        }
    }

    /// A CommandComplete while watching: confirms the next drop of its kind.
    pub(super) fn on_complete(&mut self, body: &[u8]) -> Completed {
        let all = match body {
            b"PREPARE\0" if matches!(self.items.front(), Some(Watch::OwnPrepare)) => {
                self.items.pop_front();
                return Completed::Own;
            }
            b"DEALLOCATE\0" => false,
            body if super::command_clears_statements(body) => true,
            _ => return Completed::Client,
        };
        // Confirmed: the drop (and any the stream skipped past) stays.
        while let Some(w) = self.items.pop_front() {
            match w {
                Watch::All { .. } if all => return Completed::Client,
                Watch::Named { .. } if !all => return Completed::Client,
                _ => {}
            }
        }
        if all {
            Completed::UnforeseenDropAll
        } else {
            Completed::Client
        }
    }

    /// `frame` (an ErrorResponse) with its position field moved back to the client's text, if
    /// it points past a rewritten part.
    pub(super) fn shift_position(&self, frame: &[u8]) -> Option<BytesMut> {
        if self.shifts.is_empty() {
            return None;
        }
        let body = frame.get(5..)?;
        let mut fields: Vec<(u8, &[u8])> = Vec::new();
        let mut rest = body;
        while let Some((&code, after)) = rest.split_first() {
            if code == 0 {
                break;
            }
            let end = after.iter().position(|&b| b == 0)?;
            fields.push((code, &after[..end]));
            rest = &after[end + 1..];
        }
        let position = fields.iter().find(|(c, _)| *c == b'P')?.1;
        let p: u64 = std::str::from_utf8(position).ok()?.parse().ok()?;
        let delta: i64 = self
            .shifts
            .iter()
            .filter(|s| p > s.after)
            .map(|s| s.delta)
            .sum();
        if delta == 0 {
            return None;
        }
        let moved = (p as i64 - delta).max(1).to_string();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(fields.len() * 3 + 1);
        for (code, value) in &fields {
            parts.push(std::slice::from_ref(code));
            parts.push(if *code == b'P' {
                moved.as_bytes()
            } else {
                value
            });
            parts.push(b"\0");
        }
        parts.push(b"\0");
        let mut out = BytesMut::new();
        put_frame(&mut out, b'E', &parts).ok()?;
        Some(out)
    }
}

/// Applies one drop to the maps. Returns it with its undo, and whether the server lacks the
/// client's statement under the client's name (so a `DEALLOCATE` of it must be rewritten).
fn apply(
    reset: &Reset,
    client: &mut ClientStatements,
    server: &mut ServerStatements,
) -> (Watch, bool) {
    match reset {
        Reset::All => {
            let watch = Watch::All {
                client: client.take_all(),
                server: std::mem::take(server),
            };
            (watch, false)
        }
        Reset::Statement { name, .. } => {
            let removed = client.remove(name);
            let pass_through = client.naming() == Naming::PassThrough;
            let server_had = pass_through && server.remove_named(name);
            let rewrite = removed.is_some() && !server_had;
            let watch = Watch::Named {
                name: name.clone(),
                removed,
                server_had,
            };
            (watch, rewrite)
        }
    }
}

/// The drops of a statement's text (remembered at its Parse), applied as a portal is bound to
/// it: its Execute runs them.
pub(super) fn bind(
    resets: &[Reset],
    client: &mut ClientStatements,
    server: &mut ServerStatements,
    plan: &mut ResponsePlan,
) {
    if plan.is_skipping() {
        return; // the server ignores the Bind
    }
    let mut watch = WatchSet::default();
    for reset in resets {
        watch.items.push_back(apply(reset, client, server).0);
    }
    plan.push_watch(watch);
}

/// A name no client statement and no global statement has: `PREPARE`d and `DEALLOCATE`d right
/// away, so even a leftover (the query cancelled between the two) never collides.
fn placeholder() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("pgpivot_drop_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn chars(text: &[u8]) -> u64 {
    text.iter().filter(|&&b| b & 0xc0 != 0x80).count() as u64
}

/// A simple Query whose statements drop prepared statements (`resets`, from `sql::resets`):
/// applies them, writes the Query (rewritten where needed) to `out`, with its watch ahead of it
/// in the plan.
pub(super) fn query(
    frame: &[u8],
    resets: Vec<Reset>,
    client: &mut ClientStatements,
    server: &mut ServerStatements,
    plan: &mut ResponsePlan,
    out: &mut BytesMut,
) -> Result<(), PrepError> {
    let text = frame
        .get(5..frame.len().saturating_sub(1))
        .ok_or(PrepError::BadFrame)?;
    client.forget_unnamed_watch();
    if plan.is_skipping() {
        // The server ignores the Query.
        out.extend_from_slice(frame);
        plan.on_client_message(b'Q');
        return Ok(());
    }
    let mut watch = WatchSet::default();
    let mut rewritten: Option<Vec<u8>> = None;
    // Copied from the client's text so far, and the characters written for it.
    let (mut copied, mut new_chars) = (0usize, 0u64);
    for reset in resets {
        let (applied, rewrite) = apply(&reset, client, server);
        if let (true, Reset::Statement { span, .. }) = (rewrite, &reset) {
            if span.start >= copied && span.end <= text.len() {
                let ph = placeholder();
                let with = format!("PREPARE {ph} AS SELECT;DEALLOCATE {ph}");
                let t = rewritten.get_or_insert_with(Vec::new);
                t.extend_from_slice(&text[copied..span.start]);
                t.extend_from_slice(with.as_bytes());
                new_chars += chars(&text[copied..span.start]) + with.len() as u64;
                watch.shifts.push(Shift {
                    after: new_chars,
                    delta: with.len() as i64 - chars(&text[span.clone()]) as i64,
                });
                copied = span.end;
                watch.items.push_back(Watch::OwnPrepare);
            }
        }
        watch.items.push_back(applied);
    }
    if !watch.is_empty() {
        plan.push_watch(watch);
    }
    match rewritten {
        Some(mut t) => {
            t.extend_from_slice(&text[copied..]);
            put_frame(out, b'Q', &[&t, b"\0"]).map_err(|_| PrepError::BadFrame)?;
        }
        None => out.extend_from_slice(frame),
    }
    plan.on_client_message(b'Q');
    Ok(())
}

/// A Parse whose text drops prepared statements. Its drops are for its Binds to apply (the
/// caller remembers them). An unnamed Parse of `DEALLOCATE <client statement>` that the server
/// does not know by that name is rewritten to drop a placeholder, prepared first (written to
/// `out`); the rewritten Parse is returned, to be handled in place of `frame`.
pub(super) fn parse(
    frame: &[u8],
    resets: &[Reset],
    client: &mut ClientStatements,
    server: &mut ServerStatements,
    plan: &mut ResponsePlan,
    out: &mut BytesMut,
) -> Option<BytesMut> {
    if frame.get(5) != Some(&0) {
        return None; // named: executed who knows where (transaction pooling) or when
    }
    let span = resets.iter().find_map(|r| match r {
        Reset::Statement { name, span } => {
            let known = client.get(name).is_some();
            let lacks = client.naming() == Naming::Global || !server.has_named(name);
            (known && lacks).then_some(span)
        }
        Reset::All => None,
    })?;
    // The query text starts after the empty name's NUL.
    let (start, end) = (6 + span.start, 6 + span.end);
    let (before, after) = (frame.get(5..start)?, frame.get(end..)?);
    let ph = placeholder();
    let dealloc = format!("DEALLOCATE {ph}");
    let mut new = BytesMut::new();
    put_frame(&mut new, b'P', &[before, dealloc.as_bytes(), after]).ok()?;
    // A statement that cannot fail to prepare (but in an aborted transaction, where the
    // client's Parse fails with the same error).
    put_frame(out, b'P', &[ph.as_bytes(), b"\0SELECT\0", &[0, 0]]).ok()?;
    plan.push_special(Special::Prepare { key: None }, client, server);
    Some(new)
}

#[cfg(test)]
#[path = "resets_tests.rs"]
pub(super) mod tests;
