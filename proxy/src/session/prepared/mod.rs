//! Protocol-level prepared statements, by pool mode.
//!
//! * **Session pooling** ([`Naming::PassThrough`]): the server connection belongs to the client,
//!   so statement names reach the server unchanged — Close closes, `pg_prepared_statements`
//!   lists the client's names, errors are the server's own. pgpivot still remembers each
//!   statement so that after a transparent failover it can prepare it again, under the client's
//!   name, on the new primary's connection before its first use — see `pass_through.rs`.
//! * **Transaction pooling** ([`Naming::Global`], PgBouncer 1.21-style): a client's `Parse "s1"`
//!   may run on one server connection and its later `Bind "s1"` on another. So pgpivot owns the
//!   naming: a client's statement name maps to a [`StatementDef`] whose *global* name is derived
//!   from the statement's content, and each server connection remembers which global names it
//!   has prepared ([`ServerStatements`], capped). Identical statements from many clients share
//!   one server-side statement per server connection — see `rewrite.rs`.
//!
//! SQL that drops statements (`DEALLOCATE`, `DISCARD ALL`) is followed to its CommandComplete
//! so both maps stay true (`resets.rs`). The module is sans-IO; its two halves share the
//! per-client [`ResponsePlan`]:
//!
//! * [`rewrite_client_message`] (client→server): renames, prepares lazily, and answers
//!   `Parse`/`Close` of cached statements.
//! * [`ResponsePlan`] (server→client): fixes up the response stream so the client sees exactly
//!   what PostgreSQL would have sent it — see `responses.rs`.
//!
//! Whenever pgpivot answers a client message itself, it still sends the server a side-effect-free
//! *probe* (`Close` or `Describe` of [`PROBE_NAME`], which never exists) so that the server's
//! reply marks the exact place in the stream where the client's answer belongs, and so that the
//! server's own skip-until-Sync error handling covers it.

mod pass_through;
mod resets;
mod responses;
mod rewrite;
mod server;
mod siphash;
mod special;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod sim_backend;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};

pub use responses::{command_clears_statements, PlanError, ResponsePlan};
pub use rewrite::{
    is_statement_message, query_streamed, rewrite_client_message, rewrite_with_resets, Rewrite,
};
pub use server::{ServerStatements, MAX_STATEMENTS_PER_SERVER};

use siphash::SipHasher24;

use crate::session::sql::Reset;

/// Part of every global statement's content address, bumped when the schema may have changed:
/// a DDL statement completed (`CREATE`, `ALTER`, `DROP`), or the server refused a statement
/// because a schema change altered its result type ("cached plan must not change result type";
/// the DDL may have run elsewhere). A statement keeps the plan it was prepared with, in
/// PostgreSQL as here: a client executing it again gets the same error, as it would directly.
/// But a client that prepares the same text again must get a fresh plan, not the shared stale
/// statement: from the bump on, the text has a new address, so it is prepared anew.
/// Process-wide: a spurious bump costs only preparing again.
static PLAN_EPOCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The schema may have changed: statements prepared from now on get new addresses.
pub fn plans_invalidated() {
    PLAN_EPOCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

pub(super) fn plan_epoch() -> u64 {
    PLAN_EPOCH.load(std::sync::atomic::Ordering::Relaxed)
}

/// Default cap on one client's named statements: PostgreSQL has none, but here every one of them
/// costs proxy memory and may be prepared on every server connection.
pub const MAX_STATEMENTS_PER_CLIENT: usize = 10_000;

/// Distinct statements pgpivot remembers as accepted by some server (for
/// [`parse_offline`]): a bound on what a stream of ever-new statement texts can cost.
pub const MAX_KNOWN_STATEMENTS: usize = 100_000;

/// Prefix of every server-side name pgpivot creates.
pub const GLOBAL_PREFIX: &str = "pgpivot_";

/// A statement name that is never prepared on any server (not `pgpivot_` + 16 hex digits), used by
/// the probes: `Close` of it always succeeds, `Describe` of it always fails with 26000.
pub const PROBE_NAME: &[u8] = b"pgpivot_none";

/// `42P05` duplicate_prepared_statement.
pub const DUPLICATE_PSTATEMENT: &str = "42P05";
/// `26000` invalid_sql_statement_name (unknown prepared statement).
pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";

/// Why a client message could not be handled as PostgreSQL would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepError {
    #[error("prepared statement \"{0}\" already exists")]
    AlreadyExists(String),
    #[error("prepared statement \"{0}\" does not exist")]
    DoesNotExist(String),
    #[error("too many prepared statements (at most {0} per connection)")]
    TooMany(usize),
    /// The message body is malformed (PostgreSQL: an ERROR, then skip to Sync).
    #[error("invalid {0} message format")]
    Malformed(&'static str),
    /// What was passed is not one frame of the stated type (or is too close to the `i32`
    /// length limit to rename): a caller bug, end the session.
    #[error("invalid frontend message framing")]
    BadFrame,
}

impl PrepError {
    pub fn sqlstate(&self) -> &'static str {
        use pgpivot_protocol::sqlstate;
        match self {
            PrepError::AlreadyExists(_) => DUPLICATE_PSTATEMENT,
            PrepError::DoesNotExist(_) => INVALID_SQL_STATEMENT_NAME,
            PrepError::TooMany(_) => sqlstate::PROGRAM_LIMIT_EXCEEDED,
            PrepError::Malformed(_) | PrepError::BadFrame => sqlstate::PROTOCOL_VIOLATION,
        }
    }

    /// Only a broken frame ends the session; the others are ordinary statement errors that the
    /// client receives in the response stream (see [`Rewrite::Rejected`]).
    pub fn is_fatal(&self) -> bool {
        matches!(self, PrepError::BadFrame)
    }
}

