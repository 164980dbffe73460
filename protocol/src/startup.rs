//! The untagged first packet a client sends: SSLRequest, GSSENCRequest, CancelRequest or
//! StartupMessage.
//!
//! These packets have no tag byte, only a length and a 32-bit code, so they need their own parser.
//! [`parse_initial`] is cancel-safe like `frame`: it consumes nothing until a whole packet is
//! buffered, so the read loop can be dropped at any `.await` without losing bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use subtle::ConstantTimeEq;

use crate::sqlstate;

/// Code of an SSLRequest (1234.5679).
pub const SSL_REQUEST_CODE: i32 = 80877103;
/// Code of a GSSENCRequest (1234.5680).
pub const GSSENC_REQUEST_CODE: i32 = 80877104;
/// Code of a CancelRequest (1234.5678).
pub const CANCEL_REQUEST_CODE: i32 = 80877102;
/// Protocol version 3.0, the only one the proxy speaks to backends.
pub const PROTOCOL_3_0: i32 = 196608;
/// Largest initial packet accepted, length word included: PostgreSQL's
/// `MAX_STARTUP_PACKET_LENGTH` (10,000) bounds what follows the length word, so a client cannot
/// make the proxy buffer megabytes before it has authenticated.
pub const MAX_STARTUP_LEN: usize = 10_004;

/// Longest cancel secret: protocol 3.2 allows up to 256 bytes (3.0 uses exactly 4).
const MAX_CANCEL_SECRET: usize = 256;

/// Prefix of protocol options: PostgreSQL reserves every startup parameter named `_pq_.*`
/// (`strncmp(name, "_pq_.", 5)`) for protocol extensions and answers them, not a GUC.
pub const PROTOCOL_OPTION_PREFIX: &str = "_pq_.";

/// Longest user or database name a backend uses (`NAMEDATALEN - 1`): PostgreSQL cuts longer
/// ones from the startup packet, so pgpivot must authenticate and pool on the same name.
pub const MAX_NAME_LEN: usize = 63;

/// True for a protocol option (`_pq_.*`): never a session parameter, never sent to a backend.
pub fn is_protocol_option(name: &str) -> bool {
    name.starts_with(PROTOCOL_OPTION_PREFIX)
}

/// One parsed initial packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitialPacket {
    /// The client asks for TLS. After answering, the caller must check that no further bytes
    /// were buffered before the TLS handshake (CVE-2021-23214-style injection).
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// A cancel request on a fresh connection.
    Cancel(CancelKey),
    /// A normal session start.
    Startup(StartupMessage),
}

/// Process id and secret that identify a session to cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelKey {
    pub pid: i32,
    /// 4 bytes for protocol 3.0, 1..=256 bytes for 3.2.
    pub secret: Bytes,
}

impl CancelKey {
    /// Compares the secret in constant time, so a cancel flood cannot learn a key byte by byte.
    pub fn secret_eq(&self, other: &[u8]) -> bool {
        self.secret.as_ref().ct_eq(other).into()
    }
}

