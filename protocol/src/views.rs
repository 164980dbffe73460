//! Lazy, zero-copy views over single protocol messages.
//!
//! Convention: every function takes the message **body**, i.e. the bytes after the 5-byte header
//! (tag + length) that `frame` has already validated; the caller knows the tag. Nothing is
//! decoded until asked for and nothing is allocated except the SASL mechanism list.
//!
//! Input comes from peers, so every accessor validates lengths first and returns `None` for
//! malformed input instead of panicking.

/// Transaction status from ReadyForQuery ('Z'). Pooling decisions hinge on this: a server
/// connection can only be released when it is `Idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TxStatus {
    /// The wire byte (`I`, `T`, `E`), e.g. for [`crate::build::ready_for_query`].
    pub fn as_byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

/// Reads a ReadyForQuery body (exactly one status byte).
pub fn tx_status(body: &[u8]) -> Option<TxStatus> {
    match body {
        [b'I'] => Some(TxStatus::Idle),
        [b'T'] => Some(TxStatus::InTransaction),
        [b'E'] => Some(TxStatus::Failed),
        _ => None,
    }
}

/// Splits a NUL-terminated string off the front of `data`.
fn cstr(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = data.iter().position(|&b| b == 0)?;
    Some((&data[..nul], &data[nul + 1..]))
}

/// A body that is exactly one C string (Query, PasswordMessage): an interior NUL or trailing
/// bytes are rejected, as PostgreSQL does.
fn sole_cstr(body: &[u8]) -> Option<&[u8]> {
    match cstr(body)? {
        (s, []) => Some(s),
        _ => None,
    }
}

fn be_i32(data: &[u8]) -> Option<(i32, &[u8])> {
    let (head, rest) = data.split_first_chunk::<4>()?;
    Some((i32::from_be_bytes(*head), rest))
}

/// View over an ErrorResponse / NoticeResponse body: `(code byte, C string)*` then a 0 byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorView<'a> {
    body: &'a [u8],
}

impl<'a> ErrorView<'a> {
    /// Wraps a body without parsing it; fields are found on demand.
    pub fn new(body: &'a [u8]) -> Self {
        ErrorView { body }
    }

    /// Iterates `(code, value)` pairs, stopping at the terminator or at the first malformed field.
    pub fn fields(&self) -> impl Iterator<Item = (u8, &'a [u8])> + 'a {
        let mut rest = self.body;
        std::iter::from_fn(move || {
            let (&code, after) = rest.split_first()?;
            if code == 0 {
                return None;
            }
            let (value, after) = cstr(after)?;
            rest = after;
            Some((code, value))
        })
    }

    /// Raw value of the first field with this code (`b'C'`, `b'M'`, `b'D'`, ...).
    pub fn field(&self, code: u8) -> Option<&'a [u8]> {
        self.fields().find(|&(c, _)| c == code).map(|(_, v)| v)
    }

    fn text(&self, code: u8) -> Option<&'a str> {
        std::str::from_utf8(self.field(code)?).ok()
    }

    /// SQLSTATE ('C').
    pub fn sqlstate(&self) -> Option<&'a str> {
        self.text(b'C')
    }

    /// Primary message ('M'), if it is valid UTF-8.
    pub fn message(&self) -> Option<&'a str> {
        self.text(b'M')
    }

    /// Severity: the non-localised 'V' field when present (9.6+), else 'S'.
    pub fn severity(&self) -> Option<&'a str> {
        self.text(b'V').or_else(|| self.text(b'S'))
    }
}

/// ParameterStatus ('S') body: `(name, value)`.
pub fn parameter_status(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, rest) = cstr(body)?;
    let value = sole_cstr(rest)?;
    Some((name, value))
}

/// BackendKeyData ('K') body: `(pid, secret)`; the secret is 4 bytes in 3.0, up to 256 in 3.2.
pub fn backend_key_data(body: &[u8]) -> Option<(i32, &[u8])> {
    let (pid, secret) = be_i32(body)?;
    if secret.len() < 4 || secret.len() > 256 {
        return None;
    }
    Some((pid, secret))
}

/// An Authentication ('R') request from a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    Sasl {
        mechanisms: Vec<&'a str>,
    },
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    /// Kerberos, GSSAPI, SSPI, ...: methods the proxy cannot answer.
    Other(i32),
}

