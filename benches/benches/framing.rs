//! Framing on the forwarding hot path: `Scanner` over a stream of DataRows (server → client, a
//! big result) and over pgbench's extended-protocol messages (client → server, where every
//! statement message is handed over whole), in 16 kB reads as the pump does; and `read_frame`,
//! the whole-message splitter of the control paths. The allocation columns (divan's
//! AllocProfiler) show no allocation per message: the scanner only reports positions.

use bytes::BytesMut;
use divan::counter::{BytesCount, ItemsCount};
use divan::{AllocProfiler, Bencher};
use pgpivot_benches::msgs;
use pgpivot_protocol::frame::{read_frame, Scan, Scanner};

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

fn main() {
    divan::main();
}

const READ: usize = 16 * 1024;

/// Scans `stream` in `READ`-byte pieces as a pump would: pass what may pass, stop at what the
/// caller wants whole. Returns the number of messages seen whole (so nothing is optimised away).
fn pump(stream: &[u8], scanner: &mut Scanner, want: fn(u8) -> bool) -> usize {
    let mut whole = 0;
    let mut start = 0;
    while start < stream.len() {
        let end = (start + READ).min(stream.len());
        let buf = &stream[start..end];
        let mut pos = 0;
        loop {
            match scanner.scan(&buf[pos..], want).expect("valid stream") {
                Scan::Pass(n) => pos += n,
                Scan::Message { len, .. } => {
                    scanner.consume(len);
                    whole += 1;
                    pos += len;
                }
                Scan::NeedMore { .. } => break,
            }
        }
        // An unconsumed tail (a message the caller wants, split by the read) is read again.
        assert!(pos > 0, "a wanted message larger than one read");
        start += pos;
    }
    whole
}

fn server_wants(tag: u8) -> bool {
    matches!(tag, b'Z' | b'E' | b'S')
}

fn client_wants(tag: u8) -> bool {
    matches!(tag, b'X' | b'Q' | b'P' | b'B' | b'D' | b'C')
}

fn count_messages(stream: &[u8]) -> u64 {
    let mut n = 0;
    let mut pos = 0;
    while pos < stream.len() {
        let len = u32::from_be_bytes(stream[pos + 1..pos + 5].try_into().unwrap()) as usize;
        pos += 1 + len;
        n += 1;
    }
    n
}

/// 10,000 pgbench_accounts rows (≈ 1.1 MB) through the server→client scanner.
#[divan::bench]
fn scan_data_rows(b: Bencher) {
    let stream = msgs::result_set(10_000);
    b.counter(BytesCount::of_slice(&stream))
        .counter(ItemsCount::new(count_messages(&stream)))
        .bench_local(|| {
            let mut sc = Scanner::new(i32::MAX as usize);
            divan::black_box(pump(divan::black_box(&stream), &mut sc, server_wants))
        });
}

/// 1,000 pgbench `-M extended` select-only transactions (Parse, Bind, Describe, Execute, Sync
/// each) through the client→server scanner, which hands every statement message over whole.
#[divan::bench]
fn scan_extended_protocol(b: Bencher) {
    let stream: Vec<u8> = (0..1000)
        .flat_map(|i| msgs::pgbench_select("extended", i))
        .collect();
    b.counter(BytesCount::of_slice(&stream))
        .counter(ItemsCount::new(count_messages(&stream)))
        .bench_local(|| {
            let mut sc = Scanner::new(1 << 30);
            divan::black_box(pump(divan::black_box(&stream), &mut sc, client_wants))
        });
}

/// The same extended-protocol stream split into whole frames by `read_frame` (the control
/// paths' splitter): one shared handle for the buffer, then reference counts.
#[divan::bench]
fn read_frame_extended_protocol(b: Bencher) {
    let stream: Vec<u8> = (0..1000)
        .flat_map(|i| msgs::pgbench_select("extended", i))
        .collect();
    let mut buf = BytesMut::with_capacity(stream.len());
    b.counter(BytesCount::of_slice(&stream))
        .counter(ItemsCount::new(count_messages(&stream)))
        .bench_local(|| {
            buf.clear();
            buf.extend_from_slice(&stream);
            let mut n = 0;
            while let Some(f) = read_frame(&mut buf, 1 << 30).expect("valid") {
                n += f.as_bytes().len();
            }
            divan::black_box(n)
        });
}
