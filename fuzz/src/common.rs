//! Small helpers the bodies share: reading a fuzz input piece by piece, and checking that a byte
//! stream is made of well-formed tagged protocol messages.

use pgpivot_protocol::frame::{header, HEADER_LEN};

/// A cursor over the fuzz input; every read succeeds (short or empty at the end), so a body
/// never has to reject an input.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte, 0 once the input is used up.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Bytes up to (not including) the next `sep`, which is skipped; the rest if there is none.
    pub fn until(&mut self, sep: u8) -> &'a [u8] {
        match self.data.iter().position(|&b| b == sep) {
            Some(i) => {
                let head = &self.data[..i];
                self.data = &self.data[i + 1..];
                head
            }
            None => self.rest(),
        }
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Asserts that `stream` is a sequence of well-formed tagged messages, the last one possibly
/// cut short (`partial_ok`), and returns how many are complete.
pub fn assert_frames(stream: &[u8], partial_ok: bool) -> usize {
    let mut pos = 0;
    let mut n = 0;
    while pos < stream.len() {
        let rest = &stream[pos..];
        let head = header(rest, usize::MAX);
        match head {
            Ok(Some((_, len))) if rest.len() >= len => {
                pos += len;
                n += 1;
            }
            Ok(_) => {
                assert!(
                    partial_ok,
                    "stream ends inside a message at {pos}: {:?}",
                    &rest[..rest.len().min(HEADER_LEN)]
                );
                break;
            }
            Err(e) => panic!("malformed message at {pos} in an output stream: {e}"),
        }
    }
    n
}
