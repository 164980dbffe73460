//! Server connections to backends.

pub mod connect;
