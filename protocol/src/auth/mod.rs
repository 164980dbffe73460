//! Proxy-side (server role) authentication of clients.
//!
//! Sans-IO: these functions turn client messages into replies; the proxy moves the bytes.

pub mod md5;
pub mod scram;

/// The SASL mechanism always offered.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// Offered first over TLS, as PostgreSQL does: channel binding `tls-server-end-point`.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
