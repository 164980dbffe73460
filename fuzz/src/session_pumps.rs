//! `session_pumps`: a session's two forwarding pumps (scanning, request and transaction
//! bookkeeping, pinning, prepared-statement renaming and the reply plan, staging, large messages
//! streamed through) driven without sockets through `session::bench_hooks::Pumps`, fed arbitrary
//! client and server bytes in arbitrary reads, with transaction pooling's release point tried
//! between reads.
//!
//! Input: a sequence of operations, each starting with an `op` byte. Bit 7 says which side
//! sent the bytes (set: the server). Bit 6 clear: the low 6 bits say how many input bytes
//! follow, fed as one read. Bit 6 set and low bits 0: try to release the server connection, as
//! the server pump would at a transaction boundary. Bit 6 set otherwise: a large message is
//! made up — the next bytes give its tag, its size (1 + b × 1,499 bytes, up to ~380 kB, across
//! every buffer and the 64 kB whole-message limit) and the size of the reads it arrives in
//! (1 + b × 509), then up to 8 bytes of its start (portal and statement names, or a query's
//! first words); the rest is a filler byte and a final NUL. The release point is tried after
//! each of its reads. A first byte of 0xC0 (a release, were it later) runs the session in
//! session pooling's statement naming (the client's names pass through) instead of transaction
//! pooling's.
//!
//! Invariants: neither pump panics, whatever either peer sends; what each pump stages for the
//! other side is always a stream of well-formed messages (whole, or the streamed prefix of the
//! last one), including everything pgpivot rewrote or answered in place; the server connection
//! is never released while a client message is partly read or partly passed on; a pump that
//! refuses its input ends the session (nothing more is fed).

use bytes::BytesMut;
use pgpivot::session::bench_hooks::Pumps;
use pgpivot_protocol::frame::read_frame;

use super::common::Input;

/// The client's message cap: above the 64 kB whole-message limit, so large queries and Binds
/// stream; small enough that a declared length cannot make a run allocate much.
const CLIENT_CAP: usize = 1 << 20;
/// The server's message cap.
const SERVER_CAP: usize = 1 << 16;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut pumps = Pumps::with_limits(CLIENT_CAP, SERVER_CAP);
    let mut to_server = Stream::default();
    let mut to_client = Stream::default();
    if data.first() == Some(&0xc0) {
        // Session pooling's naming: the client's statement names reach the server.
        pumps.pass_through_names();
        input.byte();
    }
    while !input.is_empty() {
        let op = input.byte();
        let server = op & 0x80 != 0;
        let fed = if op & 0x40 == 0 {
            let bytes = input.take(usize::from(op & 0x3f));
            feed(&mut pumps, server, bytes, &mut to_server, &mut to_client)
        } else if op & 0x3f == 0 {
            try_release(&mut pumps);
            Ok(())
        } else {
            let message = made_up(&mut input);
            let read = 1 + usize::from(input.byte()) * 509;
            // The release point is tried after every read: never while the message passes.
            message.chunks(read).try_for_each(|bytes| {
                feed(&mut pumps, server, bytes, &mut to_server, &mut to_client)?;
                try_release(&mut pumps);
                Ok(())
            })
        };
        if fed.is_err() {
            return;
        }
    }
}

fn try_release(pumps: &mut Pumps) {
    let mid = pumps.client_mid_message();
    if pumps.release_if_idle() {
        assert!(
            !mid,
            "released the server connection in the middle of a client message"
        );
    }
}

fn feed(
    pumps: &mut Pumps,
    server: bool,
    bytes: &[u8],
    to_server: &mut Stream,
    to_client: &mut Stream,
) -> Result<(), String> {
    if server {
        pumps.try_server_read(bytes).map(|out| to_client.push(out))
    } else {
        pumps.try_client_read(bytes).map(|out| to_server.push(out))
    }
}

/// A large message: tag, size, then up to 8 bytes of its start from the input, a filler, NUL.
fn made_up(input: &mut Input<'_>) -> Vec<u8> {
    let tag = input.byte();
    let size = 1 + usize::from(input.byte()) * 1499;
    let start = input.take(8);
    let mut m = Vec::with_capacity(size + 5);
    m.push(tag);
    m.extend_from_slice(&((size + 4) as i32).to_be_bytes());
    m.extend_from_slice(&start[..start.len().min(size)]);
    let fill = start.last().copied().unwrap_or(b'x');
    m.resize(size + 4, fill);
    m.push(0);
    m
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
            match read_frame(&mut self.pending, CLIENT_CAP * 4) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => panic!("a pump staged a malformed message: {e}"),
            }
        }
    }
}