/// One statement definition: the Parse message's content minus its name.
#[derive(Debug, PartialEq, Eq)]
pub struct StatementDef {
    /// `pgpivot_<16 hex>`: the name it has on every server connection.
    pub global_name: String,
    /// Keyed 64-bit hash of (query text, parameter type OIDs).
    pub hash: u64,
    /// The Parse message re-encoded with `global_name`, ready to send to any server.
    pub parse_frame: Bytes,
}

impl StatementDef {
    /// `query` is the SQL text without its NUL; `params` is the raw parameter section of the
    /// Parse body (int16 count, then the OIDs), copied as is.
    pub fn new(query: &[u8], params: &[u8]) -> Result<Self, PrepError> {
        Self::in_epoch(query, params, plan_epoch())
    }

    /// [`StatementDef::new`] as prepared in plan epoch `epoch`.
    pub fn in_epoch(query: &[u8], params: &[u8], epoch: u64) -> Result<Self, PrepError> {
        let mut h = SipHasher24::new(hash_key());
        h.write(query);
        // The query cannot contain a NUL, so this separator makes the encoding unambiguous.
        h.write(&[0]);
        h.write(params);
        h.write(&epoch.to_le_bytes());
        let hash = h.finish();
        let global_name = format!("{GLOBAL_PREFIX}{hash:016x}");
        let mut frame = BytesMut::new();
        put_frame(
            &mut frame,
            b'P',
            &[global_name.as_bytes(), b"\0", query, b"\0", params],
        )
        .map_err(|_| PrepError::BadFrame)?;
        Ok(StatementDef {
            global_name,
            hash,
            parse_frame: frame.freeze(),
        })
    }

    /// The Parse body after the statement name: query text, NUL, parameter types.
    pub fn definition(&self) -> &[u8] {
        self.parse_frame
            .get(5 + self.global_name.len() + 1..)
            .unwrap_or_default()
    }
}

/// Whose names the server sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Naming {
    /// Content-addressed `pgpivot_<hash>` names, shared by the clients of a server connection
    /// (transaction pooling).
    #[default]
    Global,
    /// The client's own names: the server connection is the client's (session pooling).
    PassThrough,
}

/// One client's named statements, by the client's own names.
#[derive(Debug)]
pub struct ClientStatements {
    by_name: HashMap<Vec<u8>, Arc<StatementDef>>,
    limit: usize,
    naming: Naming,
    /// Statements whose text drops statements (`DEALLOCATE ...`), by name (`""`: the unnamed
    /// one): what binding one (to execute it) drops. Almost always empty.
    watches: HashMap<Vec<u8>, Vec<Reset>>,
}

impl Default for ClientStatements {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientStatements {
    pub fn new() -> Self {
        Self::with_limit(MAX_STATEMENTS_PER_CLIENT)
    }

    pub fn with_limit(limit: usize) -> Self {
        ClientStatements {
            by_name: HashMap::new(),
            limit,
            naming: Naming::Global,
            watches: HashMap::new(),
        }
    }

