//! A pooled server connection and what pgpivot knows about its session state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pgpivot_protocol::frame::read_frame;
use pgpivot_protocol::startup::StartupMessage;
use pgpivot_protocol::views::{self, ErrorView};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backend::connect::ServerConn;
use crate::session::params::ClientParams;
use crate::session::prepared::ServerStatements;
use crate::session::startup_params;

/// Reported parameters clients cannot SET: a difference is told to the client instead.
const FIXED: &[&str] = &[
    "server_version",
    "server_encoding",
    "is_superuser",
    "session_authorization",
    "integer_datetimes",
    "in_hot_standby",
];

/// Startup keys that are not session parameters.
const NOT_PARAMS: &[&str] = &["user", "database", "options", "replication"];

pub fn is_settable(name: &str) -> bool {
    !FIXED.contains(&name)
        && !NOT_PARAMS.contains(&name)
        && !pgpivot_protocol::startup::is_protocol_option(name)
}

pub struct Server {
    pub conn: ServerConn,
    pub node_id: usize,
    /// Where a client holding this connection has its cancel requests sent.
    pub cancel_key: std::sync::Arc<crate::cancel::BackendKey>,
    /// Parameter values in force on this connection: its startup parameters, every
    /// ParameterStatus it reported, and the SETs pgpivot applied. The reported ones are always
    /// the server's word; the others are pgpivot's record of what it set.
    pub params: HashMap<String, String>,
    pub prepared: ServerStatements,
    pub created: Instant,
    pub last_used: Instant,
    /// The client parameters `params` was last made to match (a snapshot, held so its
    /// addresses cannot be reused): the next client with the same ones skips the comparison.
    pub synced_to: Option<ClientParams>,
    /// The settable GUCs of the startup packet this connection was opened with (normal form,
    /// sorted): what RESET goes back to on it. See [`Server::opened_with`].
    startup_gucs: Vec<(String, String)>,
    /// `params` as the connection started: where DISCARD ALL and RESET ALL take it back.
    defaults: Arc<HashMap<String, String>>,
}

/// Why a statement pgpivot ran on a server connection for itself failed.
#[derive(Debug, thiserror::Error)]
pub enum QuietError {
    /// The server's ErrorResponse (the whole frame): a parameter it refused, say.
    #[error("{}", describe(.0))]
    Refused(Bytes),
    /// The connection is unusable (broken, timed out, out of step).
    #[error("{0}")]
    Broken(String),
}

fn describe(frame: &Bytes) -> String {
    let v = ErrorView::new(frame.get(5..).unwrap_or_default());
    format!(
        "{}: {}",
        v.sqlstate().unwrap_or("?"),
        v.message().unwrap_or("")
    )
}

impl Server {
    pub fn new(conn: ServerConn, node_id: usize, startup: &StartupMessage) -> Self {
        let mut params: HashMap<String, String> = startup
            .params
            .iter()
            .filter(|(k, _)| is_settable(k))
            .cloned()
            .collect();
        absorb_parameter_status(&conn.greeting, &mut params);
        let now = Instant::now();
        let cancel_key = std::sync::Arc::new(crate::cancel::BackendKey {
            addr: conn.addr,
            pid: conn.pid,
            secret: conn.secret.clone(),
            node: node_id,
            in_flight: Default::default(),
        });
        let normal = startup_params::normalize(startup);
        let startup_gucs = startup_params::settable(&normal)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Server {
            conn,
            node_id,
            cancel_key,
            defaults: Arc::new(params.clone()),
            params,
            prepared: ServerStatements::default(),
            created: now,
            last_used: now,
            synced_to: None,
            startup_gucs,
        }
    }

    /// Whether this connection was opened with the settable GUCs of `startup` (in normal form,
    /// as sessions pass it): then RESET and DISCARD ALL on it go back to that client's startup
    /// values, as on a connection of its own. A pool prefers such a connection.
    pub fn opened_with(&self, startup: &StartupMessage) -> bool {
        self.startup_gucs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .eq(startup_params::settable(startup))
    }

