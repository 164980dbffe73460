//! `frame_scanner`: the streaming `Scanner` (the forwarding hot path) and `read_frame` on one
//! arbitrary byte stream, fed whole and split at arbitrary points.
//!
//! Input: `[cap selector][n][n tags the caller wants whole][k][k chunk sizes][stream...]`.
//!
//! Invariants, against a plain reference walk of the stream: the scanner reports exactly the
//! same message boundaries (where each wanted message starts, its tag and length) however the
//! stream is split; it passes on exactly the bytes before the first undecidable point and never
//! past a declared length; it asks the caller about each declined message exactly once (staging
//! counts requests in that callback); lengths under 4 and frames over the cap are refused at the
//! same offset in every split; `read_frame` yields every complete message, byte for byte.

use bytes::BytesMut;
use pgpivot_protocol::frame::{header, read_frame, FrameError, Scan, Scanner, HEADER_LEN};

use super::common::Input;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let cap = match input.byte() {
        b @ 0..=63 => HEADER_LEN + usize::from(b),
        b @ 64..=191 => HEADER_LEN + 64 * usize::from(b),
        _ => 1 << 20,
    };
    let n = usize::from(input.byte() % 4);
    let wanted = input.take(n).to_vec();
    let k = usize::from(input.byte() % 8);
    let sizes: Vec<usize> = input.take(k).iter().map(|&b| usize::from(b) + 1).collect();
    let stream = input.rest();

    let (expected, all) = reference(stream, cap, &wanted);
    let whole = scan(stream, &[], cap, &wanted);
    assert_eq!(whole, expected, "scanner, whole stream");
    let split = scan(stream, &sizes, cap, &wanted);
    assert_eq!(split, expected, "scanner, split at {sizes:?}");
    let byte_by_byte = scan(stream, &[1], cap, &wanted);
    assert_eq!(byte_by_byte, expected, "scanner, byte by byte");

    let frames = frames(stream, &sizes, cap);
    assert_eq!(frames.0, all, "read_frame boundaries");
    assert_eq!(frames.1, expected.error, "read_frame error");
}

/// What feeding a stream through the scanner (or the reference walk) comes to.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// (offset, tag, frame length) of each message the caller saw whole.
    whole: Vec<(usize, u8, usize)>,
    /// Bytes passed on (whole messages and a streamed prefix of the last one).
    forwarded: usize,
    /// How many times the caller was asked about a message it declined.
    declined: usize,
    error: Option<(usize, FrameError)>,
    at_boundary: bool,
}

impl Outcome {
    /// Nothing seen yet: at a message boundary.
    fn start() -> Self {
        Outcome {
            whole: Vec::new(),
            forwarded: 0,
            declined: 0,
            error: None,
            at_boundary: true,
        }
    }
}

/// The plain walk: the outcome the scanner must match, and every complete message.
fn reference(stream: &[u8], cap: usize, wanted: &[u8]) -> (Outcome, Vec<(usize, u8, usize)>) {
    let mut all = Vec::new();
    let mut out = Outcome::start();
    let mut pos = 0;
    loop {
        let rest = &stream[pos..];
        if rest.len() < HEADER_LEN {
            out.forwarded = pos;
            return (out, all);
        }
        let tag = rest[0];
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        let error = if len < 4 {
            Some(FrameError::InvalidLength {
                tag: tag as char,
                len,
            })
        } else if len as usize + 1 > cap {
            Some(FrameError::TooLarge {
                tag: tag as char,
                len: len as usize + 1,
                max: cap,
            })
        } else {
            None
        };
        if let Some(e) = error {
            out.forwarded = pos;
            out.error = Some((pos, e));
            return (out, all);
        }
        let total = len as usize + 1;
        let wants = wanted.contains(&tag);
        if !wants {
            out.declined += 1;
        }
        if rest.len() < total {
            // An unwanted message streams through in pieces; a wanted one waits whole.
            out.forwarded = if wants { pos } else { stream.len() };
            out.at_boundary = wants;
            return (out, all);
        }
        if wants {
            out.whole.push((pos, tag, total));
        }
        all.push((pos, tag, total));
        pos += total;
    }
}

/// Feeds `stream` in pieces of `sizes` (cycled; empty: all at once) as the pumps do.
fn scan(stream: &[u8], sizes: &[usize], cap: usize, wanted: &[u8]) -> Outcome {
    let mut sc = Scanner::new(cap);
    let mut out = Outcome::start();
    let mut buf = BytesMut::new();
    for piece in pieces(stream, sizes) {
        buf.extend_from_slice(piece);
        let mut pos = 0;
        loop {
            let avail = buf.len() - pos;
            let r = sc.scan(&buf[pos..], |t| {
                let wants = wanted.contains(&t);
                out.declined += usize::from(!wants);
                wants
            });
            match r {
                Ok(Scan::Pass(n)) => {
                    assert!(n > 0 && n <= avail, "pass {n} of {avail}");
                    pos += n;
                }
                Ok(Scan::Message { tag, len }) => {
                    assert!(wanted.contains(&tag));
                    assert!(len <= avail && len <= cap, "message {len} of {avail}");
                    assert_eq!(header(&buf[pos..], cap), Ok(Some((tag, len))));
                    out.whole.push((out.forwarded + pos, tag, len));
                    sc.consume(len);
                    pos += len;
                }
                Ok(Scan::NeedMore { wanted: more }) => {
                    assert!(more > avail, "needs {more} with {avail} there");
                    assert!(more <= cap.max(HEADER_LEN));
                    break;
                }
                Err(e) => {
                    out.forwarded += pos;
                    out.error = Some((out.forwarded, e));
                    out.at_boundary = sc.at_boundary();
                    return out;
                }
            }
        }
        out.forwarded += pos;
        let _ = buf.split_to(pos);
    }
    out.at_boundary = sc.at_boundary();
    out
}

/// `read_frame` over the same pieces: every complete message, and the error if any.
#[allow(clippy::type_complexity)]
fn frames(
    stream: &[u8],
    sizes: &[usize],
    cap: usize,
) -> (Vec<(usize, u8, usize)>, Option<(usize, FrameError)>) {
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    let mut offset = 0;
    for piece in pieces(stream, sizes) {
        buf.extend_from_slice(piece);
        loop {
            match read_frame(&mut buf, cap) {
                Ok(Some(f)) => {
                    let len = f.as_bytes().len();
                    assert_eq!(f.as_bytes(), &stream[offset..offset + len]);
                    assert_eq!(f.body().len(), len - HEADER_LEN);
                    assert_eq!(f.tag(), stream[offset]);
                    seen.push((offset, f.tag(), len));
                    offset += len;
                }
                Ok(None) => break,
                Err(e) => return (seen, Some((offset, e))),
            }
        }
    }
    assert_eq!(
        &buf[..],
        &stream[offset..],
        "what is left is the unfinished tail"
    );
    (seen, None)
}

fn pieces<'a>(stream: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = stream;
    let mut i = 0;
    let mut first = true;
    std::iter::from_fn(move || {
        if rest.is_empty() && !std::mem::take(&mut first) {
            return None;
        }
        first = false;
        let n = match sizes {
            [] => rest.len(),
            _ => sizes[i % sizes.len()],
        };
        i += 1;
        let (head, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        Some(head)
    })
}
