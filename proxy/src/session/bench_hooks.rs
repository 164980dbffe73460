//! Benchmark and fuzzing hook, not an API: the forwarding pumps' synchronous half (scan,
//! bookkeeping, prepared-statement rewriting, staging) driven without sockets, exactly as
//! `forward::client_to_server` and `forward::server_to_client` drive it after each read, so
//! `cargo bench -p pgpivot-benches` can time it and count its allocations, and the
//! `session_pumps` fuzz target can feed it arbitrary traffic.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use pgpivot_protocol::frame::Scanner;

use super::forward::{ClientSide, ServerSide, Shared, SERVER_MAX_MESSAGE};
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
    client_max: usize,
    server_max: usize,
}

impl Default for Pumps {
    fn default() -> Self {
        Self::new()
    }
}

impl Pumps {
    pub fn new() -> Pumps {
        Self::with_limits(1 << 30, SERVER_MAX_MESSAGE)
    }

    /// Largest message accepted from the client (`max_message_bytes`) and from the server.
    pub fn with_limits(client_max: usize, server_max: usize) -> Pumps {
        let mut server = ServerSide::new();
        server.scan = Scanner::new(server_max);
        Pumps {
            client: ClientSide::new(BytesMut::with_capacity(8 * 1024), client_max),
            server,
            shared: Shared::new(),
            server_params: HashMap::new(),
            client_params: ClientParams::new(Arc::default()),
            server_fatal: false,
            counters: NodeCounters::default(),
            metrics: Metrics::new(),
            client_max,
            server_max,
        }
    }

    /// Session pooling's statement naming (the client's names reach the server), as the
    /// session engine sets it for a session-mode client.
    pub fn pass_through_names(&mut self) {
        let naming = super::prepared::Naming::PassThrough;
        self.shared.prep().client.set_naming(naming);
    }

    /// Client bytes arrive (as one read): staged for the server. Returns the staged bytes,
    /// what the pump would write to the server.
    pub fn client_read(&mut self, bytes: &[u8]) -> &[u8] {
        match self.try_client_read(bytes) {
            Ok(out) => out,
            Err(end) => panic!("client pump ended: {end}"),
        }
    }

    /// [`Pumps::client_read`], or why the pump would end the session (a malformed message).
    pub fn try_client_read(&mut self, bytes: &[u8]) -> Result<&[u8], String> {
        self.client.buf.extend_from_slice(bytes);
        let (pos, _) = stage_client_bytes(
            &mut self.client,
            &self.shared,
            self.client_max,
            Some(&self.counters),
        )
        .map_err(|end| format!("{end:?}"))?;
        // As the client pump does: a request only partly read is not a boundary.
        let whole = pos == self.client.buf.len();
        self.shared.client_boundary.store(
            self.client.scan.at_boundary() && whole,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.client.buf.advance(pos);
        Ok(&self.client.out)
    }

    /// Transaction pooling's release point, as the server pump decides it: when the session
    /// could give its server connection back now, it does (the next read goes to a fresh
    /// server side, as after a new checkout) and this returns true.
    pub fn release_if_idle(&mut self) -> bool {
        let idle =
            self.server.buf.is_empty() && self.shared.quiescent() && self.shared.pinned().is_none();
        if idle {
            let mut server = ServerSide::new();
            server.scan = Scanner::new(self.server_max);
            self.server = server;
            self.shared.reset_for_attach();
        }
        idle
    }

    /// A client message is partly read or partly passed to the server: releasing the server
    /// connection now would cut it.
    pub fn client_mid_message(&self) -> bool {
        !self.client.scan.at_boundary()
            || self.client.stream.is_some()
            || !self.client.buf.is_empty()
    }

    /// Server bytes arrive (as one read): staged for the client. Returns what the pump would
    /// write to the client.
    pub fn server_read(&mut self, bytes: &[u8]) -> &[u8] {
        match self.try_server_read(bytes) {
            Ok(out) => out,
            Err(end) => panic!("server pump ended: {end}"),
        }
    }

    /// [`Pumps::server_read`], or why the pump would end the session.
    pub fn try_server_read(&mut self, bytes: &[u8]) -> Result<&[u8], String> {
        self.server.buf.extend_from_slice(bytes);
        let pos = stage_server_bytes(
            &mut self.server,
            &self.shared,
            &mut self.server_params,
            &mut self.client_params,
            &mut self.server_fatal,
            Some(&self.counters),
            &self.metrics,
        )
        .map_err(|end| end.to_string())?;
        self.server.buf.advance(pos);
        Ok(&self.server.out)
    }
}
