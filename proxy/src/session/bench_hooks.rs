//! Benchmark hook, not an API: the forwarding pumps' synchronous half (scan, bookkeeping,
//! prepared-statement rewriting, staging) driven without sockets, exactly as
//! `forward::client_to_server` and `forward::server_to_client` drive it after each read, so
//! `cargo bench -p pgpivot-benches` can time it and count its allocations.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use pgpivot_protocol::frame::Scanner;

use super::forward::{ClientSide, ServerSide, Shared};
use super::params::ClientParams;
use super::staging::{stage_client_bytes, stage_server_bytes};
use crate::metrics::Metrics;
use crate::topology::counters::NodeCounters;

/// One session's pumps, minus the sockets.
pub struct Pumps {
    client: ClientSide,
    server: ServerSide,
    shared: Shared,
    server_params: HashMap<String, String>,
    client_params: ClientParams,
    server_fatal: bool,
    counters: NodeCounters,
    metrics: Metrics,
}

impl Default for Pumps {
    fn default() -> Self {
        Self::new()
    }
}

impl Pumps {
    pub fn new() -> Pumps {
        Pumps {
            client: ClientSide {
                buf: BytesMut::with_capacity(8 * 1024),
                scan: Scanner::new(1 << 30),
                out: BytesMut::with_capacity(8 * 1024),
            },
            server: ServerSide::new(),
            shared: Shared::new(),
            server_params: HashMap::new(),
            client_params: ClientParams::new(Arc::default()),
            server_fatal: false,
            counters: NodeCounters::default(),
            metrics: Metrics::new(),
        }
    }

    /// Client bytes arrive (as one read): staged for the server. Returns the staged bytes,
    /// what the pump would write to the server.
    pub fn client_read(&mut self, bytes: &[u8]) -> &[u8] {
        self.client.buf.extend_from_slice(bytes);
        let pos = match stage_client_bytes(
            &mut self.client,
            &self.shared,
            1 << 30,
            Some(&self.counters),
        ) {
            Ok((pos, _)) => pos,
            Err(end) => panic!("client pump ended: {end:?}"),
        };
        self.client.buf.advance(pos);
        &self.client.out
    }

    /// Server bytes arrive (as one read): staged for the client. Returns what the pump would
    /// write to the client.
    pub fn server_read(&mut self, bytes: &[u8]) -> &[u8] {
        self.server.buf.extend_from_slice(bytes);
        let pos = match stage_server_bytes(
            &mut self.server,
            &self.shared,
            &mut self.server_params,
            &mut self.client_params,
            &mut self.server_fatal,
            Some(&self.counters),
            &self.metrics,
        ) {
            Ok(pos) => pos,
            Err(end) => panic!("server pump ended: {end}"),
        };
        self.server.buf.advance(pos);
        &self.server.out
    }
}
