//! The pumps' synchronous half, per round trip: client bytes scanned, counted, rewritten for
//! the prepared-statement mapping and staged for the server; the server's reply scanned,
//! tracked (transaction state, pending requests, statement plan) and staged for the client.
//! pgbench's select-only transaction in each `-M` mode, and a 1,000-row result. Reached through
//! `pgpivot::session::bench_hooks` (a hidden hook over the private staging functions).
//! The allocation columns show nothing allocated per round trip once the session is warm.

use divan::counter::{BytesCount, ItemsCount};
use divan::{AllocProfiler, Bencher};
use pgpivot::session::bench_hooks::Pumps;
use pgpivot_benches::msgs;

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

fn main() {
    divan::main();
}

/// A warm session for `mode`: the statement prepared (for `prepared`), buffers grown; returns
/// it with one transaction's client bytes and the server's reply to what pgpivot staged.
fn warm(mode: &str, rows: u32) -> (Pumps, Vec<u8>, Vec<u8>) {
    let mut p = Pumps::new();
    if mode == "prepared-session" {
        p.pass_through_names();
    }
    let mode = if mode == "prepared-session" {
        "prepared"
    } else {
        mode
    };
    if mode == "prepared" {
        let setup = [msgs::parse("P0_1", msgs::SELECT), msgs::sync()].concat();
        let staged = p.client_read(&setup).to_vec();
        let reply = msgs::server_replies(&staged, rows);
        p.server_read(&reply);
    }
    let client = msgs::pgbench_select(mode, 42);
    let mut reply = Vec::new();
    for _ in 0..3 {
        let staged = p.client_read(&client).to_vec();
        reply = msgs::server_replies(&staged, rows);
        let back = p.server_read(&reply).len();
        assert!(back > 0, "nothing staged for the client");
    }
    (p, client, reply)
}

fn round_trip(b: Bencher, mode: &str, rows: u32) {
    let (mut p, client, reply) = warm(mode, rows);
    b.counter(BytesCount::new(client.len() + reply.len()))
        .counter(ItemsCount::new(1u32))
        .bench_local(|| {
            let up = p.client_read(divan::black_box(&client)).len();
            let down = p.server_read(divan::black_box(&reply)).len();
            divan::black_box(up + down)
        });
}

#[divan::bench(args = ["simple", "extended", "prepared", "prepared-session"])]
fn pgbench_select_round_trip(b: Bencher, mode: &str) {
    round_trip(b, mode, 1);
}

#[divan::bench]
fn result_1000_rows_simple(b: Bencher) {
    round_trip(b, "simple", 1000);
}
