//! A deliberately small HTTP/1.x server for `/metrics`, `/livez` and `/readyz`.
//!
//! Scrapers and kubelets send one short GET per connection; this reads one request head (at
//! most 8 KiB, within 5 s), answers, and closes. No keep-alive, no bodies, no other routes — so
//! no HTTP library is needed and nothing here can hold a session's resources.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{exporter, health};
use crate::session::Ctx;

const MAX_REQUEST_HEAD: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes and probes answered at once; more connections are closed unanswered.
const MAX_CONNECTIONS: usize = 32;

/// The running endpoint; [`HttpServer::stop`] ends it.
pub struct HttpServer {
    pub local_addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Serves on `listener` (bound by the caller with the client listener, so a taken port
    /// fails the start before anything runs).
    pub fn spawn(listener: TcpListener, ctx: Arc<Ctx>) -> std::io::Result<HttpServer> {
        let local_addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, ctx, stop.clone()));
        Ok(HttpServer {
            local_addr,
            stop,
            task,
        })
    }

    /// Stops accepting and waits (briefly) for requests being answered.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
    }
}

async fn serve(listener: TcpListener, ctx: Arc<Ctx>, stop: CancellationToken) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let conns = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            continue;
        };
        let ctx = ctx.clone();
        conns.spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &ctx)).await;
            drop(permit);
        });
    }
    conns.close();
    let _ = tokio::time::timeout(Duration::from_millis(500), conns.wait()).await;
}

async fn answer(mut stream: TcpStream, ctx: &Ctx) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() >= MAX_REQUEST_HEAD {
            return respond(&mut stream, 431, "request header too large\n", true).await;
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let Some((method, path)) = request_line(&buf[..head_end]) else {
        return respond(&mut stream, 400, "bad request\n", true).await;
    };
    let with_body = method != "HEAD";
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "only GET and HEAD\n", true).await;
    }
    let (status, body, content_type) = match path {
        "/metrics" => (
            200,
            exporter::scrape(ctx),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        "/livez" => status_of(health::livez(ctx)),
        "/readyz" => status_of(health::readyz(ctx)),
        _ => (404, "not found\n".to_string(), TEXT),
    };
    write_response(&mut stream, status, content_type, &body, with_body).await
}

const TEXT: &str = "text/plain; charset=utf-8";

fn status_of(r: Result<String, String>) -> (u16, String, &'static str) {
    match r {
        Ok(body) => (200, body, TEXT),
        Err(body) => (503, body, TEXT),
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    body: &str,
    with_body: bool,
) -> std::io::Result<()> {
    write_response(stream, status, TEXT, body, with_body).await
}

async fn write_response(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
    with_body: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    if with_body {
        out.push_str(body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Index just past the blank line ending the request head (CRLF or bare LF).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some(i + 4);
    }
    buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// Method and path (query string dropped) of `METHOD target HTTP/x.y`.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line_end = head.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&head[..line_end])
        .ok()?
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Some((method, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_lines() {
        assert_eq!(
            request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            request_line(b"HEAD /readyz?verbose=1 HTTP/1.0\r\n\r\n"),
            Some(("HEAD", "/readyz"))
        );
        assert_eq!(request_line(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(request_line(b"GET /a b HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_line(b"\xff\xfe HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn finds_the_end_of_the_head() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    }
}
