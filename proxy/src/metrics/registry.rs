//! The Prometheus recorder of one pgpivot instance and the handles traffic is recorded with.
//!
//! Not the `metrics` global recorder: tests run several pgpivots in one process, and each must
//! report its own numbers. Handles are registered once here, so recording is an atomic add (or a
//! lock-free histogram push) with no name or label lookup on the data path.

use std::time::Duration;

use ::metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, Unit};
use dashmap::DashMap;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use metrics_util::MetricKindMask;

static META: Metadata<'static> =
    Metadata::new(module_path!(), ::metrics::Level::INFO, Some(module_path!()));

/// Histogram buckets in seconds: sub-millisecond queries up to a minute-long wait.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Gauges are set from shared state on every scrape; one not set for this long belongs to
/// something that is gone (a closed pool) and is dropped from the output.
const GAUGE_IDLE: Duration = Duration::from_secs(5);

/// Counters and histograms recorded as traffic flows, plus the recorder that renders them.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub transactions: Counter,
    pub queries: Counter,
    pub bytes_client_to_server: Counter,
    pub bytes_server_to_client: Counter,
    pub pool_wait: Histogram,
    pub query_duration: Histogram,
    pub transaction_duration: Histogram,
    pub failovers: Counter,
    pub failover_gap: Histogram,
    /// `pgpivot_errors_total` by SQLSTATE class, registered on first use.
    errors: DashMap<[u8; 2], Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(SECONDS_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
            .build_recorder();
        let handle = recorder.handle();
        let counter = |name: &'static str, help: &'static str| {
            recorder.describe_counter(KeyName::from(name), None, help.into());
            recorder.register_counter(&Key::from_static_name(name), &META)
        };
        let histogram = |name: &'static str, help: &'static str| {
            recorder.describe_histogram(KeyName::from(name), Some(Unit::Seconds), help.into());
            recorder.register_histogram(&Key::from_static_name(name), &META)
        };
        let m = Metrics {
            transactions: counter(
                "pgpivot_transactions_total",
                "Transactions completed (ReadyForQuery idle)",
            ),
            queries: counter(
                "pgpivot_queries_total",
                "Queries: simple Query messages and extended-protocol Executes",
            ),
            bytes_client_to_server: counter(
                "pgpivot_client_to_server_bytes_total",
                "Bytes forwarded from clients to servers",
            ),
            bytes_server_to_client: counter(
                "pgpivot_server_to_client_bytes_total",
                "Bytes forwarded from servers to clients",
            ),
            pool_wait: histogram(
                "pgpivot_pool_wait_seconds",
                "Time a client waited for a server connection from its pool (connecting included)",
            ),
            query_duration: histogram(
                "pgpivot_query_duration_seconds",
                "Time the server was busy with a client's requests (request sent to ReadyForQuery)",
            ),
            transaction_duration: histogram(
                "pgpivot_transaction_duration_seconds",
                "Time from a transaction's first request to its ReadyForQuery idle",
            ),
            failovers: counter(
                "pgpivot_failovers_total",
                "Primary changes from one node to another",
            ),
            failover_gap: histogram(
                "pgpivot_failover_gap_seconds",
                "Time without a primary during a failover (primary lost to new primary published)",
            ),
            errors: DashMap::new(),
            recorder,
            handle,
        };
        m.describe_gauges();
        m.recorder.describe_counter(
            KeyName::from("pgpivot_errors_total"),
            None,
            "ErrorResponses sent to clients, by SQLSTATE class (first two characters)".into(),
        );
        m
    }

    fn describe_gauges(&self) {
        for (name, unit, help) in [
            (
                "pgpivot_client_connections",
                None,
                "Client connections open",
            ),
            (
                "pgpivot_server_connections",
                None,
                "Server connections per pool, by state (idle, active)",
            ),
            (
                "pgpivot_pool_waiting_clients",
                None,
                "Clients waiting for a server connection, per pool",
            ),
            (
                "pgpivot_node_up",
                None,
                "1 when the node answers role probes",
            ),
            (
                "pgpivot_node_primary",
                None,
                "1 for the node pgpivot routes writes to",
            ),
            (
                "pgpivot_node_probe_latency_seconds",
                Some(Unit::Seconds),
                "Duration of the node's last successful role probe",
            ),
            (
                "pgpivot_routing_generation",
                None,
                "Routing table generation (increases on every change)",
            ),
        ] {
            self.recorder
                .describe_gauge(KeyName::from(name), unit, help.into());
        }
        for (name, help) in [
            (
                "pgpivot_clients_pinned_total",
                "Clients pinned to a server connection by session-bound state",
            ),
            (
                "pgpivot_clients_moved_total",
                "Idle clients moved to a new primary without an error",
            ),
        ] {
            self.recorder
                .describe_counter(KeyName::from(name), None, help.into());
        }
    }

    /// Counts an ErrorResponse sent to a client. `sqlstate` may be anything a server sent.
    pub fn error_sent(&self, sqlstate: Option<&str>) {
        self.errors_sent(sqlstate, 1);
    }

    /// Counts `n` ErrorResponses with the same SQLSTATE.
    pub fn errors_sent(&self, sqlstate: Option<&str>, n: u64) {
        if n == 0 {
            return;
        }
        let class = match sqlstate.map(str::as_bytes) {
            Some([a, b, ..]) if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() => {
                [a.to_ascii_uppercase(), b.to_ascii_uppercase()]
            }
            _ => *b"??",
        };
        if let Some(c) = self.errors.get(&class) {
            c.increment(n);
            return;
        }
        let label = String::from_utf8_lossy(&class).into_owned();
        let key = Key::from_parts("pgpivot_errors_total", vec![Label::new("class", label)]);
        let c = self.recorder.register_counter(&key, &META);
        c.increment(n);
        self.errors.insert(class, c);
    }

    /// A gauge with labels, for scrape-time values.
    pub fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &META)
    }

    /// A counter kept elsewhere (an atomic), exported as is.
    pub fn absolute_counter(&self, name: &'static str, value: u64) {
        self.recorder
            .register_counter(&Key::from_static_name(name), &META)
            .absolute(value);
    }

    /// Prometheus text exposition of everything recorded.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Folds recorded histogram values into their buckets; run periodically so memory stays
    /// bounded when nobody scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// Folds what was recorded since the last upkeep before the recorder goes: metrics-util's
