//! `message_views`: the lazy typed views of `protocol::views` on an arbitrary message body, and
//! the builders of `protocol::build` read back through them.
//!
//! Invariants: a view that accepts a body describes all of it (re-encoding what it returned gives
//! the body back byte for byte); field values never contain the NUL that ends them; the
//! ErrorResponse field walk stays inside the body; what a builder writes, the matching view
//! reads back unchanged (up to the NUL the builder stops a C string at).

use bytes::BytesMut;
use pgpivot_protocol::build::{self, ErrorFields};
use pgpivot_protocol::frame::{read_frame, HEADER_LEN};
use pgpivot_protocol::views::{self, AuthRequest, ErrorView, TxStatus};

pub fn run(body: &[u8]) {
    views_on(body);
    builders_from(body);
}

fn views_on(body: &[u8]) {
    match views::tx_status(body) {
        Some(s) => assert_eq!(body, [s.as_byte()]),
        None => assert!(!matches!(body, [b'I' | b'T' | b'E'])),
    }

    let v = ErrorView::new(body);
    let mut used = 0;
    for (code, value) in v.fields() {
        assert_ne!(code, 0);
        assert!(!value.contains(&0));
        used += 1 + value.len() + 1;
    }
    assert!(used <= body.len(), "fields walk past the body");
    for code in [b'S', b'V', b'C', b'M', b'D'] {
        let first = v.fields().find(|&(c, _)| c == code).map(|(_, v)| v);
        assert_eq!(v.field(code), first);
    }
    if let Some(s) = v.sqlstate() {
        assert_eq!(Some(s.as_bytes()), v.field(b'C'));
    }
    if let Some(sev) = v.severity() {
        assert!(v.field(b'V') == Some(sev.as_bytes()) || v.field(b'S') == Some(sev.as_bytes()));
    }
    let _ = v.message();

    if let Some((name, value)) = views::parameter_status(body) {
        assert_eq!([name, b"\0", value, b"\0"].concat(), body);
    }
    if let Some((pid, secret)) = views::backend_key_data(body) {
        assert!((4..=256).contains(&secret.len()));
        assert_eq!([&pid.to_be_bytes()[..], secret].concat(), body);
    }
    for text in [views::query_text(body), views::password_message(body)]
        .into_iter()
        .flatten()
    {
        assert_eq!([text, b"\0"].concat(), body);
    }
    if let Some((mechanism, data)) = views::sasl_initial_response(body) {
        let mut again = [mechanism.as_bytes(), b"\0"].concat();
        match data {
            Some(d) => {
                again.extend_from_slice(&(d.len() as i32).to_be_bytes());
                again.extend_from_slice(d);
            }
            None => again.extend_from_slice(&(-1i32).to_be_bytes()),
        }
        assert_eq!(again, body);
    }
    assert_eq!(views::sasl_response(body), body);
    if let Some(req) = views::auth_request(body) {
        let mut out = BytesMut::new();
        match &req {
            AuthRequest::Ok => build::auth_ok(&mut out),
            AuthRequest::CleartextPassword => build::auth_cleartext_password(&mut out),
            AuthRequest::Md5Password { salt } => build::auth_md5_password(&mut out, *salt),
            AuthRequest::Sasl { mechanisms } => {
                assert!(mechanisms
                    .iter()
                    .all(|m| !m.is_empty() && !m.contains('\0')));
                build::auth_sasl(&mut out, mechanisms);
            }
            AuthRequest::SaslContinue(d) => build::auth_sasl_continue(&mut out, d),
            AuthRequest::SaslFinal(d) => build::auth_sasl_final(&mut out, d),
            AuthRequest::Other(code) => {
                assert!(!matches!(code, 0 | 3 | 5 | 10 | 11 | 12));
                return;
            }
        }
        assert_eq!(
            one_frame(&mut out, b'R'),
            body,
            "{req:?} re-encodes to its body"
        );
    }
}

/// Builds messages from pieces of the input and reads them back.
fn builders_from(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{1}');
    let mut next = || parts.next().unwrap_or("");
    let (severity, code, message, detail) = (next(), next(), next(), next());
    let upto_nul = |s: &str| s.split('\0').next().unwrap_or("").to_owned();

    let mut out = BytesMut::new();
    let fields = ErrorFields {
        severity,
        code,
        message,
        detail: (!detail.is_empty()).then_some(detail),
        hint: None,
    };
    build::error_response(&mut out, &fields);
    let body = one_frame(&mut out, b'E');
    let v = ErrorView::new(&body);
    assert_eq!(v.severity().map(str::to_owned), Some(upto_nul(severity)));
    assert_eq!(v.sqlstate().map(str::to_owned), Some(upto_nul(code)));
    assert_eq!(v.message().map(str::to_owned), Some(upto_nul(message)));
    assert_eq!(v.field(b'H'), None);
    assert_eq!(v.fields().count(), if detail.is_empty() { 4 } else { 5 });

    build::parameter_status(&mut out, severity, message);
    let body = one_frame(&mut out, b'S');
    let (name, value) = views::parameter_status(&body).expect("built ParameterStatus reads back");
    assert_eq!(name, upto_nul(severity).as_bytes());
    assert_eq!(value, upto_nul(message).as_bytes());

    let secret = &data[..data.len().min(256)];
    build::backend_key_data(&mut out, data.len() as i32, secret);
    let body = one_frame(&mut out, b'K');
    match views::backend_key_data(&body) {
        Some((pid, s)) => assert!(pid == data.len() as i32 && s == secret),
        None => assert!(secret.len() < 4),
    }

    for status in [TxStatus::Idle, TxStatus::InTransaction, TxStatus::Failed] {
        build::ready_for_query(&mut out, status.as_byte());
        assert_eq!(views::tx_status(&one_frame(&mut out, b'Z')), Some(status));
    }

    build::password_message(&mut out, data);
    let body = one_frame(&mut out, b'p');
    let sent = data.split(|&b| b == 0).next().unwrap_or_default();
    assert_eq!(views::password_message(&body), Some(sent));
}

/// Takes the one whole frame in `out`, checks its tag and length, and returns its body.
fn one_frame(out: &mut BytesMut, tag: u8) -> Vec<u8> {
    let frame = read_frame(out, usize::MAX)
        .expect("builders write valid lengths")
        .expect("builders write whole frames");
    assert!(out.is_empty(), "exactly one frame");
    assert_eq!(frame.tag(), tag);
    assert_eq!(frame.as_bytes().len(), HEADER_LEN + frame.body().len());
    frame.body().to_vec()
}
