//! Client messages too large to hold whole, streamed to the server as they arrive, so a
//! session's client buffer stays near [`WHOLE_MESSAGE`] whatever the client sends (PostgreSQL
//! takes messages up to 1 GB).
//!
//! Messages pooling does not read (COPY data, Execute, Sync...) always pass in pieces. Of those
//! it reads, two are commonly huge: a simple query (a bulk `INSERT`, a script) passes in pieces
//! through the statement-effects lexer, and a Bind (a large parameter) has its head — portal
//! and statement names — rewritten as a whole Bind would be, then the rest passes as it is.
//! A Parse is still read whole: pgpivot keeps the statement to prepare it again on other
//! server connections, so it holds that text anyway (bounded by `max_message_bytes`).

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;

use pgpivot_protocol::frame::HEADER_LEN;
use pgpivot_protocol::sqlstate;

use super::forward::{ClientEnd, ClientSide};
use super::prepared::{self, Rewrite};
use super::shared::{PrepState, Shared};
use super::sql_stream::EffectScanner;
use super::staging::{bind_of_param_resetter, count_statement, pin_all};
use crate::topology::counters::NodeCounters;

/// Client messages pooling reads are held whole up to this size; a larger simple query or
/// Bind starts streaming once this much of it is buffered.
pub(super) const WHOLE_MESSAGE: usize = 64 * 1024;

/// What happens to the bytes of a message streaming through.
pub(super) enum Streaming {
    /// A simple query: its text goes through the effects lexer on the way (boxed: the lexer's
    /// state is a few hundred bytes, and every idle client carries the slot).
    Query(Box<QueryStream>),
    /// The rest of a Bind whose head was rewritten: passed as it is.
    Pass,
    /// The rest of a Bind pgpivot refused in PostgreSQL's place: the server must not see it.
    Drop,
}

/// A simple query passing in pieces.
pub(super) struct QueryStream {
    /// Header bytes (tag and length) not yet passed.
    header: usize,
    /// Text bytes (before the terminating NUL) not yet passed.
    text: usize,
    effects: EffectScanner,
}

