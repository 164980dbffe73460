//! pgpivot: a PostgreSQL wire-protocol proxy that always points at the live primary.
//!
//! Data path: `server` accepts a client → `session` authenticates it, waits for the primary the
//! `topology` monitor publishes, logs in to it (`backend`), and forwards raw frames both ways
//! until one side leaves or a failover or shutdown ends it.

pub mod backend;
pub mod cancel;
pub mod config;
pub mod console;
pub mod control;
pub mod error;
#[doc(hidden)]
pub mod fuzz_hooks;
pub mod idle_limit;
pub mod metrics;
pub mod pause;
pub mod pool;
pub mod reload;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod stats;
pub mod tls;
pub mod topology;