/// A StartupMessage: protocol version and the `name=value` parameters (user, database, GUCs).
///
/// As parsed, `user` and `database` are cut to [`MAX_NAME_LEN`] bytes like PostgreSQL does, and a
/// value that is not UTF-8 has been made one the way the backend would treat it (see
/// [`parse_initial`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub major: u16,
    pub minor: u16,
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// Value of a parameter. If a name repeats, the last one wins, as in PostgreSQL (which is also
    /// what a backend receiving [`StartupMessage::encode`]'s output will use).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `user` parameter; empty only for hand-built messages ([`parse_initial`] rejects those).
    pub fn user(&self) -> &str {
        self.get("user").unwrap_or("")
    }

    /// The `database` parameter, defaulting to the user name when absent or empty, as PostgreSQL
    /// does.
    pub fn database(&self) -> &str {
        match self.get("database") {
            Some(db) if !db.is_empty() => db,
            _ => self.user(),
        }
    }

    /// Protocol options (`_pq_.*`) in the order sent: the proxy implements none, so these are
    /// listed as unrecognised in NegotiateProtocolVersion, as PostgreSQL 15 does.
    pub fn protocol_options(&self) -> Vec<&str> {
        self.params
            .iter()
            .filter(|(k, _)| is_protocol_option(k))
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// Whether the client must be sent NegotiateProtocolVersion: it asked for a newer 3.x minor
    /// version or for protocol options (PostgreSQL's condition).
    pub fn needs_negotiation(&self) -> bool {
        self.minor > 0 || self.params.iter().any(|(k, _)| is_protocol_option(k))
    }

    /// Writes a protocol-3.0 StartupMessage with every parameter except `_pq_.*` ones: this is
    /// what the proxy sends to a backend after negotiating the client down to 3.0 (a backend
    /// would otherwise answer NegotiateProtocolVersion itself).
    pub fn encode(&self, buf: &mut BytesMut) {
        let start = buf.len();
        buf.put_i32(0); // patched below
        buf.put_i32(PROTOCOL_3_0);
        for (k, v) in self.params.iter().filter(|(k, _)| !is_protocol_option(k)) {
            put_cstr(buf, k);
            put_cstr(buf, v);
        }
        buf.put_u8(0);
        let len = (buf.len() - start) as i32;
        buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// Writes a string up to its first NUL (a NUL would end the C string early and shift every later
/// field), then the terminator.
fn put_cstr(buf: &mut BytesMut, s: &str) {
    let bytes = s.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    buf.put_slice(&bytes[..end]);
    buf.put_u8(0);
}

/// Why an initial packet was refused. As in PostgreSQL's `ProcessStartupPacket`, what only a
/// broken or hostile peer sends ([`StartupError::is_silent`]) closes the connection without a
/// reply; the rest is answered with a FATAL of [`StartupError::sqlstate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    /// Silent: PostgreSQL only logs it.
    #[error("invalid length of startup packet: {0}")]
    InvalidLength(i32),
    /// A CancelRequest without a whole key. Silent: PostgreSQL answers no cancel request.
    #[error("invalid length of cancel request")]
    BadCancel,
    #[error("invalid startup packet layout: expected terminator as last byte")]
    Layout,
    /// Answered in the pre-3.0 format when `major` is below 3 ([`StartupError::legacy_format`]).
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedVersion { major: u16, minor: u16 },
    /// A parameter name, or a value pgpivot cannot carry, that is not UTF-8 (PostgreSQL's words
    /// for a bad byte sequence).
    #[error("invalid byte sequence for encoding \"UTF8\": {0}")]
    InvalidEncoding(String),
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
    #[error("replication connections are not supported by this proxy")]
    Replication,
}

impl StartupError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            StartupError::InvalidLength(_) | StartupError::BadCancel | StartupError::Layout => {
                sqlstate::PROTOCOL_VIOLATION
            }
            StartupError::UnsupportedVersion { .. } | StartupError::Replication => {
                sqlstate::FEATURE_NOT_SUPPORTED
            }
            StartupError::NoUser => sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            StartupError::InvalidEncoding(_) => sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
        }
    }

    /// Closed without a reply (PostgreSQL logs these as COMMERROR and sends nothing).
    pub fn is_silent(&self) -> bool {
        matches!(
            self,
            StartupError::InvalidLength(_) | StartupError::BadCancel
        )
    }

    /// The client spoke a protocol older than 3.0: PostgreSQL answers with a pre-3.0 error
    /// message (see `build::legacy_error`), which such a client can read.
    pub fn legacy_format(&self) -> bool {
        matches!(self, StartupError::UnsupportedVersion { major, .. } if *major < 3)
    }
}

/// Parses the first packet of a connection.
///
/// `Ok(None)`: the packet is not complete yet and nothing was consumed. On success exactly one
/// packet is consumed; anything after it (e.g. a TLS ClientHello) stays in `buf`. The length is
/// validated before it is trusted, so a hostile length cannot make the caller buffer more than
/// [`MAX_STARTUP_LEN`] bytes.
pub fn parse_initial(buf: &mut BytesMut) -> Result<Option<InitialPacket>, StartupError> {
    let Some(len_bytes) = buf.get(..4) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    let len_usize = usize::try_from(len).map_err(|_| StartupError::InvalidLength(len))?;
    if !(8..=MAX_STARTUP_LEN).contains(&len_usize) {
        return Err(StartupError::InvalidLength(len));
    }
    if buf.len() < len_usize {
        return Ok(None);
    }
    let mut packet = buf.split_to(len_usize).freeze();
    packet.advance(4);
    let code = packet.get_i32();
    let parsed = match code {
        // PostgreSQL reads only the code: a body is ignored.
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => {
            if code == SSL_REQUEST_CODE {
                InitialPacket::SslRequest
            } else {
                InitialPacket::GssEncRequest
            }
        }
        CANCEL_REQUEST_CODE => {
            if packet.len() < 4 {
                return Err(StartupError::BadCancel);
            }
            let pid = packet.get_i32();
            if packet.is_empty() || packet.len() > MAX_CANCEL_SECRET {
                return Err(StartupError::BadCancel);
            }
            InitialPacket::Cancel(CancelKey {
                pid,
                secret: packet,
            })
        }
        _ => InitialPacket::Startup(parse_startup(code, &packet)?),
    };
    Ok(Some(parsed))
}