impl QueryStream {
    fn new(len: usize) -> Self {
        QueryStream {
            header: HEADER_LEN,
            text: len.saturating_sub(HEADER_LEN + 1),
            effects: EffectScanner::new(),
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        let skip = self.header.min(bytes.len());
        self.header -= skip;
        bytes = &bytes[skip..];
        let text = self.text.min(bytes.len());
        self.effects.feed(&bytes[..text]);
        self.text -= text;
    }
}

/// Starts streaming the large Query or Bind at `pos` (`len` bytes in all). Returns how many of
/// its bytes were handled here (staged or dropped) — the caller moves past them and scans on —
/// or None when it must be held whole after all (a Bind whose names do not fit the buffer).
pub(super) fn start(
    side: &mut ClientSide,
    shared: &Shared,
    prep: &mut MutexGuard<'_, PrepState>,
    pos: usize,
    len: usize,
    counters: Option<&NodeCounters>,
) -> Result<Option<usize>, ClientEnd> {
    if side.buf.get(pos) == Some(&b'Q') {
        // The bookkeeping of a whole query; never answered locally (pgpivot's own commands
        // are short).
        shared.syncs_since_execute.store(0, Ordering::Relaxed);
        shared.tally.query();
        shared.request_sent();
        shared.unsynced.store(false, Ordering::Relaxed);
        count_statement(side.buf.get(pos + HEADER_LEN..), counters);
        let PrepState { plan, client, .. } = &mut **prep;
        prepared::query_streamed(client, plan);
        side.stream = Some(Streaming::Query(Box::new(QueryStream::new(len))));
        side.scan.stream(len);
        return Ok(Some(0));
    }
    start_bind(side, shared, prep, pos, len)
}

/// A large Bind: its head (portal and statement names) goes through the prepared-statement
/// rewriter as a Bind of its own would, then the length field of what was staged is made
/// the real one and the rest of the message follows untouched.
fn start_bind(
    side: &mut ClientSide,
    shared: &Shared,
    prep: &mut MutexGuard<'_, PrepState>,
    pos: usize,
    len: usize,
) -> Result<Option<usize>, ClientEnd> {
    let body = &side.buf[pos + HEADER_LEN..];
    let Some(names) = two_cstrs(body) else {
        return Ok(None);
    };
    let head = HEADER_LEN + names;
    let mut frame = Vec::with_capacity(head);
    frame.push(b'B');
    frame.extend_from_slice(&((names + 4) as i32).to_be_bytes());
    frame.extend_from_slice(&body[..names]);
    shared.unsynced.store(true, Ordering::Relaxed);
    bind_of_param_resetter(prep, &frame[HEADER_LEN..], shared);
    let staged = side.out.len();
    let PrepState {
        plan,
        client,
        server,
        ..
    } = &mut **prep;
    let rewrite =
        prepared::rewrite_client_message(b'B', &frame, client, server, plan, &mut side.out);
    let stream = match rewrite {
        Err(e) => {
            shared.request_stop(e.sqlstate(), e.to_string());
            return Err(ClientEnd::Handover);
        }
        Ok(Rewrite::Rejected(_)) => Streaming::Drop,
        Ok(_) => {
            if !grow_last_frame(&mut side.out[staged..], len - head) {
                shared.request_stop(
                    sqlstate::PROGRAM_LIMIT_EXCEEDED,
                    format!("invalid message length {}", len - 1),
                );
                return Err(ClientEnd::Handover);
            }
            Streaming::Pass
        }
    };
    side.stream = Some(stream);
    side.scan.stream(len - head);
    Ok(Some(head))
}

/// The length of `portal\0statement\0` at the start of a Bind body, if both are there.
fn two_cstrs(body: &[u8]) -> Option<usize> {
    let first = body.iter().position(|&b| b == 0)?;
    let second = body[first + 1..].iter().position(|&b| b == 0)?;
    Some(first + 1 + second + 1)
}

/// Adds `more` to the length field of the last frame in `staged` (well-formed frames written
/// by pgpivot). False if the length would not fit the protocol's `i32`.
fn grow_last_frame(staged: &mut [u8], more: usize) -> bool {
    let mut at = 0;
    loop {
        let Some(field) = staged.get(at + 1..at + HEADER_LEN) else {
            return false;
        };
        let len = i32::from_be_bytes([field[0], field[1], field[2], field[3]]) as usize;
        if at + 1 + len < staged.len() {
            at += 1 + len;
            continue;
        }
        let Some(grown) = i32::try_from(len + more).ok() else {
            return false;
        };
        staged[at + 1..at + HEADER_LEN].copy_from_slice(&grown.to_be_bytes());
        return true;
    }
}

/// `part` bytes of the streaming message at `pos` pass (`left` were still to come). Returns
/// how many of them must not be staged (a dropped Bind's).
pub(super) fn passing(
    side: &mut ClientSide,
    shared: &Shared,
    pos: usize,
    part: usize,
    left: usize,
) -> usize {
    let dropped = match side.stream.as_mut() {
        Some(Streaming::Query(q)) => {
            q.feed(&side.buf[pos..pos + part]);
            0
        }
        Some(Streaming::Drop) => part,
        Some(Streaming::Pass) | None => 0,
    };
    if part == left {
        if let Some(Streaming::Query(q)) = side.stream.take() {
            if pin_all(q.effects.finish(), shared) {
                shared.note_params_reset();
            }
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_staged_frame_gets_the_real_length() {
        // A Parse the server lacked, then the renamed Bind head.
        let mut staged = vec![
            b'P', 0, 0, 0, 6, b'a', 0, b'B', 0, 0, 0, 8, b'x', 0, b'y', 0,
        ];
        assert!(grow_last_frame(&mut staged, 1000));
        assert_eq!(&staged[..7], &[b'P', 0, 0, 0, 6, b'a', 0]);
        assert_eq!(&staged[8..12], &1008i32.to_be_bytes());
        let mut one = vec![b'B', 0, 0, 0, 6, 0, 0];
        assert!(!grow_last_frame(&mut one, i32::MAX as usize));
    }

    #[test]
    fn bind_names_are_found_or_not() {
        assert_eq!(two_cstrs(b"\0s1\0rest"), Some(4));
        assert_eq!(two_cstrs(b"p\0s"), None);
    }
}
