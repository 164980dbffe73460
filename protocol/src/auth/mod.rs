//! Proxy-side (server role) authentication of clients.
//!
//! Sans-IO: these functions turn client messages into replies; the proxy moves the bytes.

pub mod md5;
pub mod scram;

/// The only SASL mechanism offered: there is no TLS yet, so no `SCRAM-SHA-256-PLUS`.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
