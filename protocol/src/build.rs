//! Builders for the messages the proxy writes itself (as a server to clients, and the few
//! frontend messages it sends to backends).
//!
//! Each appends one complete frame to a caller-owned `BytesMut`, so replies can be batched into a
//! single write and nothing is allocated beyond the buffer. The length field is patched in after
//! the body is written, so it is always exact.
//!
//! C strings are written up to their first NUL: an embedded NUL would end the field early and
//! misalign every field after it, so it is truncated rather than sent.

use bytes::{BufMut, BytesMut};

/// Fields of an ErrorResponse / NoticeResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    /// "ERROR", "FATAL", "NOTICE", ... (never localised, so it is written as both S and V).
    pub severity: &'a str,
    /// SQLSTATE, see [`crate::sqlstate`].
    pub code: &'a str,
    pub message: &'a str,
    pub detail: Option<&'a str>,
    pub hint: Option<&'a str>,
}

/// One column of a RowDescription; always text format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec<'a> {
    pub name: &'a str,
    pub type_oid: u32,
}

/// Writes `tag`, a length placeholder, the body, then patches the length (which counts itself but
/// not the tag).
fn frame(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_u8(tag);
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - start - 1) as i32;
    buf[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    buf.put_slice(&s[..end]);
    buf.put_u8(0);
}

fn error_like(buf: &mut BytesMut, tag: u8, f: &ErrorFields<'_>) {
    frame(buf, tag, |b| {
        let fields = [
            (b'S', Some(f.severity)),
            (b'V', Some(f.severity)),
            (b'C', Some(f.code)),
            (b'M', Some(f.message)),
            (b'D', f.detail),
            (b'H', f.hint),
        ];
        for (code, value) in fields {
            if let Some(v) = value {
                b.put_u8(code);
                put_cstr(b, v.as_bytes());
            }
        }
        b.put_u8(0);
    });
}

/// ErrorResponse ('E').
pub fn error_response(buf: &mut BytesMut, fields: &ErrorFields<'_>) {
    error_like(buf, b'E', fields);
}

/// An error in the format before protocol 3.0: 'E' and one NUL-terminated line, no length
/// word. PostgreSQL answers so to a client that asked for protocol 1.x or 2.x (the only thing
/// such a client can read): `<severity>:  <message>` and a newline.
pub fn legacy_error(buf: &mut BytesMut, severity: &str, message: &str) {
    buf.put_u8(b'E');
    let line = format!("{severity}:  {message}\n");
    put_cstr(buf, line.as_bytes());
}

/// The same ErrorResponse with another severity (fields `S` and `V`), every other field as the
/// server wrote it: a server's ERROR for a SET pgpivot ran on a client's behalf becomes the
/// FATAL PostgreSQL gives for the same value in a startup packet. `None` if `error` is not a
/// well-formed ErrorResponse.
pub fn with_severity(error: &[u8], severity: &str) -> Option<BytesMut> {
    if error.first() != Some(&b'E') {
        return None;
    }
    let mut rest = error.get(5..)?;
    let mut out = BytesMut::with_capacity(error.len() + 8);
    let mut ok = false;
    frame(&mut out, b'E', |b| {
        while let Some((&code, after)) = rest.split_first() {
            if code == 0 {
                ok = true;
                break;
            }
            let Some(end) = after.iter().position(|&c| c == 0) else {
                break;
            };
            b.put_u8(code);
            match code {
                b'S' | b'V' => put_cstr(b, severity.as_bytes()),
                _ => put_cstr(b, &after[..end]),
            }
            rest = &after[end + 1..];
        }
        b.put_u8(0);
    });
    ok.then_some(out)
}

/// NoticeResponse ('N').
pub fn notice_response(buf: &mut BytesMut, fields: &ErrorFields<'_>) {
    error_like(buf, b'N', fields);
}

/// ParameterStatus ('S').
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    frame(buf, b'S', |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    });
}

/// BackendKeyData ('K'); `secret` is 4 bytes for protocol 3.0, up to 256 for 3.2.
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: &[u8]) {
    frame(buf, b'K', |b| {
        b.put_i32(pid);
        b.put_slice(secret);
    });
}

/// ReadyForQuery ('Z'); `status` is b'I', b'T' or b'E'.
pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    frame(buf, b'Z', |b| b.put_u8(status));
}

