//! SQL that drops prepared statements: `DEALLOCATE name`, `DEALLOCATE ALL`, `DISCARD ALL`, sent
//! as a simple Query (alone or among other statements) or run through the extended protocol.
//! PostgreSQL applies them at once and for good (they are not undone by a ROLLBACK), so pgpivot
//! follows each to its CommandComplete and only then forgets the statement: a [`WatchSet`]
//! rides in the reply plan ahead of the message that runs the SQL.
//!
//! In transaction pooling the server knows the client's statements under pgpivot's names, so a
//! `DEALLOCATE name` of one of them would fail there. The statement is rewritten to drop a
//! throw-away placeholder instead (the shared statement stays for other clients, as with a
//! Close); its CommandComplete then says `DEALLOCATE` exactly as PostgreSQL's would, and error
//! positions after the rewritten part are shifted back to the client's text.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;

use super::special::Special;
use super::{put_frame, ClientStatements, Naming, PrepError, ResponsePlan, ServerStatements};
use crate::session::sql::Reset;

/// One drop to expect, in statement order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Watch {
    /// `DEALLOCATE ALL` / `DISCARD ALL`.
    All,
    /// `DEALLOCATE` of this name (the client's).
    Named(Vec<u8>),
    /// The CommandComplete of pgpivot's own `PREPARE` of a placeholder: not the client's.
    OwnPrepare,
}

/// Where pgpivot's rewrite of a query changed its length (in characters, as error positions
/// count them): positions past `after` move back by `delta`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shift {
    after: u64,
    delta: i64,
}

/// What one message's statements will drop, and how its text was rewritten.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

    /// A CommandComplete while watching. True: it answers pgpivot's own statement and does not
    /// reach the client.
    pub(super) fn on_complete(
        &mut self,
        body: &[u8],
        client: &mut ClientStatements,
        server: &mut ServerStatements,
    ) -> bool {
        match body {
            b"PREPARE\0" if self.items.front() == Some(&Watch::OwnPrepare) => {
                self.items.pop_front();
                true
            }
            b"DEALLOCATE\0" => {
                while let Some(w) = self.items.pop_front() {
                    if let Watch::Named(name) = w {
                        client.remove(&name);
                        if client.naming() == Naming::PassThrough {
                            server.remove_named(&name);
                        }
                        break;
                    }
                }
                false
            }
            // The maps are cleared by the caller for these.
            b"DEALLOCATE ALL\0" | b"DISCARD ALL\0" => {
                while let Some(w) = self.items.pop_front() {
                    if w == Watch::All {
                        break;
                    }
                }
                false
            }
            _ => false,
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
/// writes it (rewritten in transaction pooling where needed) to `out`, with its watch ahead of
/// it in the plan.
pub(super) fn query(
    frame: &[u8],
    resets: Vec<Reset>,
    client: &mut ClientStatements,
    plan: &mut ResponsePlan,
    out: &mut BytesMut,
) -> Result<(), PrepError> {
    let text = frame
        .get(5..frame.len().saturating_sub(1))
        .ok_or(PrepError::BadFrame)?;
    let mut watch = WatchSet::default();
    let mut rewritten: Option<Vec<u8>> = None;
    // Copied up to here, and the length difference so far (both in the client's text).
    let (mut copied, mut new_chars) = (0usize, 0u64);
    for reset in resets {
        match reset {
            Reset::All => watch.items.push_back(Watch::All),
            Reset::Statement { name, span } => {
                let ours = client.naming() == Naming::Global && client.get(&name).is_some();
                if ours && span.start >= copied && span.end <= text.len() {
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
                watch.items.push_back(Watch::Named(name));
            }
        }
    }
    client.forget_unnamed_watch();
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

/// A Parse whose text drops prepared statements: what its Binds must watch for. In
/// transaction pooling an unnamed Parse of `DEALLOCATE <client statement>` is rewritten to drop a
/// placeholder, which is prepared first (written to `out`); the rewritten Parse is returned, to
/// be handled in place of `frame`.
pub(super) fn parse(
    frame: &[u8],
    resets: Vec<Reset>,
    client: &mut ClientStatements,
    server: &mut ServerStatements,
    plan: &mut ResponsePlan,
    out: &mut BytesMut,
) -> (WatchSet, Option<BytesMut>) {
    let mut watch = WatchSet::default();
    let body = frame.get(5..).unwrap_or_default();
    let Some(name_end) = body.iter().position(|&b| b == 0) else {
        return (watch, None);
    };
    let unnamed = name_end == 0;
    let mut replaced = None;
    for reset in resets {
        match reset {
            Reset::All => watch.items.push_back(Watch::All),
            Reset::Statement { name, span } => {
                let ours = client.naming() == Naming::Global && client.get(&name).is_some();
                if ours && unnamed && replaced.is_none() {
                    replaced = Some(span);
                }
                watch.items.push_back(Watch::Named(name));
            }
        }
    }
    let Some(span) = replaced else {
        return (watch, None);
    };
    // The query text starts after the (empty) name's NUL.
    let (start, end) = (6 + span.start, 6 + span.end);
    let (Some(before), Some(after)) = (frame.get(5..start), frame.get(end..)) else {
        return (watch, None);
    };
    let ph = placeholder();
    let dealloc = format!("DEALLOCATE {ph}");
    let mut new = BytesMut::new();
    if put_frame(&mut new, b'P', &[before, dealloc.as_bytes(), after]).is_err() {
        return (watch, None);
    }
    // A statement that cannot fail to prepare (but in an aborted transaction, where the
    // client's Parse fails with the same error).
    if put_frame(out, b'P', &[ph.as_bytes(), b"\0SELECT\0", &[0, 0]]).is_err() {
        return (watch, None);
    }
    plan.push_special(Special::Prepare { key: None }, client, server);
    (watch, Some(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_with_position(p: &str) -> BytesMut {
        let mut out = BytesMut::new();
        let parts: [&[u8]; 10] = [
            b"S",
            b"ERROR\0",
            b"C",
            b"42703\0",
            b"M",
            b"boom\0",
            b"P",
            p.as_bytes(),
            b"\0",
            b"\0",
        ];
        put_frame(&mut out, b'E', &parts).unwrap();
        out
    }

    #[test]
    fn positions_after_a_rewrite_move_back() {
        let w = WatchSet {
            items: VecDeque::new(),
            shifts: vec![
                Shift {
                    after: 20,
                    delta: 30,
                },
                Shift {
                    after: 90,
                    delta: 25,
                },
            ],
        };
        assert_eq!(w.shift_position(&error_with_position("5")), None);
        assert_eq!(
            w.shift_position(&error_with_position("60")),
            Some(error_with_position("30"))
        );
        assert_eq!(
            w.shift_position(&error_with_position("100")),
            Some(error_with_position("45"))
        );
        // Not a number, or no position: left alone.
        assert_eq!(w.shift_position(&error_with_position("x")), None);
        assert_eq!(
            WatchSet::default().shift_position(&error_with_position("60")),
            None
        );
    }
}