/// histogram buffer (`AtomicBucket`) has no `Drop`, so its unfolded sample blocks would leak with
/// the instance (found by the `session_pumps` fuzz target under LeakSanitizer).
impl Drop for Metrics {
    fn drop(&mut self) {
        self.handle.run_upkeep();
    }
}

/// How often recorded histogram values are folded into their buckets.
pub const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds histogram values every [`UPKEEP_INTERVAL`] until `stop`. Runs whether or not the HTTP
/// endpoint is on: traffic records into the histograms either way (they also feed `SHOW STATS`),
/// and unfolded values pile up in per-handle buffers, ~70 bytes per transaction.
pub fn spawn_upkeep(metrics: std::sync::Arc<Metrics>, stop: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => metrics.upkeep(),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_error_classes() {
        let m = Metrics::new();
        m.queries.increment(3);
        m.query_duration.record(0.002);
        m.error_sent(Some("57P01"));
        m.error_sent(Some("57P03"));
        m.error_sent(Some("x"));
        m.absolute_counter("pgpivot_clients_moved_total", 7);
        m.gauge(
            "pgpivot_node_up",
            vec![Label::new("node", "0"), Label::new("addr", "h:1")],
        )
        .set(1.0);
        let text = m.render();
        assert!(text.contains("pgpivot_queries_total 3"), "{text}");
        assert!(
            text.contains("pgpivot_errors_total{class=\"57\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("pgpivot_errors_total{class=\"??\"} 1"),
            "{text}"
        );
        assert!(text.contains("pgpivot_clients_moved_total 7"), "{text}");
        assert!(
            text.contains("pgpivot_query_duration_seconds_bucket{le=\"0.0025\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pgpivot_node_up{node=\"0\",addr=\"h:1\"} 1"),
            "{text}"
        );
        assert!(text.contains("# HELP pgpivot_queries_total"), "{text}");
    }
}
