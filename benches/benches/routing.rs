//! The routing-table lookups a session makes: the generation number (checked by the
//! client→server pump before every write), the current table (an `Arc` load), and "is my node
//! still the primary" — on one thread and on every core at once (the table is shared by all
//! sessions).

use std::sync::Arc;

use divan::{AllocProfiler, Bencher};
use pgpivot::topology::{PrimaryRoute, RoutingTable, Topology};

#[global_allocator]
static ALLOC: AllocProfiler = AllocProfiler::system();

fn main() {
    divan::main();
}

fn topology() -> Arc<Topology> {
    let topo = Topology::new(RoutingTable::empty(), Vec::new());
    let mut t = RoutingTable::empty();
    t.primary = Some(PrimaryRoute {
        node_id: 0,
        host: "127.0.0.1".into(),
        port: 5432,
        timeline: Some(1),
    });
    t.no_primary_reason = None;
    topo.publish(t);
    topo
}

const THREADS: &[usize] = &[1, 0];

#[divan::bench(threads = THREADS)]
fn generation(b: Bencher) {
    let topo = topology();
    b.bench(|| divan::black_box(&topo).generation());
}

#[divan::bench(threads = THREADS)]
fn current_table(b: Bencher) {
    let topo = topology();
    b.bench(|| divan::black_box(&topo).current());
}

/// `forward::still_primary`: is node 0 still where writes go?
#[divan::bench(threads = THREADS)]
fn still_primary(b: Bencher) {
    let topo = topology();
    b.bench(|| {
        divan::black_box(&topo)
            .current()
            .primary
            .as_ref()
            .is_some_and(|p| p.node_id == divan::black_box(0))
    });
}
