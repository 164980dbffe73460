//! Cancel-safe framing of tagged protocol messages.
//!
//! Two tools over the same rule — "read the 5-byte header, validate the length, only then use it":
//!
//! * [`Scanner`] walks a byte stream for the forwarding hot path. It never copies and never
//!   allocates: it tells the caller how many leading bytes can be passed on as they are, and stops
//!   only at the few messages routing must read (which are small), so a 100 MB DataRow streams
//!   through a 64 kB buffer.
//! * [`read_frame`] splits off one whole message, for handshakes and control paths where a typed
//!   look at every message is needed.
//!
//! Both keep all state in the caller's buffer plus a counter, so a read future can be dropped at
//! any `.await` without losing bytes (the "cancel-safe" property `select!` loops depend on).

use bytes::{Buf, Bytes, BytesMut};

/// Tag byte + 4-byte length.
pub const HEADER_LEN: usize = 5;

/// Framing failures. Either one means the peer is not speaking the protocol: the connection is
/// answered with `08P01` (protocol violation) and closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("invalid message length {len} for message type {tag:?}")]
    InvalidLength { tag: char, len: i32 },
    #[error("message of type {tag:?} is {len} bytes, over the limit of {max}")]
    TooLarge { tag: char, len: usize, max: usize },
}

impl FrameError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            FrameError::InvalidLength { .. } => crate::sqlstate::PROTOCOL_VIOLATION,
            FrameError::TooLarge { .. } => crate::sqlstate::PROGRAM_LIMIT_EXCEEDED,
        }
    }
}

/// Parses and validates a header. `Ok(None)`: fewer than 5 bytes buffered.
/// The returned length includes the tag byte (the whole frame's size).
#[inline]
pub fn header(buf: &[u8], max: usize) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::InvalidLength {
            tag: tag as char,
            len,
        });
    }
    let total = len as usize + 1;
    if total > max {
        return Err(FrameError::TooLarge {
            tag: tag as char,
            len: total,
            max,
        });
    }
    Ok(Some((tag, total)))
}

/// One whole message: the raw frame, tag and length included, so it can be forwarded as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
}

impl Frame {
    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }
    /// The message body after the 5-byte header.
    pub fn body(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
}

/// Splits one complete message off the front of `buf`, or returns `Ok(None)` (consuming nothing)
/// until it is all there. `max` caps the frame size so a hostile length cannot make us buffer
/// without bound.
pub fn read_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
    match header(buf, max)? {
        Some((_, total)) if buf.len() >= total => Ok(Some(Frame {
            bytes: buf.split_to(total).freeze(),
        })),
        Some((_, total)) => {
            buf.reserve(total - buf.len());
            Ok(None)
        }
        None => Ok(None),
    }
}

/// What the scanner found at the front of the unscanned bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// This many bytes (whole messages, or a prefix/continuation of an uninteresting one) can be
    /// passed on untouched.
    Pass(usize),
    /// A complete message the caller asked to see starts here and is `len` bytes long (frame
    /// size). The caller looks at it and then calls [`Scanner::consume`] (forward it) or takes
    /// it out of the stream itself and calls `consume` all the same.
    Message { tag: u8, len: usize },
    /// Nothing more can be decided until more bytes arrive. `wanted` is how many bytes in total
    /// (from the scan position) the next decision needs, so the caller can reserve space.
    NeedMore { wanted: usize },
}

/// Streaming message-boundary tracker for the forwarding hot path.
///
/// State is one counter: how many bytes of an uninteresting message remain to be passed.
/// Call [`Scanner::scan`] on the unscanned part of the buffer; advance your position by what
/// it reports.
#[derive(Debug, Clone)]
pub struct Scanner {
    remaining: usize,
    max: usize,
}

impl Scanner {
    /// `max` is the largest frame accepted from this peer.
    pub fn new(max: usize) -> Self {
        Scanner { remaining: 0, max }
    }

