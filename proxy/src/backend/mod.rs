//! Server connections to backends.

pub mod alive;
pub mod connect;
