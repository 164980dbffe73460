//! Observability over HTTP (`PGPIVOT_METRICS_ADDR`): Prometheus metrics, liveness and readiness.
//!
//! * `registry`: the per-instance Prometheus recorder and the handles traffic is counted with;
//! * `exporter`: gauges read from shared state at scrape time;
//! * `health`: what `/livez` and `/readyz` mean;
//! * `http`: the small server that answers the three paths;
//! * `probe`: the client side, for `pgpivot probe live|ready`.

pub mod exporter;
pub mod health;
pub mod http;
pub mod probe;
mod registry;

pub use health::Liveness;
pub use http::HttpServer;
pub use registry::spawn_upkeep;
pub use registry::Metrics;
