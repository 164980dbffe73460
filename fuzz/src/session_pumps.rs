//! `session_pumps`: a session's two forwarding pumps (scanning, request and transaction
//! bookkeeping, pinning, prepared-statement renaming and the reply plan, staging) driven
//! without sockets through `session::bench_hooks::Pumps`, fed arbitrary client and server
//! bytes in arbitrary reads.
//!
//! Input: a sequence of reads, each `[op][bytes]`: bit 7 of `op` says which side sent them
//! (set: the server), the low 7 bits how many bytes follow.
//!
//! Invariants: neither pump panics, whatever either peer sends; what each pump stages for the
//! other side is always a stream of well-formed messages (whole, or the streamed prefix of the
//! last one), including everything pgpivot rewrote or answered in place; a pump that refuses its
//! input ends the session (nothing more is fed).

use bytes::BytesMut;
use pgpivot::session::bench_hooks::Pumps;
use pgpivot_protocol::frame::read_frame;

use super::common::Input;

/// Message caps for both sides: small, so a declared length cannot make a run allocate much.
const CAP: usize = 1 << 16;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut pumps = Pumps::with_limits(CAP, CAP);
    let mut to_server = Stream::default();
    let mut to_client = Stream::default();
    while !input.is_empty() {
        let op = input.byte();
        let bytes = input.take(usize::from(op & 0x7f));
        let staged = if op & 0x80 == 0 {
            pumps.try_client_read(bytes).map(|out| to_server.push(out))
        } else {
            pumps.try_server_read(bytes).map(|out| to_client.push(out))
        };
        if staged.is_err() {
            return;
        }
    }
}

/// What one pump wrote so far, checked message by message as it arrives.
#[derive(Default)]
struct Stream {
    pending: BytesMut,
}

impl Stream {
    fn push(&mut self, out: &[u8]) {
        self.pending.extend_from_slice(out);
        loop {
            match read_frame(&mut self.pending, CAP * 4) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => panic!("a pump staged a malformed message: {e}"),
            }
        }
    }
}
