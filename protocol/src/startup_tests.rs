//! Parsing of the untagged first packet: lengths, codes, parameters, and what PostgreSQL does
//! with odd values (long names, non-UTF-8 bytes, protocol options).

use super::*;

fn startup_packet(version: i32, body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i32((8 + body.len()) as i32);
    b.put_i32(version);
    b.put_slice(body);
    b
}

fn parse_one(mut b: BytesMut) -> Result<Option<InitialPacket>, StartupError> {
    parse_initial(&mut b)
}

#[test]
fn ssl_request_keeps_following_bytes() {
    let mut b = startup_packet(SSL_REQUEST_CODE, b"");
    b.put_slice(b"\x16\x03");
    assert_eq!(parse_initial(&mut b), Ok(Some(InitialPacket::SslRequest)));
    assert_eq!(&b[..], b"\x16\x03");
    let b = startup_packet(GSSENC_REQUEST_CODE, b"");
    assert_eq!(parse_one(b), Ok(Some(InitialPacket::GssEncRequest)));
    // PostgreSQL reads only the code of an encryption request.
    let b = startup_packet(SSL_REQUEST_CODE, b"x");
    assert_eq!(parse_one(b), Ok(Some(InitialPacket::SslRequest)));
}

#[test]
fn incomplete_packets_consume_nothing() {
    let full = startup_packet(PROTOCOL_3_0, b"user\0bob\0\0");
    for cut in 0..full.len() {
        let mut b = BytesMut::from(&full[..cut]);
        assert_eq!(parse_initial(&mut b), Ok(None), "cut at {cut}");
        assert_eq!(b.len(), cut);
    }
}

#[test]
fn lengths_are_validated_before_use() {
    for len in [i32::MIN, -1, 0, 4, 7, MAX_STARTUP_LEN as i32 + 1, i32::MAX] {
        let mut b = BytesMut::new();
        b.put_i32(len);
        assert_eq!(parse_one(b.clone()), Err(StartupError::InvalidLength(len)));
        assert!(StartupError::InvalidLength(len).is_silent());
    }
    // PostgreSQL's 10,000 bytes do not count the length word.
    let mut b = BytesMut::new();
    b.put_i32(10_004);
    assert_eq!(parse_one(b), Ok(None), "10,004 bytes are waited for");
    assert_eq!(
        StartupError::InvalidLength(0).sqlstate(),
        sqlstate::PROTOCOL_VIOLATION
    );
}

#[test]
fn cancel_request_secret_lengths() {
    let mut body = Vec::new();
    body.extend_from_slice(&42i32.to_be_bytes());
    body.extend_from_slice(&[1, 2, 3, 4]);
    let Ok(Some(InitialPacket::Cancel(key))) =
        parse_one(startup_packet(CANCEL_REQUEST_CODE, &body))
    else {
        panic!("expected a cancel key");
    };
    assert_eq!(key.pid, 42);
    assert!(key.secret_eq(&[1, 2, 3, 4]));
    assert!(!key.secret_eq(&[1, 2, 3, 5]));
    assert!(!key.secret_eq(&[1, 2, 3]));

    // protocol 3.2: up to 256 bytes
    let mut long = 7i32.to_be_bytes().to_vec();
    long.extend_from_slice(&[9; 256]);
    let parsed = parse_one(startup_packet(CANCEL_REQUEST_CODE, &long));
    assert!(matches!(parsed, Ok(Some(InitialPacket::Cancel(k))) if k.secret.len() == 256));

    for bad in [&[][..], &[0, 0, 0, 1][..], &[0, 0][..]] {
        let parsed = parse_one(startup_packet(CANCEL_REQUEST_CODE, bad));
        assert_eq!(parsed, Err(StartupError::BadCancel), "{bad:?}");
    }
    long.push(0);
    let parsed = parse_one(startup_packet(CANCEL_REQUEST_CODE, &long));
    assert_eq!(parsed, Err(StartupError::BadCancel));
    assert!(StartupError::BadCancel.is_silent());
}

#[test]
fn startup_message_params_and_defaults() {
    let body = b"user\0bob\0options\0-c x=1\0_pq_.foo\0bar\0_pq.not\0x\0\0";
    let mut b = startup_packet(PROTOCOL_3_0 + 2, body);
    b.put_slice(b"next");
    let Ok(Some(InitialPacket::Startup(msg))) = parse_initial(&mut b) else {
        panic!("expected startup");
    };
    assert_eq!(&b[..], b"next");
    assert_eq!((msg.major, msg.minor), (3, 2));
    assert_eq!(msg.user(), "bob");
    assert_eq!(msg.database(), "bob");
    assert_eq!(msg.get("options"), Some("-c x=1"));
    // `_pq.` is an ordinary (if odd) parameter name: only `_pq_.` is reserved.
    assert_eq!(msg.protocol_options(), vec!["_pq_.foo"]);
    assert!(msg.needs_negotiation());

    let mut out = BytesMut::new();
    msg.encode(&mut out);
    let Ok(Some(InitialPacket::Startup(again))) = parse_initial(&mut out) else {
        panic!("encode must round-trip");
    };
    assert!(out.is_empty());
    assert_eq!((again.major, again.minor), (3, 0));
    assert_eq!(again.params.len(), 3);
    assert!(again.protocol_options().is_empty());
    assert!(!again.needs_negotiation());
    assert_eq!(again.get("_pq.not"), Some("x"));

    let b = startup_packet(PROTOCOL_3_0, b"user\0a\0database\0db\0user\0b\0\0");
    let Ok(Some(InitialPacket::Startup(msg))) = parse_one(b) else {
        panic!("expected startup");
    };
    assert_eq!(msg.user(), "b");
    assert_eq!(msg.database(), "db");
}