    /// Whether nothing has changed the connection's parameters since it started (or since
    /// its last DISCARD ALL).
    pub fn at_defaults(&self) -> bool {
        self.params == *self.defaults
    }

    /// Whether this connection was last synced to parameters equal to `wanted` (and nothing
    /// has run on it since that could change them): then `sync_params` has nothing to do, and
    /// `wanted` and the snapshot share their maps, so that a change the client makes during
    /// this attachment shows as a different map when it ends.
    pub fn adopt_if_in_sync(&mut self, wanted: &mut ClientParams) -> bool {
        crate::session::params::adopt_if_same(&mut self.synced_to, wanted)
    }

    /// Makes this connection's parameters match `wanted` (a client's), with one round trip of
    /// SET/RESET when anything differs; a reported parameter that was SET takes in `wanted`
    /// the value the server reports (`utf-8` becomes `UTF8`, `german` `German, DMY`). Errors
    /// mean the connection is unusable for this client.
    pub async fn sync_params(
        &mut self,
        wanted: &mut ClientParams,
        timeout: Duration,
    ) -> Result<(), QuietError> {
        if self.adopt_if_in_sync(wanted) {
            return Ok(());
        }
        let result = self.sync_params_now(wanted, timeout).await;
        self.synced_to = match result {
            Ok(()) => Some(wanted.clone()),
            Err(_) => None,
        };
        result
    }

