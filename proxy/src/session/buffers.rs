//! Session buffers recycled through a small cache per worker thread.
//!
//! In transaction mode an idle client holds no buffers (that is what keeps 10,000 idle
//! clients within a few KiB each), so every transaction used to allocate its read and staging
//! buffers again and free them at its end: four to six trips through malloc per transaction,
//! about a sixth of pgpivot's user time under pgbench. A session now gives its empty buffers
//! back here when it detaches or goes idle, and takes them from here when it needs them again.
//! The cache is bounded, so idle memory stays what it was.

use std::cell::RefCell;

use bytes::BytesMut;

/// Staged output and an idle client's first read.
pub const SMALL: usize = 4 * 1024;
/// The pumps' reads.
pub const LARGE: usize = 16 * 1024;
/// Buffers kept per class and thread: enough for the sessions one worker serves at once.
const KEEP: usize = 64;
/// Buffers that grew past this (a large COPY, a huge row) go back to the allocator.
const MAX_KEPT: usize = 64 * 1024;

#[derive(Default)]
struct Cache {
    small: Vec<BytesMut>,
    large: Vec<BytesMut>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// An empty buffer with room for at least `capacity` bytes (a class constant, or less).
pub fn take(capacity: usize) -> BytesMut {
    let class = if capacity <= SMALL { SMALL } else { LARGE };
    let cached = CACHE
        .try_with(|c| {
            let mut c = c.borrow_mut();
            if class == SMALL {
                c.small.pop()
            } else {
                c.large.pop()
            }
        })
        .ok()
        .flatten();
    match cached {
        Some(b) if b.capacity() >= capacity => b,
        _ => BytesMut::with_capacity(class.max(capacity)),
    }
}

/// Makes room to read into `buf`: a buffer from the cache if it has none, else `chunk` more
/// bytes when less than `min_spare` is free.
pub fn make_room(buf: &mut BytesMut, min_spare: usize, chunk: usize) {
    if buf.capacity() == 0 {
        *buf = take(chunk);
    } else if buf.capacity() - buf.len() < min_spare {
        buf.reserve(chunk);
    }
}

/// Gives `buf` (staged output, about to be filled) a buffer from the cache if it has none.
pub fn ensure(buf: &mut BytesMut) {
    if buf.capacity() == 0 {
        *buf = take(SMALL);
    }
}

/// Takes `buf` for the cache if it is empty and its memory is its own, leaving an unallocated
/// buffer in its place; anything else stays where it is.
pub fn give(buf: &mut BytesMut) {
    if !buf.is_empty() || buf.capacity() == 0 {
        return;
    }
    let mut b = std::mem::take(buf);
    // Reading advanced the start: win the whole allocation back without copying (fails, and
    // allocates nothing, when another handle still shares it).
    let class = if b.try_reclaim(LARGE) {
        LARGE
    } else if b.try_reclaim(SMALL) {
        SMALL
    } else {
        return;
    };
    if b.capacity() > MAX_KEPT {
        return;
    }
    let _ = CACHE.try_with(|c| {
        let mut c = c.borrow_mut();
        let stack = if class == SMALL {
            &mut c.small
        } else {
            &mut c.large
        };
        if stack.len() < KEEP {
            stack.push(b);
        }
    });
}

/// How many buffers this thread's cache holds: (small, large).
#[cfg(test)]
fn cached() -> (usize, usize) {
    CACHE.with(|c| {
        let c = c.borrow();
        (c.small.len(), c.large.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    #[test]
    fn a_read_buffer_comes_back_whole_and_is_handed_out_again() {
        let mut buf = take(LARGE);
        assert!(buf.capacity() >= LARGE);
        let addr = buf.as_ptr();
        buf.extend_from_slice(&[7u8; 1000]);
        buf.advance(1000);
        give(&mut buf);
        assert_eq!(buf.capacity(), 0, "the session keeps nothing");
        let again = take(LARGE);
        assert_eq!(again.as_ptr(), addr, "the same allocation, rewound");
        assert!(again.is_empty() && again.capacity() >= LARGE);
    }

    #[test]
    fn busy_shared_or_oversized_buffers_are_not_taken() {
        // (Each test runs on its own thread: this cache starts empty.)
        let mut busy = take(SMALL);
        busy.extend_from_slice(b"unsent");
        give(&mut busy);
        assert_eq!(&busy[..], b"unsent");
        assert_eq!(cached(), (0, 0));

        // The rest of a buffer whose start was handed out as a frame still shares its memory.
        let mut shared = take(SMALL);
        shared.extend_from_slice(b"frame");
        let frame = shared.split().freeze();
        give(&mut shared);
        assert_eq!(cached(), (0, 0));
        assert_eq!(&frame[..], b"frame");

        let mut huge = BytesMut::with_capacity(MAX_KEPT * 2);
        give(&mut huge);
        assert_eq!(huge.capacity(), 0);
        assert_eq!(cached(), (0, 0));
    }

    #[test]
    fn buffers_go_to_their_class_and_the_cache_is_bounded() {
        let mut small = take(100);
        assert!(small.capacity() >= SMALL && small.capacity() < LARGE);
        small.extend_from_slice(b"x");
        small.clear();
        give(&mut small);
        assert_eq!(cached(), (1, 0));
        let mut all: Vec<BytesMut> = (0..KEEP + 5).map(|_| take(LARGE)).collect();
        for b in &mut all {
            give(b);
        }
        assert_eq!(cached(), (1, KEEP));
    }

    #[test]
    fn room_is_made_from_the_cache_then_by_growing() {
        let mut buf = BytesMut::new();
        make_room(&mut buf, 1024, LARGE);
        assert!(buf.capacity() >= LARGE);
        buf.extend_from_slice(&vec![0u8; buf.capacity() - 10]);
        make_room(&mut buf, 1024, LARGE);
        assert!(buf.capacity() - buf.len() >= LARGE);
        let mut out = BytesMut::new();
        ensure(&mut out);
        assert!(out.capacity() >= SMALL);
    }
}
