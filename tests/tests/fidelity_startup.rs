//! Invalid first packets, answered as PostgreSQL 15's `ProcessStartupPacket` answers them: what
//! it only logs (a bad length, a cancel request of any kind, a packet cut short) closes the
//! socket without a byte; what it reports (an unsupported protocol, a bad layout, no user)
//! gets the same FATAL. Each exchange is run against the fixture's PostgreSQL and pgpivot.

use std::net::SocketAddr;
use std::time::Duration;

use pgpivot_tests::e2e::{start_cluster, start_pivot};
use pgpivot_tests::wire::{self, error_field};
use pgpivot_tests::PivotOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(10);
const SSL_REQUEST: i32 = 80_877_103;

/// Sends `bytes` (write errors ignored: the peer may hang up first), optionally half-closes,
/// and describes everything that comes back until EOF: one-byte answers as themselves,
/// ErrorResponses as `E <severity> <SQLSTATE> <message>`, other messages by tag.
async fn transcript(addr: SocketAddr, bytes: &[u8], half_close: bool, what: &str) -> Vec<String> {
    let answered = bytes.get(4..8) == Some(&SSL_REQUEST.to_be_bytes()[..]);
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    if half_close {
        let _ = s.shutdown().await;
    }
    let mut raw = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "{what} at {addr}: still open after {TIMEOUT:?}: {raw:?}"
    );
    describe(&raw, answered)
}

/// `answered`: the first byte is the one-byte answer to an SSLRequest.
fn describe(mut raw: &[u8], answered: bool) -> Vec<String> {
    let mut out = Vec::new();
    if answered {
        if let Some((&b, rest)) = raw.split_first() {
            out.push((b as char).to_string());
            raw = rest;
        }
    }
    while let Some(&tag) = raw.first() {
        let len = raw
            .get(1..5)
            .map(|l| i32::from_be_bytes(l.try_into().unwrap()) as usize)
            .filter(|&l| l >= 4 && l < raw.len());
        let Some(len) = len else {
            // Not a protocol-3 message: shown as it is.
            out.push(String::from_utf8_lossy(raw).into_owned());
            break;
        };
        let end = len + 1;
        let body = &raw[5..end];
        out.push(match tag {
            b'E' => format!(
                "E {} {} {}",
                error_field(body, b'S').unwrap_or_default(),
                error_field(body, b'C').unwrap_or_default(),
                error_field(body, b'M').unwrap_or_default()
            ),
            t => (t as char).to_string(),
        });
        raw = &raw[end..];
    }
    out
}

fn packet(length: i32, rest: &[u8]) -> Vec<u8> {
    let mut v = length.to_be_bytes().to_vec();
    v.extend_from_slice(rest);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_first_packets_like_postgres() {
    let c = start_cluster();
    let p = start_pivot(&c, PivotOptions::default()).await;
    let direct = SocketAddr::from(([127, 0, 0, 1], c.port(0)));
    let v3 = wire::PROTOCOL_3_0.to_be_bytes();
    let with_v3 = |len: i32, body: &[u8]| {
        let mut rest = v3.to_vec();
        rest.extend_from_slice(body);
        packet(len, &rest)
    };
    let mut ssl_with_body = wire::untagged(SSL_REQUEST, b"xxxx");
    ssl_with_body.extend_from_slice(&wire::untagged(4 << 16, b"user\0app\0\0"));
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("a Terminate first", b"X\0\0\0\x04".to_vec(), false),
        ("an HTTP request", b"GET / HTTP/1.1\r\n\r\n".to_vec(), false),
        ("length 0", with_v3(0, b""), false),
        ("length 4", with_v3(4, b""), false),
        ("length 7", with_v3(7, b""), false),
        ("length -1", with_v3(-1, b"user\0app\0\0"), false),
        ("length 10005", with_v3(10_005, b"user\0app\0\0"), false),
        (
            "length 10004, cut short",
            with_v3(10_004, b"user\0app\0\0"),
            true,
        ),
        (
            "length 1000000",
            with_v3(1_000_000, b"user\0app\0\0"),
            false,
        ),
        ("a cut length word", vec![0, 0], true),
        ("a cut packet", with_v3(40, b"user\0app\0"), true),
        (
            "a cancel request",
            wire::cancel_request(12345, &[1, 2, 3, 4]),
            false,
        ),
        (
            "a cancel request without a key",
            wire::untagged(80_877_102, b""),
            false,
        ),
        (
            "a cancel request cut short",
            wire::untagged(80_877_102, &[0, 0, 0, 9]),
            false,
        ),
        (
            "a cancel request with a long key",
            wire::untagged(80_877_102, &[0; 20]),
            false,
        ),
        ("an SSLRequest with a body", ssl_with_body, false),
        ("protocol 2.0", wire::untagged(2 << 16, &[0; 288]), false),
        (
            "protocol 4.0",
            wire::untagged(4 << 16, b"user\0app\0\0"),
            false,
        ),
        (
            "no terminator",
            wire::untagged(wire::PROTOCOL_3_0, b"user\0app\0"),
            false,
        ),
        (
            "only a version",
            wire::untagged(wire::PROTOCOL_3_0, b""),
            false,
        ),
        (
            "a name without a value",
            wire::untagged(wire::PROTOCOL_3_0, b"user\0"),
            false,
        ),
        (
            "bytes after the terminator",
            wire::untagged(wire::PROTOCOL_3_0, b"user\0app\0\0xx"),
            false,
        ),
        ("no user", wire::startup(&[("database", "bench")]), false),
    ];
    let mut differ = Vec::new();
    for (what, bytes, half_close) in cases {
        let want = transcript(direct, &bytes, half_close, what).await;
        let got = transcript(p.addr, &bytes, half_close, what).await;
        if got != want {
            differ.push(format!("{what}: pgpivot {got:?}, PostgreSQL {want:?}"));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    // pgpivot still serves.
    let client = p.client().await.expect("login after bad input");
    client.simple_query("SELECT 1").await.expect("query");
}
