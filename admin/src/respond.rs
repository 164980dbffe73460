//! Answers admin commands over the PostgreSQL protocol, simple and extended, without a server.
//!
//! The console sends every message here. The data port sends only what [`Responder::is_local`]
//! claims: a `SHOW pool_*` Query or Parse, the Bind/Describe/Execute/Close of statements and
//! portals made from one, and the Sync that ends a batch of those. Everything else belongs to
//! PostgreSQL.

use std::collections::HashMap;

use bytes::BytesMut;
use pgpivot_protocol::build::{self, ErrorFields};
use pgpivot_protocol::sqlstate;

use crate::command::{self, Command};
use crate::error::AdminError;
use crate::result::Output;
use crate::state::Control;

/// Where the commands arrive: the data port answers only the Pgpool `SHOW pool_*` commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    DataPort,
    Console,
}

/// What the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The client sent Terminate.
    Terminate,
}

/// Protocol state of locally answered commands for one client.
#[derive(Debug)]
pub struct Responder {
    surface: Surface,
    statements: HashMap<String, Command>,
    portals: HashMap<String, Command>,
    /// After an error in an extended-protocol batch, messages are ignored until Sync.
    skipping: bool,
    /// An extended-protocol batch answered here is open (its Sync is ours too).
    in_batch: bool,
}

impl Responder {
    pub fn new(surface: Surface) -> Self {
        Responder {
            surface,
            statements: HashMap::new(),
            portals: HashMap::new(),
            skipping: false,
            in_batch: false,
        }
    }

    /// Data port: whether this message is answered here rather than by PostgreSQL. `responder`
    /// is the client's, if it has one yet. Cheap for the common case (no local names).
    pub fn is_local(responder: Option<&Responder>, tag: u8, body: &[u8]) -> bool {
        match tag {
            b'Q' => command::pool_show(cstr(body)).is_some(),
            b'P' => {
                let (name, rest) = split_cstr(body);
                command::pool_show(cstr(rest)).is_some()
                    || responder.is_some_and(|r| r.statements.contains_key(lossy(name)))
            }
            _ => {
                let Some(r) = responder else { return false };
                match tag {
                    b'B' => {
                        let (portal, rest) = split_cstr(body);
                        let (stmt, _) = split_cstr(rest);
                        r.statements.contains_key(lossy(stmt))
                            || r.portals.contains_key(lossy(portal))
                    }
                    b'D' | b'C' => match body.split_first() {
                        Some((b'S', name)) => r.statements.contains_key(lossy(cstr(name))),
                        Some((b'P', name)) => r.portals.contains_key(lossy(cstr(name))),
                        _ => false,
                    },
                    b'E' => r.portals.contains_key(lossy(split_cstr(body).0)),
                    b'S' | b'H' => r.in_batch,
                    _ => false,
                }
            }
        }
    }

    /// Whether this client has local statements or portals (the forwarding path then checks
    /// names in Bind/Describe/Execute/Close).
    pub fn has_names(&self) -> bool {
        !self.statements.is_empty() || !self.portals.is_empty() || self.in_batch
    }

    /// An extended-protocol batch answered here is waiting for its Sync.
    pub fn batch_open(&self) -> bool {
        self.in_batch
    }

    /// A message for PostgreSQL arrived mid-batch: the batch's Sync now belongs to PostgreSQL,
    /// whose ReadyForQuery answers for both.
    pub fn end_batch(&mut self) {
        self.in_batch = false;
        self.skipping = false;
    }

    /// Handles one message. `status` is the transaction status ReadyForQuery reports. Returns
    /// `None` when the message is not ours after all (a Parse or Bind that reuses a local name
    /// for a PostgreSQL statement: the name is forgotten and the caller forwards the message).
    pub async fn handle(
        &mut self,
        tag: u8,
        body: &[u8],
        ctl: &dyn Control,
        status: u8,
        out: &mut BytesMut,
    ) -> Option<Flow> {
        if self.surface == Surface::DataPort && !Self::is_local(Some(self), tag, body) {
            return None;
        }
        match tag {
            b'Q' => {
                self.skipping = false;
                self.in_batch = false;
                let text = String::from_utf8_lossy(cstr(body)).into_owned();
                for stmt in command::statements(&text) {
                    let r = match self.parse(stmt) {
                        Ok(Command::Empty) => {
                            build::empty_query_response(out);
                            continue;
                        }
                        Ok(cmd) => crate::execute(&cmd, ctl).await,
                        Err(e) => Err(e),
                    };
                    match r {
                        Ok(o) => o.encode_simple(out),
                        Err(e) => {
                            error(out, &e);
                            break;
                        }
                    }
                }
                build::ready_for_query(out, status);
            }
            b'S' => {
                self.skipping = false;
                self.in_batch = false;
                build::ready_for_query(out, status);
            }
            b'H' => {}
            b'X' => return Some(Flow::Terminate),
            _ => return self.extended(tag, body, ctl, out).await,
        }
        Some(Flow::Continue)
    }