fn auth(buf: &mut BytesMut, code: i32, rest: impl FnOnce(&mut BytesMut)) {
    frame(buf, b'R', |b| {
        b.put_i32(code);
        rest(b);
    });
}

/// AuthenticationOk.
pub fn auth_ok(buf: &mut BytesMut) {
    auth(buf, 0, |_| {});
}

/// AuthenticationCleartextPassword.
pub fn auth_cleartext_password(buf: &mut BytesMut) {
    auth(buf, 3, |_| {});
}

/// AuthenticationMD5Password with its 4-byte salt.
pub fn auth_md5_password(buf: &mut BytesMut, salt: [u8; 4]) {
    auth(buf, 5, |b| b.put_slice(&salt));
}

/// AuthenticationSASL listing the offered mechanisms.
pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    auth(buf, 10, |b| {
        for m in mechanisms {
            put_cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}

/// AuthenticationSASLContinue (server-first-message).
pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    auth(buf, 11, |b| b.put_slice(data));
}

/// AuthenticationSASLFinal (server-final-message).
pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    auth(buf, 12, |b| b.put_slice(data));
}

/// NegotiateProtocolVersion ('v'): the newest 3.x minor version the proxy supports, and the
/// `_pq_.*` options it did not recognise.
///
/// The first field is written as the full version code `(3 << 16) | newest_minor`, not the bare
/// minor: that is what PostgreSQL sends (`PG_PROTOCOL_LATEST`) and what libpq checks; a bare `0`
/// would be read as "pre-3.0" and rejected by libpq 18.
pub fn negotiate_protocol_version(buf: &mut BytesMut, newest_minor: u16, unrecognized: &[&str]) {
    frame(buf, b'v', |b| {
        b.put_i32((3 << 16) | i32::from(newest_minor));
        b.put_i32(unrecognized.len() as i32);
        for opt in unrecognized {
            put_cstr(b, opt.as_bytes());
        }
    });
}

/// `typlen` of the built-in types the proxy reports (admin console); -1 (varlena) otherwise.
fn type_len(oid: u32) -> i16 {
    match oid {
        16 | 18 => 1,                // bool, char
        21 => 2,                     // int2
        23 | 26 | 700 => 4,          // int4, oid, float4
        20 | 701 | 1184 | 1114 => 8, // int8, float8, timestamptz, timestamp
        _ => -1,                     // text (25) and other variable-length types
    }
}

/// RowDescription ('T') for text-format columns not tied to a table.
pub fn row_description(buf: &mut BytesMut, fields: &[FieldSpec<'_>]) {
    frame(buf, b'T', |b| {
        b.put_i16(fields.len() as i16);
        for f in fields {
            put_cstr(b, f.name.as_bytes());
            b.put_u32(0); // table oid
            b.put_i16(0); // column attribute number
            b.put_u32(f.type_oid);
            b.put_i16(type_len(f.type_oid));
            b.put_i32(-1); // typmod
            b.put_i16(0); // text format
        }
    });
}

/// DataRow ('D'); `None` is SQL NULL.
pub fn data_row(buf: &mut BytesMut, values: &[Option<&[u8]>]) {
    frame(buf, b'D', |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
    });
}

/// CommandComplete ('C'), e.g. "SELECT 3".
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    frame(buf, b'C', |b| put_cstr(b, tag.as_bytes()));
}

/// EmptyQueryResponse ('I').
pub fn empty_query_response(buf: &mut BytesMut) {
    frame(buf, b'I', |_| {});
}

/// PasswordMessage ('p') carrying a cleartext or MD5 password. postgres-protocol has one too, but
/// it is fallible; this one matches the other builders (an embedded NUL is truncated).
pub fn password_message(buf: &mut BytesMut, password: &[u8]) {
    frame(buf, b'p', |b| put_cstr(b, password));
}

/// Terminate ('X').
pub fn terminate(buf: &mut BytesMut) {
    frame(buf, b'X', |_| {});
}