/// Reads an Authentication ('R') body.
pub fn auth_request(body: &[u8]) -> Option<AuthRequest<'_>> {
    let (code, rest) = be_i32(body)?;
    Some(match code {
        0 if rest.is_empty() => AuthRequest::Ok,
        3 if rest.is_empty() => AuthRequest::CleartextPassword,
        5 => AuthRequest::Md5Password {
            salt: <[u8; 4]>::try_from(rest).ok()?,
        },
        10 => {
            let mut mechanisms = Vec::new();
            let mut rest = rest;
            loop {
                let (name, after) = cstr(rest)?;
                if name.is_empty() {
                    if !after.is_empty() {
                        return None;
                    }
                    break;
                }
                mechanisms.push(std::str::from_utf8(name).ok()?);
                rest = after;
            }
            AuthRequest::Sasl { mechanisms }
        }
        11 => AuthRequest::SaslContinue(rest),
        12 => AuthRequest::SaslFinal(rest),
        0 | 3 => return None,
        other => AuthRequest::Other(other),
    })
}

/// What an authentication request code asks for, in words (for errors about methods the proxy
/// cannot answer).
pub fn auth_method_name(code: i32) -> &'static str {
    match code {
        0 => "none (trust)",
        2 => "Kerberos V5",
        3 => "cleartext password",
        5 => "MD5 password",
        6 => "SCM credentials",
        7 => "GSSAPI",
        8 => "GSSAPI continuation",
        9 => "SSPI",
        10 => "SASL",
        _ => "unknown",
    }
}

/// NegotiateProtocolVersion ('v') body: the newest protocol version the server supports (the
/// full code, `3 << 16 | minor`) and the protocol options it did not recognise. `None` if the
/// count does not match the names or bytes follow them.
pub fn negotiate_protocol_version(body: &[u8]) -> Option<(i32, Vec<&[u8]>)> {
    let (version, rest) = be_i32(body)?;
    let (count, mut rest) = be_i32(rest)?;
    let count = usize::try_from(count).ok()?;
    // Every name takes at least its NUL: a count larger than the body is a lie, and the
    // vector is never sized from it.
    if count > rest.len() {
        return None;
    }
    let mut names = Vec::with_capacity(count);
    for _ in 0..count {
        let (name, after) = cstr(rest)?;
        names.push(name);
        rest = after;
    }
    rest.is_empty().then_some((version, names))
}

/// Query ('Q') body: the SQL text without its NUL.
pub fn query_text(body: &[u8]) -> Option<&[u8]> {
    sole_cstr(body)
}

/// PasswordMessage ('p') body for cleartext / MD5: the password without its NUL.
pub fn password_message(body: &[u8]) -> Option<&[u8]> {
    sole_cstr(body)
}

/// SASLInitialResponse ('p') body: `(mechanism, data)`; a data length of -1 means no data.
pub fn sasl_initial_response(body: &[u8]) -> Option<(&str, Option<&[u8]>)> {
    let (mechanism, rest) = cstr(body)?;
    let mechanism = std::str::from_utf8(mechanism).ok()?;
    let (len, data) = be_i32(rest)?;
    if len == -1 {
        return data.is_empty().then_some((mechanism, None));
    }
    (usize::try_from(len).ok()? == data.len()).then_some((mechanism, Some(data)))
}