#[test]
fn startup_message_errors() {
    let cases: &[(&[u8], StartupError)] = &[
        (b"user\0bob\0", StartupError::Layout),
        (b"user\0bob", StartupError::Layout),
        (b"user\0\0", StartupError::Layout),
        (b"user\0", StartupError::Layout),
        (b"user\0bob\0\0x", StartupError::Layout),
        (
            b"user\0u\0database\0caf\xe9\0\0",
            StartupError::InvalidEncoding("0xe9".into()),
        ),
        (
            b"user\0u\0options\0-c a=\xe9 x\0\0",
            StartupError::InvalidEncoding("0xe9 0x20 0x78".into()),
        ),
        (
            b"user\0u\0\xff\0v\0\0",
            StartupError::InvalidEncoding("0xff".into()),
        ),
        (b"\0", StartupError::NoUser),
        (b"user\0\0\0", StartupError::NoUser),
        (b"database\0d\0\0", StartupError::NoUser),
        (b"user\0u\0replication\0true\0\0", StartupError::Replication),
        (
            b"user\0u\0replication\0database\0\0",
            StartupError::Replication,
        ),
        (b"user\0u\0replication\0o\0\0", StartupError::Replication),
    ];
    for (body, want) in cases {
        let got = parse_one(startup_packet(PROTOCOL_3_0, body));
        assert_eq!(got.as_ref(), Err(want), "{body:?}");
    }
    for ok in ["false", "OFF", "no", "0", "f", "N"] {
        let body = format!("user\0u\0replication\0{ok}\0\0");
        let got = parse_one(startup_packet(PROTOCOL_3_0, body.as_bytes()));
        assert!(matches!(got, Ok(Some(InitialPacket::Startup(_)))), "{ok}");
    }
    let got = parse_one(startup_packet(2 << 16, b"user\0u\0\0"));
    assert_eq!(
        got,
        Err(StartupError::UnsupportedVersion { major: 2, minor: 0 })
    );
    assert!(got
        .as_ref()
        .is_err_and(|e| e.legacy_format() && !e.is_silent()));
    let v4 = StartupError::UnsupportedVersion { major: 4, minor: 0 };
    assert!(!v4.legacy_format());
    assert!(!StartupError::Layout.is_silent());
    assert_eq!(StartupError::Replication.sqlstate(), "0A000");
    assert_eq!(StartupError::NoUser.sqlstate(), "28000");
    assert_eq!(
        StartupError::UnsupportedVersion { major: 2, minor: 0 }.sqlstate(),
        "0A000"
    );
}

#[test]
fn non_utf8_values_the_backend_would_accept() {
    let b = startup_packet(
        PROTOCOL_3_0,
        b"user\0caf\xe9\0application_name\0caf\xe9 \xc3\xa9\x01!\0\0",
    );
    let Ok(Some(InitialPacket::Startup(msg))) = parse_one(b) else {
        panic!("expected startup");
    };
    assert_eq!(msg.get("application_name"), Some("caf? ???!"));
    assert_eq!(msg.user(), "caf\u{fffd}");
    assert_eq!(
        StartupError::InvalidEncoding("0xe9".into()).to_string(),
        "invalid byte sequence for encoding \"UTF8\": 0xe9"
    );
    assert_eq!(
        StartupError::InvalidEncoding(String::new()).sqlstate(),
        "22021"
    );
}

#[test]
fn long_user_and_database_names_are_cut_like_postgres() {
    let long = "u".repeat(70);
    // Two-byte characters: byte 63 is the first half of the 32nd, so 31 remain.
    let wide = "é".repeat(40);
    let body = format!("user\0{long}\0database\0{wide}\0application_name\0{long}\0\0");
    let Ok(Some(InitialPacket::Startup(msg))) =
        parse_one(startup_packet(PROTOCOL_3_0, body.as_bytes()))
    else {
        panic!("expected startup");
    };
    assert_eq!(msg.user(), "u".repeat(63));
    assert_eq!(msg.database(), "é".repeat(31));
    assert_eq!(msg.get("application_name"), Some(long.as_str()));
    // The database defaults to the (cut) user name.
    let body = format!("user\0{long}\0\0");
    let Ok(Some(InitialPacket::Startup(msg))) =
        parse_one(startup_packet(PROTOCOL_3_0, body.as_bytes()))
    else {
        panic!("expected startup");
    };
    assert_eq!(msg.database(), "u".repeat(63));
    let exact = "x".repeat(63);
    let body = format!("user\0{exact}\0\0");
    let Ok(Some(InitialPacket::Startup(msg))) =
        parse_one(startup_packet(PROTOCOL_3_0, body.as_bytes()))
    else {
        panic!("expected startup");
    };
    assert_eq!(msg.user(), exact);
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut seed = 0x1234_5678u32;
    for _ in 0..2000 {
        let mut b = BytesMut::new();
        let len = (seed % 40) as usize;
        b.put_i32(8 + len as i32);
        b.put_i32(if seed % 3 == 0 {
            PROTOCOL_3_0
        } else {
            CANCEL_REQUEST_CODE
        });
        for _ in 0..len {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            b.put_u8(if seed % 4 == 0 { 0 } else { (seed >> 16) as u8 });
        }
        let _ = parse_initial(&mut b);
    }
}
