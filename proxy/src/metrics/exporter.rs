//! What a scrape computes from shared state (connections, pools, nodes) before rendering the
//! recorder: gauges are read when asked for, never maintained on the data path.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use ::metrics::Label;

use crate::session::Ctx;
use crate::topology::Health;

/// The `/metrics` body.
pub fn scrape(ctx: &Ctx) -> String {
    let m = &ctx.metrics;
    m.gauge("pgpivot_client_connections", Vec::new())
        .set(ctx.clients.load(Ordering::Relaxed) as f64);
    m.absolute_counter(
        "pgpivot_clients_pinned_total",
        ctx.pinned_total.load(Ordering::Relaxed),
    );
    m.absolute_counter(
        "pgpivot_clients_moved_total",
        ctx.moved_total.load(Ordering::Relaxed),
    );

    // Pools that differ only by startup `options` share a label set: add them up.
    let mut pools: BTreeMap<(usize, String, String), [usize; 3]> = BTreeMap::new();
    for (key, pool) in ctx.pools.all() {
        let c = pool.counts();
        let e = pools
            .entry((key.node_id, key.user, key.database))
            .or_default();
        e[0] += c.idle;
        e[1] += c.active;
        e[2] += c.waiting;
    }
    for ((node, user, database), [idle, active, waiting]) in pools {
        let labels = |state: Option<&'static str>| {
            let mut l = vec![
                Label::new("node", node.to_string()),
                Label::new("user", user.clone()),
                Label::new("database", database.clone()),
            ];
            if let Some(s) = state {
                l.push(Label::new("state", s));
            }
            l
        };
        m.gauge("pgpivot_server_connections", labels(Some("idle")))
            .set(idle as f64);
        m.gauge("pgpivot_server_connections", labels(Some("active")))
            .set(active as f64);
        m.gauge("pgpivot_pool_waiting_clients", labels(None))
            .set(waiting as f64);
    }

    let table = ctx.topology.current();
    let primary = table.primary.as_ref().map(|p| p.node_id);
    m.gauge("pgpivot_routing_generation", Vec::new())
        .set(table.generation as f64);
    for n in ctx.topology.nodes().iter() {
        let labels = || {
            vec![
                Label::new("node", n.id.to_string()),
                Label::new("addr", format!("{}:{}", n.host, n.port)),
            ]
        };
        m.gauge("pgpivot_node_up", labels())
            .set(if n.health == Health::Up { 1.0 } else { 0.0 });
        m.gauge("pgpivot_node_primary", labels())
            .set(if primary == Some(n.id) { 1.0 } else { 0.0 });
        if let Some(lat) = n.last_latency {
            m.gauge("pgpivot_node_probe_latency_seconds", labels())
                .set(lat.as_secs_f64());
        }
    }
    m.render()
}