    async fn sync_params_now(
        &mut self,
        wanted: &mut ClientParams,
        timeout: Duration,
    ) -> Result<(), QuietError> {
        let mut sql = String::new();
        let mut reported_set = Vec::new();
        for (k, v) in wanted.iter() {
            if is_settable(k) && self.params.get(k).map(String::as_str) != Some(v) {
                sql.push_str(&format!("SET {} TO {};", quote_ident(k), quote_literal(v)));
                if startup_params::is_reported(k) {
                    reported_set.push(k.to_string());
                }
            }
        }
        let stale: Vec<String> = self
            .params
            .keys()
            .filter(|k| is_settable(k) && !wanted.contains_key(k))
            .cloned()
            .collect();
        for k in &stale {
            sql.push_str(&format!("RESET {};", quote_ident(k)));
        }
        if sql.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(timeout, self.run_quietly(&sql)).await {
            Ok(Ok(())) => {
                // Reported values come from the server's ParameterStatus (recorded by
                // `run_quietly`; none means unchanged); the others are as SET.
                for (k, v) in wanted.iter() {
                    if is_settable(k) && !startup_params::is_reported(k) {
                        self.params.insert(k.to_string(), v.to_string());
                    }
                }
                for k in stale {
                    if !startup_params::is_reported(&k) {
                        self.params.remove(&k);
                    }
                }
                for k in reported_set {
                    if let Some(v) = self.params.get(&k) {
                        if wanted.get(&k) != Some(v.as_str()) {
                            wanted.insert(k, v.clone());
                        }
                    }
                }
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(QuietError::Broken(
                "timed out applying session parameters".into(),
            )),
        }
    }

    /// The session reset before the connection serves another client (session mode): DISCARD
    /// ALL, after which its parameters are its startup values again.
    pub async fn discard_all(&mut self) -> Result<(), QuietError> {
        self.run_quietly("DISCARD ALL").await?;
        self.forget_settings();
        Ok(())
    }

    /// The connection's parameters went back to its startup values (RESET, DISCARD ALL): the
    /// unreported ones are recorded so (the reported ones the server told as they changed), and
    /// the next client compares in full.
    pub fn forget_settings(&mut self) {
        let defaults = &self.defaults;
        self.params.retain(|k, _| {
            startup_params::is_reported(k) || !is_settable(k) || defaults.contains_key(k)
        });
        for (k, v) in defaults.iter() {
            if !startup_params::is_reported(k) && is_settable(k) {
                self.params.insert(k.clone(), v.clone());
            }
        }
        self.synced_to = None;
    }

    /// After the client's own RESET / DISCARD ALL (seen in what it sent) on a connection opened
    /// without its startup parameters (transaction mode): the connection is back at its
    /// defaults, so the next sync re-applies everything the client wants; and the client's
    /// reported startup values it was told the default for come back (PostgreSQL's RESET goes
    /// back to the session's startup value), with the ParameterStatus to tell it in `out`.
    pub fn after_client_reset(&mut self, client: &mut ClientParams, out: &mut BytesMut) {
        self.forget_settings();
        client.restore_startup(&self.defaults, out);
    }

    /// Runs a simple query whose results nobody sees; ParameterStatus updates are recorded.
    pub async fn run_quietly(&mut self, sql: &str) -> Result<(), QuietError> {
        // Whatever this runs may change parameters.
        self.synced_to = None;
        let broken = |e: &dyn std::fmt::Display| QuietError::Broken(e.to_string());
        let mut out = BytesMut::with_capacity(sql.len() + 6);
        postgres_protocol::message::frontend::query(sql, &mut out).map_err(|e| broken(&e))?;
        self.conn
            .stream
            .write_all(&out)
            .await
            .map_err(|e| broken(&e))?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut error = None;
        loop {
            while let Some(f) = read_frame(&mut buf, 1 << 24).map_err(|e| broken(&e))? {
                match f.tag() {
                    b'S' => {
                        if let Some((k, v)) = views::parameter_status(f.body()) {
                            self.params.insert(
                                String::from_utf8_lossy(k).into_owned(),
                                String::from_utf8_lossy(v).into_owned(),
                            );
                        }
                    }
                    b'E' => error = Some(QuietError::Refused(f.into_bytes())),
                    b'Z' => {
                        if f.body().first() != Some(&b'I') {
                            return Err(broken(&"server left in a transaction"));
                        }
                        return match error {
                            Some(e) => Err(e),
                            None => Ok(()),
                        };
                    }
                    _ => {}
                }
            }
            let n = read_more(&mut self.conn.stream, &mut buf)
                .await
                .map_err(|e| broken(&e))?;
            if n == 0 {
                return Err(broken(&"server closed the connection"));
            }
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<usize, String> {
    stream.read_buf(buf).await.map_err(|e| e.to_string())
}

/// Records every ParameterStatus in a run of raw messages.
pub fn absorb_parameter_status(raw: &[u8], params: &mut HashMap<String, String>) {
    let mut rest = raw;
    while let Ok(Some((tag, len))) = pgpivot_protocol::frame::header(rest, usize::MAX) {
        let Some(msg) = rest.get(..len) else { break };
        if tag == b'S' {
            if let Some((k, v)) = views::parameter_status(&msg[5..]) {
                params.insert(
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                );
            }
        }
        rest = &rest[len..];
    }
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("Time\"Zone"), "\"Time\"\"Zone\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert!(is_settable("application_name"));
        assert!(!is_settable("server_version"));
        assert!(!is_settable("user"));
        assert!(
            !is_settable("_pq_.test_option"),
            "protocol options are not GUCs"
        );
    }

    #[test]
    fn parameter_status_runs() {
        let mut raw = BytesMut::new();
        pgpivot_protocol::build::parameter_status(&mut raw, "TimeZone", "UTC");
        pgpivot_protocol::build::ready_for_query(&mut raw, b'I');
        pgpivot_protocol::build::parameter_status(&mut raw, "DateStyle", "ISO, MDY");
        let mut p = HashMap::new();
        absorb_parameter_status(&raw, &mut p);
        assert_eq!(p.get("TimeZone").map(String::as_str), Some("UTC"));
        assert_eq!(p.get("DateStyle").map(String::as_str), Some("ISO, MDY"));
    }
}