    async fn extended(
        &mut self,
        tag: u8,
        body: &[u8],
        ctl: &dyn Control,
        out: &mut BytesMut,
    ) -> Option<Flow> {
        if self.surface == Surface::DataPort {
            // A PostgreSQL statement reusing a local name: forget ours, forward theirs.
            let reuse = match tag {
                b'P' => {
                    let (name, rest) = split_cstr(body);
                    (command::pool_show(cstr(rest)).is_none()).then(|| (b'S', lossy(name)))
                }
                b'B' => {
                    let (portal, rest) = split_cstr(body);
                    let (stmt, _) = split_cstr(rest);
                    (!self.statements.contains_key(lossy(stmt))).then(|| (b'P', lossy(portal)))
                }
                _ => None,
            };
            if let Some((kind, name)) = reuse {
                let name = name.to_string();
                self.forget(kind, &name);
                return None;
            }
        }
        self.in_batch = true;
        if self.skipping {
            return Some(Flow::Continue);
        }
        if let Err(e) = self.extended_step(tag, body, ctl, out).await {
            error(out, &e);
            self.skipping = true;
        }
        Some(Flow::Continue)
    }

    async fn extended_step(
        &mut self,
        tag: u8,
        body: &[u8],
        ctl: &dyn Control,
        out: &mut BytesMut,
    ) -> Result<(), AdminError> {
        match tag {
            b'P' => {
                let (name, rest) = split_cstr(body);
                let cmd = self.parse(&String::from_utf8_lossy(cstr(rest)))?;
                self.statements.insert(lossy(name).to_string(), cmd);
                out.extend_from_slice(&[b'1', 0, 0, 0, 4]);
            }
            b'B' => {
                let (portal, rest) = split_cstr(body);
                let (stmt, _) = split_cstr(rest);
                let cmd = self
                    .statements
                    .get(lossy(stmt))
                    .cloned()
                    .ok_or_else(|| missing("prepared statement", stmt))?;
                self.portals.insert(lossy(portal).to_string(), cmd);
                out.extend_from_slice(&[b'2', 0, 0, 0, 4]);
            }
            b'D' => {
                let (kind, name) = body.split_first().ok_or_else(malformed)?;
                let name = cstr(name);
                let cmd = match kind {
                    b'S' => self.statements.get(lossy(name)),
                    b'P' => self.portals.get(lossy(name)),
                    _ => return Err(malformed()),
                }
                .ok_or_else(|| missing("statement or portal", name))?;
                if *kind == b'S' {
                    // ParameterDescription: admin commands take no parameters.
                    out.extend_from_slice(&[b't', 0, 0, 0, 6, 0, 0]);
                }
                Output::encode_description(crate::columns(cmd), out);
            }
            b'E' => {
                let (portal, _) = split_cstr(body);
                let cmd = self
                    .portals
                    .get(lossy(portal))
                    .cloned()
                    .ok_or_else(|| missing("portal", portal))?;
                if cmd == Command::Empty {
                    build::empty_query_response(out);
                } else {
                    crate::execute(&cmd, ctl).await?.encode_rows(out);
                }
            }
            b'C' => {
                let (kind, name) = body.split_first().ok_or_else(malformed)?;
                let name = lossy(cstr(name)).to_string();
                self.forget(*kind, &name);
                out.extend_from_slice(&[b'3', 0, 0, 0, 4]);
            }
            _ => {
                return Err(AdminError::BadArgument(format!(
                    "message type '{}' is not supported here",
                    tag as char
                )))
            }
        }
        Ok(())
    }

    pub(crate) fn parse(&self, text: &str) -> Result<Command, AdminError> {
        let cmd = command::parse(text)?;
        if self.surface == Surface::DataPort && !matches!(cmd, Command::Pool(_) | Command::Empty) {
            return Err(AdminError::ConsoleOnly("this command"));
        }
        Ok(cmd)
    }

    fn forget(&mut self, kind: u8, name: &str) {
        match kind {
            b'S' => {
                self.statements.remove(name);
            }
            _ => {
                self.portals.remove(name);
            }
        }
    }
}

/// ErrorResponse for a failed admin command.
pub fn error(out: &mut BytesMut, e: &AdminError) {
    let message = e.to_string();
    let hint = e.hint();
    build::error_response(
        out,
        &ErrorFields {
            severity: "ERROR",
            code: e.sqlstate(),
            message: &message,
            detail: None,
            hint: hint.as_deref(),
        },
    );
}

fn missing(what: &str, name: &[u8]) -> AdminError {
    AdminError::BadArgument(format!("{what} \"{}\" does not exist", lossy(name)))
}

fn malformed() -> AdminError {
    AdminError::BadArgument(format!(
        "malformed message ({})",
        sqlstate::PROTOCOL_VIOLATION
    ))
}

/// The bytes up to the first NUL (all of them if there is none).
fn cstr(b: &[u8]) -> &[u8] {
    split_cstr(b).0
}

/// (bytes before the first NUL, bytes after it).
fn split_cstr(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&c| c == 0) {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &[]),
    }
}

fn lossy(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or("\u{fffd}")
}