    /// True when the stream is at a message boundary (nothing half-passed).
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Decides on the front of `buf`. `interesting(tag)` selects the messages the caller must
    /// see whole; everything else is passed, possibly in pieces. It is called for each header
    /// examined: exactly once for a message it declines (so it may count them), possibly again
    /// for one it wants whose body is still incomplete.
    #[inline]
    pub fn scan(
        &mut self,
        buf: &[u8],
        mut interesting: impl FnMut(u8) -> bool,
    ) -> Result<Scan, FrameError> {
        let mut pos = 0;
        if self.remaining > 0 {
            let n = self.remaining.min(buf.len());
            self.remaining -= n;
            pos = n;
            if self.remaining > 0 || pos == buf.len() {
                return Ok(if pos > 0 {
                    Scan::Pass(pos)
                } else {
                    Scan::NeedMore { wanted: 1 }
                });
            }
        }
        loop {
            let rest = &buf[pos..];
            let head = match header(rest, self.max) {
                Ok(head) => head,
                // What precedes a bad header is passed first and the error comes on the next
                // call, so it is found at the same offset however the stream was split.
                Err(_) if pos > 0 => return Ok(Scan::Pass(pos)),
                Err(e) => return Err(e),
            };
            let Some((tag, len)) = head else {
                return Ok(if pos > 0 {
                    Scan::Pass(pos)
                } else {
                    Scan::NeedMore { wanted: HEADER_LEN }
                });
            };
            if interesting(tag) {
                if pos > 0 {
                    return Ok(Scan::Pass(pos));
                }
                if rest.len() >= len {
                    return Ok(Scan::Message { tag, len });
                }
                return Ok(Scan::NeedMore { wanted: len });
            }
            if rest.len() >= len {
                pos += len;
                continue;
            }
            self.remaining = len - rest.len();
            return Ok(Scan::Pass(buf.len()));
        }
    }

    /// Acknowledges a [`Scan::Message`] of `len` bytes (forwarded or taken out by the caller).
    #[inline]
    pub fn consume(&mut self, _len: usize) {
        debug_assert_eq!(self.remaining, 0);
    }

    /// Passes the message at the front, `len` bytes in all (a wanted one the last scan reported
    /// as [`Scan::NeedMore`]), in pieces from now on: the next scans report its bytes as
    /// [`Scan::Pass`]. For messages too large to hold whole, which the caller inspects as they
    /// pass.
    #[inline]
    pub fn stream(&mut self, len: usize) {
        debug_assert_eq!(self.remaining, 0);
        self.remaining = len;
    }

    /// Bytes of the message being passed in pieces that are still to come (0 at a boundary).
    #[inline]
    pub fn remaining(&self) -> usize {
        self.remaining
    }
}

