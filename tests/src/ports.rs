//! Loopback port allocation for test servers.
//!
//! Tests run in parallel threads (`cargo test`) and in parallel processes
//! (nextest runs every test in its own process), and each of them starts
//! several PostgreSQL nodes plus a proxy. We therefore:
//!
//! * let the kernel pick an ephemeral port (`bind 127.0.0.1:0`), which is
//!   random enough that two processes rarely collide and is guaranteed not
//!   to be listening right now;
//! * remember every port this process handed out, so two threads of the same
//!   process never get the same port even after the probe socket is closed;
//! * accept that a tiny window remains between closing the probe socket and
//!   the server binding it; PostgreSQL start-up in [`crate::Cluster::start`]
//!   retries once with a fresh port when it hits `Address already in use`.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

fn issued() -> &'static Mutex<HashSet<u16>> {
    static ISSUED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    ISSUED.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Returns a 127.0.0.1 TCP port that is free right now and has never been
/// returned before by this process.
///
/// Panics if no port can be found after many attempts (that means the
/// machine is out of ephemeral ports, which no test can survive anyway).
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("free_port: cannot bind 127.0.0.1:0: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("free_port: local_addr failed: {e}"))
            .port();
        // The listener is dropped at the end of this iteration; the port is
        // free again for the caller (no connection ever happened on it, so
        // there is no TIME_WAIT to worry about).
        let mut set = issued().lock().unwrap_or_else(|p| p.into_inner());
        if set.insert(port) {
            return port;
        }
    }
    panic!("free_port: could not find an unused loopback port after 1000 attempts");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_unique_and_bindable() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len(), "free_port returned a duplicate");
        for p in ports {
            TcpListener::bind((Ipv4Addr::LOCALHOST, p))
                .unwrap_or_else(|e| panic!("port {p} from free_port is not bindable: {e}"));
        }
    }
}