/// Sync ('S', frontend).
pub fn sync(buf: &mut BytesMut) {
    frame(buf, b'S', |_| {});
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::{self, AuthRequest, ErrorView, TxStatus};
    use fallible_iterator::FallibleIterator;
    use postgres_protocol::message::{backend::Message, frontend};

    /// Builds one frame and returns (tag, body) after checking the length field.
    fn frame_of(f: impl Fn(&mut BytesMut)) -> (u8, Vec<u8>) {
        let mut buf = BytesMut::new();
        f(&mut buf);
        let len = i32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
        assert_eq!(len + 1, buf.len());
        (buf[0], buf[5..].to_vec())
    }

    /// Parses the built frame with postgres-protocol, which must consume all of it.
    fn pg(f: impl Fn(&mut BytesMut)) -> Message {
        let mut buf = BytesMut::new();
        f(&mut buf);
        let msg = Message::parse(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        msg
    }

    #[test]
    fn an_error_with_another_severity() {
        let mut server = BytesMut::new();
        error_response(
            &mut server,
            &ErrorFields {
                severity: "ERROR",
                code: "22023",
                message: "invalid value for parameter \"statement_timeout\": \"x\"",
                detail: None,
                hint: Some("Valid units are \"ms\"."),
            },
        );
        let fatal = with_severity(&server, "FATAL").expect("well formed");
        let v = ErrorView::new(&fatal[5..]);
        assert_eq!(v.severity(), Some("FATAL"));
        assert_eq!(v.sqlstate(), Some("22023"));
        assert_eq!(
            v.message(),
            Some("invalid value for parameter \"statement_timeout\": \"x\"")
        );
        let len = i32::from_be_bytes(fatal[1..5].try_into().unwrap()) as usize;
        assert_eq!(len + 1, fatal.len());
        assert_eq!(fatal.len(), server.len(), "ERROR and FATAL are as long");
        for bad in [
            &b""[..],
            b"Z\0\0\0\x04",
            b"E\0\0\0\x06Sx",
            &server[..server.len() - 1],
        ] {
            assert!(with_severity(bad, "FATAL").is_none(), "{bad:?}");
        }
    }

    #[test]
    fn legacy_error_is_one_line_without_a_length() {
        let mut buf = BytesMut::new();
        legacy_error(&mut buf, "FATAL", "unsupported frontend protocol 2.0");
        assert_eq!(&buf[..], b"EFATAL:  unsupported frontend protocol 2.0\n\0");
    }

    #[test]
    fn error_and_notice_round_trip() {
        let f = ErrorFields {
            severity: "FATAL",
            code: "28P01",
            message: "password authentication failed for user \"bob\"",
            detail: Some("d"),
            hint: None,
        };
        let (tag, body) = frame_of(|b| error_response(b, &f));
        assert_eq!(tag, b'E');
        let v = ErrorView::new(&body);
        assert_eq!(
            (v.severity(), v.field(b'S')),
            (Some("FATAL"), Some(&b"FATAL"[..]))
        );
        assert_eq!(
            (v.sqlstate(), v.message()),
            (Some("28P01"), Some(f.message))
        );
        assert_eq!((v.field(b'D'), v.field(b'H')), (Some(&b"d"[..]), None));
        assert!(matches!(
            pg(|b| error_response(b, &f)),
            Message::ErrorResponse(_)
        ));
        assert!(matches!(
            pg(|b| notice_response(b, &f)),
            Message::NoticeResponse(_)
        ));
    }

    #[test]
    fn session_messages_round_trip() {
        let (_, body) = frame_of(|b| parameter_status(b, "a\0b", "v"));
        assert_eq!(views::parameter_status(&body), Some((&b"a"[..], &b"v"[..])));
        let Message::ParameterStatus(p) = pg(|b| parameter_status(b, "server_version", "17"))
        else {
            panic!()
        };
        assert_eq!(
            (p.name().unwrap(), p.value().unwrap()),
            ("server_version", "17")
        );

        let (_, body) = frame_of(|b| backend_key_data(b, 77, &[0, 0, 1, 2]));
        assert_eq!(
            views::backend_key_data(&body),
            Some((77, &[0, 0, 1, 2][..]))
        );
        let Message::BackendKeyData(k) = pg(|b| backend_key_data(b, 77, &[0, 0, 1, 2])) else {
            panic!()
        };
        assert_eq!((k.process_id(), k.secret_key()), (77, 258));

        let (_, body) = frame_of(|b| ready_for_query(b, b'T'));
        assert_eq!(views::tx_status(&body), Some(TxStatus::InTransaction));
        let Message::CommandComplete(c) = pg(|b| command_complete(b, "SELECT 1")) else {
            panic!()
        };
        assert_eq!(c.tag().unwrap(), "SELECT 1");
        assert!(matches!(
            pg(empty_query_response),
            Message::EmptyQueryResponse
        ));
    }

    #[test]
    fn auth_messages_round_trip() {
        let check = |f: &dyn Fn(&mut BytesMut), want: AuthRequest<'_>| {
            let (tag, body) = frame_of(f);
            assert_eq!((tag, views::auth_request(&body)), (b'R', Some(want)));
            pg(f)
        };
        assert!(matches!(
            check(&auth_ok, AuthRequest::Ok),
            Message::AuthenticationOk
        ));
        let clear = check(&auth_cleartext_password, AuthRequest::CleartextPassword);
        assert!(matches!(clear, Message::AuthenticationCleartextPassword));
        let md5 = AuthRequest::Md5Password { salt: [1, 2, 3, 4] };
        let Message::AuthenticationMd5Password(m) =
            check(&|b| auth_md5_password(b, [1, 2, 3, 4]), md5)
        else {
            panic!()
        };
        assert_eq!(m.salt(), [1, 2, 3, 4]);
        let mechanisms = vec!["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"];
        let sasl = check(
            &|b| auth_sasl(b, &mechanisms),
            AuthRequest::Sasl {
                mechanisms: mechanisms.clone(),
            },
        );
        assert!(matches!(sasl, Message::AuthenticationSasl(_)));
        let cont = check(
            &|b| auth_sasl_continue(b, b"r=a"),
            AuthRequest::SaslContinue(b"r=a"),
        );
        assert!(matches!(cont, Message::AuthenticationSaslContinue(c) if c.data() == b"r=a"));
        let fin = check(
            &|b| auth_sasl_final(b, b"v=x"),
            AuthRequest::SaslFinal(b"v=x"),
        );
        assert!(matches!(fin, Message::AuthenticationSaslFinal(c) if c.data() == b"v=x"));
    }

    #[test]
    fn negotiate_protocol_version_layout() {
        let (tag, body) = frame_of(|b| negotiate_protocol_version(b, 0, &["_pq_.a", "_pq_.b"]));
        assert_eq!(tag, b'v');
        assert_eq!(body, b"\0\x03\0\0\0\0\0\x02_pq_.a\0_pq_.b\0");
    }

    #[test]
    fn row_description_and_data_row() {
        let cols = [("name", 25), ("n", 23), ("big", 20)]
            .map(|(name, type_oid)| FieldSpec { name, type_oid });
        let Message::RowDescription(rd) = pg(|b| row_description(b, &cols)) else {
            panic!()
        };
        let got: Vec<_> = rd
            .fields()
            .map(|f| {
                Ok((
                    f.name().to_owned(),
                    f.type_oid(),
                    f.type_size(),
                    f.type_modifier(),
                    f.format(),
                ))
            })
            .collect()
            .unwrap();
        let want = [("name", 25, -1), ("n", 23, 4), ("big", 20, 8)];
        let want: Vec<_> = want
            .iter()
            .map(|&(n, o, l)| (n.to_owned(), o, l, -1, 0))
            .collect();
        assert_eq!(got, want);

        let Message::DataRow(row) = pg(|b| data_row(b, &[Some(b"x"), None, Some(b"")])) else {
            panic!()
        };
        let values: Vec<Option<Vec<u8>>> = row
            .ranges()
            .map(|r| Ok(r.map(|r| row.buffer()[r].to_vec())))
            .collect()
            .unwrap();
        assert_eq!(values, vec![Some(b"x".to_vec()), None, Some(Vec::new())]);
    }

    #[test]
    fn frontend_messages_match_postgres_protocol() {
        let (_, body) = frame_of(|b| password_message(b, b"md5abc"));
        assert_eq!(views::password_message(&body), Some(&b"md5abc"[..]));
        let (mut ours, mut theirs) = (BytesMut::new(), BytesMut::new());
        password_message(&mut ours, b"md5abc");
        terminate(&mut ours);
        sync(&mut ours);
        frontend::password_message(b"md5abc", &mut theirs).unwrap();
        frontend::terminate(&mut theirs);
        frontend::sync(&mut theirs);
        assert_eq!(ours, theirs);
    }
}