    /// Set once, when the session starts (the pool mode).
    pub fn set_naming(&mut self, naming: Naming) {
        self.naming = naming;
    }

    pub fn naming(&self) -> Naming {
        self.naming
    }

    pub fn get(&self, name: &[u8]) -> Option<&Arc<StatementDef>> {
        self.by_name.get(name)
    }

    /// Forgets one name (the caller's own bookkeeping; a client's Close goes through
    /// [`rewrite_client_message`]).
    pub fn remove(&mut self, name: &[u8]) -> Option<Arc<StatementDef>> {
        self.forget_watch(name);
        self.by_name.remove(name)
    }

    /// DISCARD ALL / DEALLOCATE ALL: every name is gone, as on a real session.
    pub fn clear(&mut self) {
        self.by_name.clear();
        self.watches.clear();
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    fn insert(&mut self, name: &[u8], def: Arc<StatementDef>) {
        self.by_name.insert(name.to_vec(), def);
    }

    /// Statement `name` (`""`: the unnamed one) was parsed with a text that drops statements.
    fn set_watch(&mut self, name: &[u8], resets: Vec<Reset>) {
        if self.watches.len() < self.limit || self.watches.contains_key(name) {
            self.watches.insert(name.to_vec(), resets);
        }
    }

    /// Statement `name` was parsed again (or is gone).
    #[inline]
    fn forget_watch(&mut self, name: &[u8]) {
        if !self.watches.is_empty() {
            self.watches.remove(name);
        }
    }

    /// A simple Query ends the unnamed statement.
    #[inline]
    fn forget_unnamed_watch(&mut self) {
        self.forget_watch(b"");
    }

    /// Some statement's text drops statements.
    #[inline]
    fn has_watches(&self) -> bool {
        !self.watches.is_empty()
    }

    /// What binding statement `name` drops, if its text drops statements.
    fn watch_for(&self, name: &[u8]) -> Option<Vec<Reset>> {
        self.watches.get(name).cloned()
    }

    /// Every name, for a drop of all of them that may still be undone.
    fn take_all(&mut self) -> HashMap<Vec<u8>, Arc<StatementDef>> {
        std::mem::take(&mut self.by_name)
    }

    /// Undo of [`Self::take_all`]: names defined again meanwhile keep their new meaning.
    fn merge(&mut self, names: HashMap<Vec<u8>, Arc<StatementDef>>) {
        for (name, def) in names {
            self.by_name.entry(name).or_insert(def);
        }
    }

    /// Undo of a Parse: only if `name` still means that Parse's statement (a later batch may
    /// already have re-used the name).
    fn remove_if_same(&mut self, name: &[u8], def: &Arc<StatementDef>) {
        if self.by_name.get(name).is_some_and(|d| Arc::ptr_eq(d, def)) {
            self.by_name.remove(name);
        }
    }

    /// Undo of a Close: only if the name was not defined again meanwhile.
    fn restore(&mut self, name: &[u8], def: &Arc<StatementDef>) {
        if !self.by_name.contains_key(name) {
            self.by_name.insert(name.to_vec(), Arc::clone(def));
        }
    }
}

/// Answers a client's `Parse` + `Sync` without a server connection, when the statement is one
/// some server connection has already prepared successfully (`known`). Transaction pooling needs
/// this: a client that prepares synchronously (libpq `PQprepare`, pgbench `-M prepared`) while
/// every connection is held by its own other sessions would otherwise wait on itself. Returns
/// false (nothing changed) when the server must judge the Parse.
pub fn parse_offline(
    frame: &[u8],
    client: &mut ClientStatements,
    known: impl Fn(u64) -> bool,
) -> bool {
    let Some(body) = frame.get(5..) else {
        return false;
    };
    let Some((name, rest)) = cstr(body) else {
        return false;
    };
    let Some((query, params)) = cstr(rest) else {
        return false;
    };
    if name.is_empty() || client.get(name).is_some() || client.len() >= client.limit() {
        return false;
    }
    let Some((count, oids)) = params.split_first_chunk::<2>() else {
        return false;
    };
    if oids.len() != 4 * usize::from(u16::from_be_bytes(*count)) {
        return false;
    }
    let Ok(def) = StatementDef::new(query, params) else {
        return false;
    };
    if !known(def.hash) {
        return false;
    }
    client.insert(name, Arc::new(def));
    true
}

/// The statement hash key, random per process. A fixed, public key would let a client craft a
/// query whose global name collides with another client's statement and so have its own SQL run
/// in the other client's place; with a secret key that takes ~2^64 guesses. Names only need to
/// be stable while the process (and so every server connection) lives.
fn hash_key() -> (u64, u64) {
    static KEY: OnceLock<(u64, u64)> = OnceLock::new();
    *KEY.get_or_init(rand::random)
}

/// Splits a NUL-terminated string off the front of `data`.
fn cstr(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = data.iter().position(|&b| b == 0)?;
    Some((&data[..nul], &data[nul + 1..]))
}

/// The frame's length field is larger than PostgreSQL (or `i32`) allows.
#[derive(Debug)]
struct TooLong;

/// Appends one frame whose body is the concatenation of `parts`, with an exact length field.
fn put_frame(out: &mut BytesMut, tag: u8, parts: &[&[u8]]) -> Result<(), TooLong> {
    let body: usize = parts.iter().map(|p| p.len()).sum();
    let len = i32::try_from(body + 4).map_err(|_| TooLong)?;
    out.reserve(body + 5);
    out.put_u8(tag);
    out.put_i32(len);
    for p in parts {
        out.put_slice(p);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_names_are_content_addressed() {
        let params = [0u8, 1, 0, 0, 0, 23];
        let a = StatementDef::new(b"SELECT $1", &params).unwrap();
        let b = StatementDef::new(b"SELECT $1", &params).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.global_name.len(), GLOBAL_PREFIX.len() + 16);
        assert!(a.global_name.starts_with(GLOBAL_PREFIX));
        assert!(a.global_name[GLOBAL_PREFIX.len()..]
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a.global_name.as_bytes(), PROBE_NAME);
        // Different parameter types or text: a different statement.
        let c = StatementDef::new(b"SELECT $1", &[0, 1, 0, 0, 0, 25]).unwrap();
        let d = StatementDef::new(b"SELECT $2", &params).unwrap();
        let e = StatementDef::new(b"SELECT $1", &[0, 0]).unwrap();
        // After plans were invalidated the same text is a new statement.
        let epoch = plan_epoch();
        let f = StatementDef::in_epoch(b"SELECT $1", &params, epoch).unwrap();
        let g = StatementDef::in_epoch(b"SELECT $1", &params, epoch + 1).unwrap();
        assert_eq!(f.hash, a.hash);
        assert_ne!(g.hash, a.hash);
        assert!(a.hash != c.hash && a.hash != d.hash && a.hash != e.hash && c.hash != e.hash);
        // The Parse frame is exact.
        let f = &a.parse_frame;
        let len = i32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize;
        assert_eq!((f[0], len + 1), (b'P', f.len()));
        let mut body = a.global_name.as_bytes().to_vec();
        body.extend_from_slice(b"\0SELECT $1\0");
        body.extend_from_slice(&params);
        assert_eq!(&f[5..], &body[..]);
    }

    #[test]
    fn client_statements_undo_helpers() {
        let d1 = Arc::new(StatementDef::new(b"SELECT 1", &[0, 0]).unwrap());
        let d2 = Arc::new(StatementDef::new(b"SELECT 2", &[0, 0]).unwrap());
        let mut c = ClientStatements::with_limit(3);
        c.insert(b"s", Arc::clone(&d2));
        c.remove_if_same(b"s", &d1);
        assert!(c.get(b"s").is_some_and(|d| Arc::ptr_eq(d, &d2)));
        c.restore(b"s", &d1);
        assert!(c.get(b"s").is_some_and(|d| Arc::ptr_eq(d, &d2)));
        c.remove_if_same(b"s", &d2);
        assert!(c.is_empty());
        c.restore(b"s", &d1);
        assert_eq!((c.len(), c.limit()), (1, 3));
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn error_codes() {
        assert_eq!(PrepError::AlreadyExists("a".into()).sqlstate(), "42P05");
        assert_eq!(PrepError::DoesNotExist("a".into()).sqlstate(), "26000");
        assert_eq!(PrepError::TooMany(1).sqlstate(), "54000");
        assert_eq!(PrepError::Malformed("Bind").sqlstate(), "08P01");
        assert!(!PrepError::Malformed("Bind").is_fatal());
        assert!(PrepError::BadFrame.is_fatal());
        assert!(!PrepError::TooMany(1).is_fatal());
        assert_eq!(
            PrepError::DoesNotExist("s1".into()).to_string(),
            "prepared statement \"s1\" does not exist"
        );
    }
}
