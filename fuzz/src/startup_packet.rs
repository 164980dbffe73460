//! `startup_packet`: the untagged first packets (SSLRequest, GSSENCRequest, CancelRequest,
//! StartupMessage) on arbitrary bytes, parsed as a connection would, packet after packet.
//!
//! Invariants: nothing is consumed until a whole packet is there (every shorter prefix waits);
//! exactly the declared length is consumed; nothing over the 10 kB cap is waited for or accepted;
//! a StartupMessage re-encodes to one that parses back to the same parameters (minus `_pq_.*`).

use bytes::BytesMut;
use pgpivot_protocol::startup::{
    is_protocol_option, parse_initial, InitialPacket, CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE,
    MAX_STARTUP_LEN, SSL_REQUEST_CODE,
};

pub fn run(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    // A client sends at most an encryption request, then its startup (or a cancel); a few more
    // packets exercise parsing after a consumed one.
    for _ in 0..4 {
        let before = buf.clone();
        match parse_initial(&mut buf) {
            Ok(None) => {
                assert_eq!(buf, before, "nothing is consumed while waiting");
                assert!(buf.len() < MAX_STARTUP_LEN, "waited for more than the cap");
                if let Some(len) = declared(&buf) {
                    assert!(len > buf.len() && (8..=MAX_STARTUP_LEN).contains(&len));
                }
                return;
            }
            Err(e) => {
                assert_eq!(e.sqlstate().len(), 5);
                return;
            }
            Ok(Some(packet)) => {
                let used = before.len() - buf.len();
                assert_eq!(before[used..], buf[..], "only the front is consumed");
                assert_eq!(Some(used), declared(&before), "exactly the declared length");
                assert!((8..=MAX_STARTUP_LEN).contains(&used));
                waits_for_every_prefix(&before[..used]);
                check_packet(&packet, &before[..used]);
            }
        }
    }
}

/// The packet's declared length, when its length word is there and not negative.
fn declared(buf: &[u8]) -> Option<usize> {
    let word: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    usize::try_from(i32::from_be_bytes(word)).ok()
}

fn waits_for_every_prefix(packet: &[u8]) {
    // Every cut would be quadratic on a 10 kB packet; the edges and a few in between suffice.
    let n = packet.len();
    for cut in [0, 1, 3, 4, 5, 7, n / 2, n - 1] {
        let mut b = BytesMut::from(&packet[..cut.min(n - 1)]);
        let len = b.len();
        assert_eq!(parse_initial(&mut b), Ok(None), "prefix of {len} bytes");
        assert_eq!(b.len(), len);
    }
}

fn check_packet(packet: &InitialPacket, raw: &[u8]) {
    let code = i32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
    match packet {
        InitialPacket::SslRequest => assert!(code == SSL_REQUEST_CODE && raw.len() == 8),
        InitialPacket::GssEncRequest => assert!(code == GSSENC_REQUEST_CODE && raw.len() == 8),
        InitialPacket::Cancel(key) => {
            assert_eq!(code, CANCEL_REQUEST_CODE);
            assert_eq!(key.pid.to_be_bytes(), raw[8..12]);
            assert!((1..=256).contains(&key.secret.len()));
            assert_eq!(key.secret, raw[12..]);
            assert!(key.secret_eq(&raw[12..]));
        }
        InitialPacket::Startup(msg) => {
            assert_eq!(msg.major, 3);
            assert!(!msg.user().is_empty());
            assert!(!msg.database().is_empty());
            for (k, v) in &msg.params {
                assert!(!k.is_empty() && !k.contains('\0') && !v.contains('\0'));
            }
            let mut out = BytesMut::new();
            msg.encode(&mut out);
            assert!(out.len() <= raw.len(), "re-encoding never grows");
            let again = match parse_initial(&mut out) {
                Ok(Some(InitialPacket::Startup(again))) => again,
                other => panic!("re-encoded startup does not parse: {other:?}"),
            };
            assert!(out.is_empty());
            assert_eq!((again.major, again.minor), (3, 0));
            let kept: Vec<_> = msg
                .params
                .iter()
                .filter(|(k, _)| !is_protocol_option(k))
                .cloned()
                .collect();
            assert_eq!(again.params, kept);
            assert!(again.protocol_options().is_empty());
        }
    }
}
