//! Allocation counts on the forwarding hot path, as assertions (the divan benches show the same
//! figures per iteration): the frame scanner never allocates, and a warm session's pumps stage
//! pgbench's transactions without allocating per message. The only allocations left on that
//! path are the metrics histograms' sample blocks (one block per 64 recorded durations, two
//! durations per transaction), counted here too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use pgpivot::session::bench_hooks::Pumps;
use pgpivot_benches::msgs;
use pgpivot_protocol::frame::{Scan, Scanner};

struct Counting;

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts (per thread, so parallel tests do not
// disturb each other).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocations<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let before = COUNT.with(Cell::get);
    let r = f();
    (COUNT.with(Cell::get) - before, r)
}

fn scan_all(stream: &[u8], want: fn(u8) -> bool) -> usize {
    let mut sc = Scanner::new(1 << 30);
    let (mut pos, mut whole) = (0, 0);
    for chunk_end in (0..stream.len())
        .step_by(4096)
        .skip(1)
        .chain([stream.len()])
    {
        loop {
            match sc.scan(&stream[pos..chunk_end], want).expect("valid") {
                Scan::Pass(n) => pos += n,
                Scan::Message { len, .. } => {
                    sc.consume(len);
                    pos += len;
                    whole += 1;
                }
                Scan::NeedMore { .. } => break,
            }
        }
    }
    assert_eq!(pos, stream.len());
    whole
}

#[test]
fn the_scanner_never_allocates() {
    let rows = msgs::result_set(5_000);
    let ext: Vec<u8> = (0..2_000)
        .flat_map(|i| msgs::pgbench_select("extended", i))
        .collect();
    let (n, whole) = allocations(|| scan_all(&rows, |t| matches!(t, b'Z' | b'E' | b'S')));
    assert_eq!((n, whole), (0, 1), "DataRow stream");
    let (n, whole) = allocations(|| {
        scan_all(&ext, |t| {
            matches!(t, b'X' | b'Q' | b'P' | b'B' | b'D' | b'C')
        })
    });
    // Parse, Bind and Describe of each transaction are handed over whole; Execute and Sync pass.
    assert_eq!((n, whole), (0, 6_000), "extended-protocol stream");
}

#[test]
fn warm_pumps_allocate_nothing_per_message() {
    const ROUNDS: u64 = 20_000;
    for mode in ["simple", "extended", "prepared"] {
        let mut p = Pumps::new();
        if mode == "prepared" {
            let setup = [msgs::parse("P0_1", msgs::SELECT), msgs::sync()].concat();
            let staged = p.client_read(&setup).to_vec();
            p.server_read(&msgs::server_replies(&staged, 1));
        }
        let client = msgs::pgbench_select(mode, 7);
        let mut reply = Vec::new();
        for _ in 0..3 {
            let staged = p.client_read(&client).to_vec();
            reply = msgs::server_replies(&staged, 1);
            assert!(!p.server_read(&reply).is_empty());
        }
        let messages = count(&client) + count(&reply);
        let (n, _) = allocations(|| {
            for _ in 0..ROUNDS {
                std::hint::black_box(p.client_read(&client).len());
                std::hint::black_box(p.server_read(&reply).len());
            }
        });
        // Two histogram samples per transaction, 64 per block: at most one block per 32
        // transactions (plus a little slack); nothing per message.
        eprintln!(
            "-M {mode}: {n} allocations in {ROUNDS} transactions ({} messages per transaction, both ways)",
            messages
        );
        assert!(
            n <= ROUNDS / 32 + 8,
            "-M {mode}: {n} allocations in {ROUNDS} round trips"
        );
    }
}

fn count(stream: &[u8]) -> u64 {
    let (mut pos, mut n) = (0, 0);
    while pos < stream.len() {
        pos += 1 + u32::from_be_bytes(stream[pos + 1..pos + 5].try_into().unwrap()) as usize;
        n += 1;
    }
    n
}
