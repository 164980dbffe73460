//! Proxy-side (server role) authentication of clients.
//!
//! Sans-IO: these functions turn client messages into replies; the proxy moves the bytes.

pub mod md5;
pub mod scram;

/// The only SASL mechanism offered, over TLS too: no channel binding (`SCRAM-SHA-256-PLUS`) is
/// implemented, and offering it without would make a `y` client see a downgrade.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
