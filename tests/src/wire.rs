//! Hand-built protocol messages for tests that talk to pgpivot over a raw socket (bad input,
//! cancel keys, the authentication method offered), and a bounded reader for its answers.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Protocol 3.0 version code.
pub const PROTOCOL_3_0: i32 = 196_608;
/// CancelRequest code (1234.5678).
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// Largest message body the reader accepts: pgpivot's own answers are small, and a test must not
/// allocate whatever length a misbehaving peer claims.
const MAX_BODY: usize = 1 << 20;

/// An untagged packet: length, a 32-bit code, then `body`.
pub fn untagged(code: i32, body: &[u8]) -> Vec<u8> {
    let mut v = ((8 + body.len()) as i32).to_be_bytes().to_vec();
    v.extend_from_slice(&code.to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A protocol 3.0 StartupMessage with the given parameters.
pub fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    untagged(PROTOCOL_3_0, &body)
}

/// A CancelRequest for `pid` with `secret`.
pub fn cancel_request(pid: i32, secret: &[u8]) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    body.extend_from_slice(secret);
    untagged(CANCEL_REQUEST_CODE, &body)
}

/// A tagged message.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A simple Query message.
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

/// Reads one tagged message; `Ok(None)` on EOF at a message boundary.
pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut header = [0u8; 5];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let len = usize::try_from(len)
        .ok()
        .filter(|l| (4..=MAX_BODY + 4).contains(l))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad length {len} for {:?}", header[0] as char),
            )
        })?;
    let mut body = vec![0; len - 4];
    r.read_exact(&mut body).await?;
    Ok(Some((header[0], body)))
}

/// Reads messages until ReadyForQuery (included), EOF or an error; gives up after `timeout`.
pub async fn read_until_ready<R: AsyncRead + Unpin>(
    r: &mut R,
    timeout: Duration,
) -> anyhow::Result<Vec<(u8, Vec<u8>)>> {
    let mut out = Vec::new();
    tokio::time::timeout(timeout, async {
        while let Some(m) = read_message(r).await? {
            let done = m.0 == b'Z';
            out.push(m);
            if done {
                break;
            }
        }
        Ok::<_, io::Error>(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("no ReadyForQuery within {timeout:?}; got {out:?}"))??;
    Ok(out)
}

/// A field (`b'C'` SQLSTATE, `b'M'` message, `b'S'` severity...) of an ErrorResponse or
/// NoticeResponse body.
pub fn error_field(body: &[u8], field: u8) -> Option<String> {
    let mut rest = body;
    while let Some((&code, after)) = rest.split_first() {
        if code == 0 {
            return None;
        }
        let end = after.iter().position(|&b| b == 0)?;
        if code == field {
            return Some(String::from_utf8_lossy(&after[..end]).into_owned());
        }
        rest = &after[end + 1..];
    }
    None
}

/// What a peer said before closing: the first message (if any) and whether the socket reached
/// EOF within `timeout` (read errors such as a reset count as closed).
pub async fn answer_then_close<R: AsyncRead + Unpin>(
    r: &mut R,
    timeout: Duration,
) -> (Option<(u8, Vec<u8>)>, bool) {
    let mut first = None;
    let closed = tokio::time::timeout(timeout, async {
        loop {
            match read_message(r).await {
                Ok(Some(m)) => {
                    first.get_or_insert(m);
                }
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await
    .is_ok();
    (first, closed)
}