/// Drops everything up to and including the first `n` bytes; a small helper so callers that
/// track a position do not reach for `split_to` (which would allocate a shared handle).
#[inline]
pub fn discard(buf: &mut BytesMut, n: usize) {
    buf.advance(n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.put_i32(body.len() as i32 + 4);
        v.extend_from_slice(body);
        v
    }

    /// Runs the scanner over `input` split into `chunk`-byte reads, forwarding as a proxy would;
    /// returns (forwarded bytes, tags seen whole).
    fn drive(input: &[u8], chunk: usize, want: fn(u8) -> bool) -> (Vec<u8>, Vec<u8>) {
        let mut sc = Scanner::new(1 << 30);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            let mut pos = 0;
            loop {
                match sc.scan(&buf[pos..], want).unwrap() {
                    Scan::Pass(n) => pos += n,
                    Scan::Message { tag, len } => {
                        seen.push(tag);
                        sc.consume(len);
                        pos += len;
                    }
                    Scan::NeedMore { .. } => break,
                }
            }
            out.extend_from_slice(&buf[..pos]);
            discard(&mut buf, pos);
        }
        assert!(buf.is_empty(), "bytes left unforwarded");
        (out, seen)
    }

    #[test]
    fn a_wanted_message_can_be_streamed_in_pieces() {
        let mut stream = msg(b'Q', &[b'x'; 100]);
        stream.extend(msg(b'Z', b"I"));
        let mut sc = Scanner::new(1 << 20);
        let want = |t: u8| t == b'Q' || t == b'Z';
        assert_eq!(
            sc.scan(&stream[..40], want),
            Ok(Scan::NeedMore { wanted: 105 })
        );
        sc.stream(105);
        assert!(!sc.at_boundary());
        assert_eq!(sc.scan(&stream[..40], want), Ok(Scan::Pass(40)));
        assert_eq!(sc.remaining(), 65);
        // The rest of it, then the next wanted message whole.
        assert_eq!(sc.scan(&stream[40..], want), Ok(Scan::Pass(65)));
        assert!(sc.at_boundary());
        assert_eq!(
            sc.scan(&stream[105..], want),
            Ok(Scan::Message { tag: b'Z', len: 6 })
        );
    }

    #[test]
    fn forwards_byte_exact_in_any_chunking() {
        let mut stream = Vec::new();
        stream.extend(msg(b'T', b"rowdesc"));
        stream.extend(msg(b'D', &vec![0xE9; 100_000]));
        stream.extend(msg(b'C', b"SELECT 1\0"));
        stream.extend(msg(b'Z', b"I"));
        stream.extend(msg(b'N', b""));
        stream.extend(msg(b'Z', b"T"));
        for chunk in [1, 2, 3, 5, 7, 64, 4096, 1 << 20] {
            let (out, seen) = drive(&stream, chunk, |t| t == b'Z');
            assert_eq!(out, stream, "chunk {chunk}");
            assert_eq!(seen, vec![b'Z', b'Z'], "chunk {chunk}");
        }
    }

    #[test]
    fn large_uninteresting_message_streams_without_buffering_it() {
        let big = msg(b'D', &vec![1u8; 1_000_000]);
        let mut sc = Scanner::new(usize::MAX);
        match sc.scan(&big[..1000], |_| false).unwrap() {
            Scan::Pass(n) => assert_eq!(n, 1000),
            other => panic!("{other:?}"),
        }
        assert!(!sc.at_boundary());
        match sc.scan(&big[1000..], |_| false).unwrap() {
            Scan::Pass(n) => assert_eq!(n, big.len() - 1000),
            other => panic!("{other:?}"),
        }
        assert!(sc.at_boundary());
    }

    #[test]
    fn rejects_bad_lengths_before_use() {
        let mut sc = Scanner::new(100);
        let bad = [b'Q', 0, 0, 0, 3];
        assert!(matches!(
            sc.scan(&bad, |_| true),
            Err(FrameError::InvalidLength { len: 3, .. })
        ));
        let neg = [b'Q', 0xff, 0xff, 0xff, 0xff];
        assert!(sc.scan(&neg, |_| true).is_err());
        let huge = [b'Q', 0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            sc.scan(&huge, |_| false),
            Err(FrameError::TooLarge { .. })
        ));
        let mut b = BytesMut::from(&huge[..]);
        assert!(read_frame(&mut b, 100).is_err());
    }

    /// Found by the `frame_scanner` fuzz target: a bad header after whole messages in the same
    /// read made the scanner drop the messages before it (already counted by the callback), so
    /// the error's offset depended on how the stream was split.
    #[test]
    fn bad_header_is_reported_after_what_precedes_it() {
        let mut stream = msg(b'S', b"");
        stream.extend_from_slice(&[b'Q', 0, 0, 0, 3]);
        let mut sc = Scanner::new(100);
        let mut asked = 0;
        let mut count = |_| {
            asked += 1;
            false
        };
        assert_eq!(sc.scan(&stream, &mut count), Ok(Scan::Pass(5)));
        assert!(matches!(
            sc.scan(&stream[5..], &mut count),
            Err(FrameError::InvalidLength { len: 3, .. })
        ));
        assert_eq!(asked, 1, "the Sync was declined once");

        // The same after the tail of a message passed in pieces.
        let mut sc = Scanner::new(100);
        let big = msg(b'D', &[7; 20]);
        assert_eq!(sc.scan(&big[..10], |_| false), Ok(Scan::Pass(10)));
        let mut rest = big[10..].to_vec();
        rest.extend_from_slice(&[b'Q', 0x7f, 0, 0, 0]);
        assert_eq!(sc.scan(&rest, |_| false), Ok(Scan::Pass(big.len() - 10)));
        assert!(matches!(
            sc.scan(&rest[big.len() - 10..], |_| false),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn read_frame_waits_for_whole_message() {
        let m = msg(b'R', &[0, 0, 0, 0]);
        let mut b = BytesMut::new();
        for (i, byte) in m.iter().enumerate() {
            b.put_u8(*byte);
            let r = read_frame(&mut b, 1024).unwrap();
            if i + 1 < m.len() {
                assert!(r.is_none());
            } else {
                let f = r.unwrap();
                assert_eq!(f.tag(), b'R');
                assert_eq!(f.body(), &[0, 0, 0, 0]);
            }
        }
        assert!(b.is_empty());
    }

    #[test]
    fn interesting_message_needs_whole_body() {
        let m = msg(b'E', b"SERROR\0\0");
        let mut sc = Scanner::new(1024);
        assert_eq!(
            sc.scan(&m[..6], |t| t == b'E').unwrap(),
            Scan::NeedMore { wanted: m.len() }
        );
        assert_eq!(
            sc.scan(&m, |t| t == b'E').unwrap(),
            Scan::Message {
                tag: b'E',
                len: m.len()
            }
        );
    }
}