fn parse_startup(version: i32, body: &[u8]) -> Result<StartupMessage, StartupError> {
    let major = (version >> 16) as u16;
    let minor = (version & 0xffff) as u16;
    if major != 3 {
        return Err(StartupError::UnsupportedVersion { major, minor });
    }
    let mut params = Vec::new();
    let mut rest = body;
    loop {
        let (key, after_key) = split_cstr(rest)?;
        if key.is_empty() {
            if !after_key.is_empty() {
                return Err(StartupError::Layout);
            }
            break;
        }
        let (value, after_value) = split_cstr(after_key)?;
        let key = std::str::from_utf8(key).map_err(|e| invalid_encoding(key, e))?;
        let mut value = utf8_value(key, value)?;
        if key == "user" || key == "database" {
            clip_name(&mut value);
        }
        params.push((key.to_owned(), value));
        rest = after_value;
    }
    let msg = StartupMessage {
        major,
        minor,
        params,
    };
    if msg.user().is_empty() {
        return Err(StartupError::NoUser);
    }
    if let Some(replication) = msg.get("replication") {
        if !is_pg_false(replication) {
            return Err(StartupError::Replication);
        }
    }
    Ok(msg)
}

/// A parameter value as a `String`. PostgreSQL takes raw bytes; pgpivot keeps strings, so a
/// value that is not UTF-8 is converted only where the result is what the backend would make of
/// it anyway, and refused otherwise:
/// - `application_name`: PostgreSQL 15 replaces every byte outside printable ASCII with `?`
///   (`pg_clean_ascii`), so doing it here gives the same name;
/// - `user`: no role in a UTF-8 catalog has such a name, so a lossy copy (which matches no user
///   in pgpivot's list either) fails authentication exactly like the original would.
fn utf8_value(key: &str, value: &[u8]) -> Result<String, StartupError> {
    match std::str::from_utf8(value) {
        Ok(v) => Ok(v.to_owned()),
        Err(_) if key == "application_name" => Ok(value
            .iter()
            .map(|&b| {
                if (32..=126).contains(&b) {
                    b as char
                } else {
                    '?'
                }
            })
            .collect()),
        Err(_) if key == "user" => Ok(String::from_utf8_lossy(value).into_owned()),
        Err(e) => Err(invalid_encoding(value, e)),
    }
}

/// PostgreSQL's description of a bad sequence: the bytes of the character that starts at the
/// first invalid byte (as many as its lead byte announces), as `0xe9 0x20 0x78`.
fn invalid_encoding(bytes: &[u8], e: std::str::Utf8Error) -> StartupError {
    let bad = &bytes[e.valid_up_to()..];
    let announced = match bad.first() {
        Some(0xc0..=0xdf) => 2,
        Some(0xe0..=0xef) => 3,
        Some(0xf0..=0xf7) => 4,
        _ => 1,
    };
    let shown: Vec<String> = bad
        .iter()
        .take(announced)
        .map(|b| format!("0x{b:02x}"))
        .collect();
    StartupError::InvalidEncoding(shown.join(" "))
}

/// Cuts a user or database name to [`MAX_NAME_LEN`] bytes as PostgreSQL does. PostgreSQL cuts at
/// the byte, which can split a character; names of roles and databases were clipped on a
/// character boundary when they were created (`pg_mbcliplen`), so that is where this cuts too.
fn clip_name(name: &mut String) {
    if name.len() > MAX_NAME_LEN {
        let mut end = MAX_NAME_LEN;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
}

/// Splits off a NUL-terminated string; a missing NUL means the packet does not end with its
/// terminator (PostgreSQL's one word for every layout error).
fn split_cstr(data: &[u8]) -> Result<(&[u8], &[u8]), StartupError> {
    let nul = data
        .iter()
        .position(|&b| b == 0)
        .ok_or(StartupError::Layout)?;
    Ok((&data[..nul], &data[nul + 1..]))
}

/// True when PostgreSQL's `parse_bool` reads `value` as false: case-insensitive prefixes of
/// "false" and "no", "of"/"off", and "0". Everything else (true, "database", garbage) would be a
/// replication connection or a startup error on the backend, so the proxy refuses it.
fn is_pg_false(value: &str) -> bool {
    let v = value.to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| v.len() >= min && word.starts_with(v.as_str());
    prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || v == "0"
}

#[cfg(test)]
#[path = "startup_tests.rs"]
mod tests;