/// SASLResponse ('p') body: the whole body is the mechanism data.
pub fn sasl_response(body: &[u8]) -> &[u8] {
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_status_bytes() {
        for s in [TxStatus::Idle, TxStatus::InTransaction, TxStatus::Failed] {
            assert_eq!(tx_status(&[s.as_byte()]), Some(s));
        }
        assert_eq!(tx_status(b""), None);
        assert_eq!(tx_status(b"X"), None);
        assert_eq!(tx_status(b"II"), None);
    }

    #[test]
    fn error_view_fields() {
        let body = b"SERREUR\0VERROR\0C42601\0Msyntax error\0\0";
        let v = ErrorView::new(body);
        assert_eq!(v.severity(), Some("ERROR"));
        assert_eq!(v.sqlstate(), Some("42601"));
        assert_eq!(v.message(), Some("syntax error"));
        assert_eq!(v.field(b'H'), None);
        assert_eq!(v.fields().count(), 4);

        let old = ErrorView::new(b"SFATAL\0C28000\0\0");
        assert_eq!(old.severity(), Some("FATAL"));

        // truncated / malformed: stops cleanly, never panics
        for bad in [&b""[..], b"C", b"C4260", b"\0C42601\0", b"M\xff\0\0"] {
            let v = ErrorView::new(bad);
            assert_eq!(v.sqlstate(), None, "{bad:?}");
            assert_eq!(v.message(), None);
        }
    }

    #[test]
    fn parameter_status_and_key_data() {
        assert_eq!(
            parameter_status(b"TimeZone\0UTC\0"),
            Some((&b"TimeZone"[..], &b"UTC"[..]))
        );
        assert_eq!(parameter_status(b"a\0"), None);
        assert_eq!(parameter_status(b"a\0b\0c"), None);
        assert_eq!(parameter_status(b"a\0b"), None);

        assert_eq!(
            backend_key_data(&[0, 0, 0, 9, 1, 2, 3, 4]),
            Some((9, &[1, 2, 3, 4][..]))
        );
        assert_eq!(backend_key_data(&[0, 0, 0, 9, 1, 2, 3]), None);
        assert_eq!(backend_key_data(&[0, 0]), None);
        let mut long = vec![0u8; 4 + 257];
        assert_eq!(backend_key_data(&long), None);
        long.pop();
        assert!(backend_key_data(&long).is_some());
    }

    #[test]
    fn auth_requests() {
        assert_eq!(auth_request(&[0, 0, 0, 0]), Some(AuthRequest::Ok));
        assert_eq!(auth_request(&[0, 0, 0, 0, 1]), None);
        assert_eq!(
            auth_request(&[0, 0, 0, 3]),
            Some(AuthRequest::CleartextPassword)
        );
        assert_eq!(
            auth_request(&[0, 0, 0, 5, 9, 8, 7, 6]),
            Some(AuthRequest::Md5Password { salt: [9, 8, 7, 6] })
        );
        assert_eq!(auth_request(&[0, 0, 0, 5, 9, 8, 7]), None);
        assert_eq!(auth_request(b"\0\0\0\x0aSCRAM-SHA-256\0"), None);
        assert_eq!(auth_request(b"\0\0\0\x0aSCRAM-SHA-256\0\0x"), None);
        assert_eq!(
            auth_request(b"\0\0\0\x0a\0"),
            Some(AuthRequest::Sasl { mechanisms: vec![] })
        );
        assert_eq!(auth_request(&[0, 0, 0, 7]), Some(AuthRequest::Other(7)));
        assert_eq!(auth_request(&[0, 0, 0]), None);
        assert_eq!(auth_method_name(7), "GSSAPI");
        assert_eq!(auth_method_name(9), "SSPI");
        assert_eq!(auth_method_name(2), "Kerberos V5");
        assert_eq!(auth_method_name(99), "unknown");
    }

    #[test]
    fn negotiate_protocol_version_bodies() {
        let mut body = bytes::BytesMut::new();
        crate::build::negotiate_protocol_version(&mut body, 0, &["_pq_.a", "_pq_.b"]);
        let (version, names) = negotiate_protocol_version(&body[5..]).expect("valid");
        assert_eq!(version, 3 << 16);
        assert_eq!(names, vec![&b"_pq_.a"[..], &b"_pq_.b"[..]]);
        assert_eq!(
            negotiate_protocol_version(b"\0\x03\0\x02\0\0\0\0"),
            Some((0x30002, vec![]))
        );
        for bad in [
            &b"\0\x03\0\0\0\0\0\x01"[..],
            b"\0\x03\0\0\0\0\0\x01a",
            b"\0\x03\0\0\0\0\0\0x",
            b"\0\x03\0\0\xff\xff\xff\xff",
            b"\0\x03\0\0\x7f\xff\xff\xffa\0",
            b"\0\x03",
        ] {
            assert_eq!(negotiate_protocol_version(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn client_messages() {
        assert_eq!(query_text(b"SELECT 1\0"), Some(&b"SELECT 1"[..]));
        assert_eq!(query_text(b"SELECT 1"), None);
        assert_eq!(query_text(b"SEL\0ECT\0"), None);
        assert_eq!(query_text(b""), None);
        assert_eq!(password_message(b"secret\0"), Some(&b"secret"[..]));

        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(b"n,,");
        assert_eq!(
            sasl_initial_response(&body),
            Some(("SCRAM-SHA-256", Some(&b"n,,"[..])))
        );
        body.push(b'x');
        assert_eq!(sasl_initial_response(&body), None);
        body.truncate(body.len() - 2);
        assert_eq!(sasl_initial_response(&body), None);

        let mut none = b"M\0".to_vec();
        none.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(sasl_initial_response(&none), Some(("M", None)));
        none.extend_from_slice(&(-2i32).to_be_bytes());
        assert_eq!(sasl_initial_response(&none), None);
        assert_eq!(sasl_initial_response(b"M\0\0\0"), None);
        assert_eq!(sasl_response(b"c=biws"), b"c=biws");
    }

    #[test]
    fn arbitrary_bodies_never_panic() {
        let mut seed = 0xdead_beefu32;
        for n in 0..3000usize {
            let len = n % 24;
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    let b = (seed >> 16) as u8;
                    if b % 5 == 0 {
                        0
                    } else {
                        b % 16
                    }
                })
                .collect();
            let _ = tx_status(&body);
            let _ = ErrorView::new(&body).severity();
            let _ = parameter_status(&body);
            let _ = backend_key_data(&body);
            let _ = auth_request(&body);
            let _ = query_text(&body);
            let _ = sasl_initial_response(&body);
        }
    }
}
