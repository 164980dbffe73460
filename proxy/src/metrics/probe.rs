//! `pgpivot probe live|ready`: asks a running pgpivot's health endpoint, for exec probes in
//! images without curl. Blocking std I/O: no runtime, nothing of the proxy is started.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Largest response read; health answers are one line.
const MAX_RESPONSE: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0} ms")]
    Timeout(u128),
    #[error("not an HTTP response")]
    BadResponse,
}

/// Where to connect for a listen address: a wildcard means this host.
pub fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// GETs `path` from `addr` within `timeout` (everything included). Returns the status code and
/// the body.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), ProbeError> {
    let deadline = Instant::now() + timeout;
    let left = || {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            Err(ProbeError::Timeout(timeout.as_millis()))
        } else {
            Ok(d)
        }
    };
    let mut stream =
        TcpStream::connect_timeout(&addr, left()?).map_err(|e| ProbeError::Connect(addr, e))?;
    stream.set_write_timeout(Some(left()?))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: pgpivot-probe\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| timed_out(e, timeout))?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        stream.set_read_timeout(Some(left()?))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&chunk[..n]);
                if raw.len() as u64 > MAX_RESPONSE {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(timed_out(e, timeout)),
        }
    }
    parse_response(&raw).ok_or(ProbeError::BadResponse)
}

fn timed_out(e: std::io::Error, timeout: Duration) -> ProbeError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            ProbeError::Timeout(timeout.as_millis())
        }
        _ => ProbeError::Io(e),
    }
}

fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..head_end]).ok()?;
    let status_line = head.lines().next()?;
    let mut parts = status_line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?.parse().ok()?;
    let body = String::from_utf8_lossy(&raw[head_end + 4..]).into_owned();
    Some((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_become_loopback() {
        let t = target("0.0.0.0:9090".parse().unwrap());
        assert_eq!(t, "127.0.0.1:9090".parse().unwrap());
        let t = target("[::]:9090".parse().unwrap());
        assert_eq!(t, "[::1]:9090".parse().unwrap());
        let t = target("10.1.2.3:9090".parse().unwrap());
        assert_eq!(t, "10.1.2.3:9090".parse().unwrap());
    }

    #[test]
    fn parses_status_and_body() {
        assert_eq!(
            parse_response(b"HTTP/1.1 503 Service Unavailable\r\nA: b\r\n\r\nnot ready\n"),
            Some((503, "not ready\n".into()))
        );
        assert_eq!(parse_response(b"SSH-2.0\r\n\r\n"), None);
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n"), None);
    }

    #[test]
    fn refused_connection_is_an_error() {
        // Bind then drop: the port is free and nothing listens.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        assert!(matches!(
            get(addr, "/livez", Duration::from_secs(1)),
            Err(ProbeError::Connect(..))
        ));
    }
}
