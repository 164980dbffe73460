//! The client side of a session before forwarding starts: the socket plus its read buffer,
//! with the few whole-message reads the login needs, each bounded by the login deadline.

use std::time::Duration;

use bytes::BytesMut;
use pgpivot_protocol::build;
use pgpivot_protocol::frame::{read_frame, Frame};
use pgpivot_protocol::startup::{
    parse_initial, InitialPacket, StartupError, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::error::SessionError;

/// Password/SASL messages are small; anything larger during login is hostile.
const MAX_LOGIN_MESSAGE: usize = 64 * 1024;

pub struct ClientConn<S> {
    pub stream: S,
    pub buf: BytesMut,
    deadline: Instant,
    /// Inside TLS: another SSLRequest or a GSSENCRequest is a protocol error, as in PostgreSQL.
    pub tls: bool,
    /// Inside TLS: the `tls-server-end-point` data of the certificate this client was served,
    /// when `SCRAM-SHA-256-PLUS` can be offered.
    pub channel_binding: Option<std::sync::Arc<[u8]>>,
}

/// What the opening of a connection came to.
pub enum Opening {
    /// The first packet that is not an encryption request.
    Packet(InitialPacket),
    /// The client asked for TLS and was answered 'S', with nothing buffered after its request:
    /// the TLS handshake comes next.
    Tls,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientConn<S> {
    pub fn new(stream: S, deadline: Instant) -> Self {
        ClientConn {
            stream,
            buf: BytesMut::with_capacity(1024),
            deadline,
            tls: false,
            channel_binding: None,
        }
    }

    /// The connection after a TLS handshake (its plaintext buffer was empty, so nothing carries
    /// over).
    pub fn encrypted(
        stream: S,
        deadline: Instant,
        channel_binding: Option<std::sync::Arc<[u8]>>,
    ) -> Self {
        ClientConn {
            tls: true,
            channel_binding,
            ..Self::new(stream, deadline)
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    async fn fill(&mut self) -> Result<(), SessionError> {
        let n = tokio::time::timeout_at(self.deadline, self.stream.read_buf(&mut self.buf))
            .await
            .map_err(|_| SessionError::AuthTimeout)??;
        if n == 0 {
            return Err(SessionError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }

    /// The untagged first packet (startup, SSL/GSS request, cancel).
    pub async fn read_initial(&mut self) -> Result<InitialPacket, SessionError> {
        loop {
            if let Some(p) = parse_initial(&mut self.buf)? {
                return Ok(p);
            }
            self.fill().await?;
        }
    }

    /// The first packet that is not an encryption request: a startup message or a cancel.
    /// GSS encryption is refused with 'N'; so is TLS unless `offer_tls`, and the client
    /// continues in plaintext or gives up. With `offer_tls` an SSLRequest is answered 'S' and
    /// [`Opening::Tls`] returned, unless the client already sent more (see
    /// [`SessionError::UnencryptedAfterSsl`]). As PostgreSQL, one SSLRequest and one
    /// GSSENCRequest are answered, in either order, and none inside TLS; a repeated one is read
    /// as a startup packet of protocol 1234.5679 / 1234.5680 and refused for its version.
    pub async fn read_startup(&mut self, offer_tls: bool) -> Result<Opening, SessionError> {
        let (mut ssl_done, mut gss_done) = (self.tls, self.tls);
        loop {
            match self.read_initial().await? {
                InitialPacket::SslRequest if !ssl_done && offer_tls => {
                    self.write(b"S").await?;
                    // As PostgreSQL 15: checked after answering, before the handshake.
                    if !self.buf.is_empty() {
                        return Err(SessionError::UnencryptedAfterSsl);
                    }
                    return Ok(Opening::Tls);
                }
                // As PostgreSQL 15, bytes sent before the answer are refused after an 'N' too.
                InitialPacket::SslRequest if !ssl_done => {
                    ssl_done = true;
                    self.write(b"N").await?;
                    if !self.buf.is_empty() {
                        return Err(SessionError::UnencryptedAfterSsl);
                    }
                }
                InitialPacket::GssEncRequest if !gss_done => {
                    gss_done = true;
                    self.write(b"N").await?;
                    if !self.buf.is_empty() {
                        return Err(SessionError::UnencryptedAfterGss);
                    }
                }
                InitialPacket::SslRequest => return Err(repeated(SSL_REQUEST_CODE)),
                InitialPacket::GssEncRequest => return Err(repeated(GSSENC_REQUEST_CODE)),
                other => return Ok(Opening::Packet(other)),
            }
        }
    }

    /// A 'p' message (password, SASLInitialResponse, SASLResponse).
    pub async fn read_password_message(&mut self) -> Result<Frame, SessionError> {
        loop {
            if let Some(f) = read_frame(&mut self.buf, MAX_LOGIN_MESSAGE)? {
                if f.tag() != b'p' {
                    return Err(SessionError::Protocol(format!(
                        "expected password response, got message type {:?}",
                        f.tag() as char
                    )));
                }
                return Ok(f);
            }
            self.fill().await?;
        }
    }

    /// Writes and flushes (a TLS stream may otherwise keep the bytes queued).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        tokio::time::timeout_at(self.deadline, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| SessionError::AuthTimeout)??;
        Ok(())
    }

    /// Best-effort FATAL error before closing (bounded: a client that does not read is not
    /// waited for).
    pub async fn fatal(&mut self, code: &str, message: &str) {
        super::forward::write_fatal(&mut self.stream, code, message).await;
    }

    /// Answers a refused login as PostgreSQL does: nothing for what it only logs
    /// ([`SessionError::is_silent`]), an error line in the old format for a client of protocol
    /// 1.x or 2.x, else a FATAL (with PostgreSQL's DETAIL where it has one). Bounded, like
    /// [`ClientConn::fatal`]. Returns whether anything was sent. The caller closes.
    pub async fn refuse(&mut self, e: &SessionError) -> bool {
        if e.is_silent() {
            return false;
        }
        let message = e.to_string();
        let mut out = BytesMut::with_capacity(64 + message.len());
        if matches!(e, SessionError::Startup(s) if s.legacy_format()) {
            build::legacy_error(&mut out, "FATAL", &message);
        } else {
            build::error_response(
                &mut out,
                &build::ErrorFields {
                    severity: "FATAL",
                    code: e.sqlstate(),
                    message: &message,
                    detail: e.detail(),
                    hint: None,
                },
            );
        }
        let sent =
            tokio::time::timeout(CLOSE_WAIT, super::forward::send(&mut self.stream, &out)).await;
        matches!(sent, Ok(Ok(())))
    }

    /// Ends the connection: see [`close`].
    pub async fn close(&mut self) {
        close(&mut self.stream).await
    }
}

/// How long the last words to a client may take: one that does not read is not waited for.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Shuts the client's side down as PostgreSQL does when it ends a connection: inside TLS a
/// close_notify first (without it OpenSSL reports "unexpected eof while reading", and libpq
/// 17+ a failed cancel), then the socket's write side. Bounded.
pub async fn close<W: AsyncWrite + Unpin>(w: &mut W) {
    let _ = tokio::time::timeout(CLOSE_WAIT, w.shutdown()).await;
}

fn repeated(code: i32) -> SessionError {
    StartupError::UnsupportedVersion {
        major: (code >> 16) as u16,
        minor: (code & 0xffff) as u16,
    }
    .into()
}
