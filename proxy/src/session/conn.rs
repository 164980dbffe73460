//! The client side of a session before forwarding starts: the socket plus its read buffer,
//! with the few whole-message reads the login needs, each bounded by the login deadline.

use bytes::BytesMut;
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
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientConn<S> {
    pub fn new(stream: S, deadline: Instant) -> Self {
        ClientConn {
            stream,
            buf: BytesMut::with_capacity(1024),
            deadline,
        }
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
    /// No TLS or GSS encryption here, so both are refused with 'N' and the client continues
    /// in plaintext or gives up. As PostgreSQL, one SSLRequest and one GSSENCRequest are
    /// answered, in either order; a repeated one is read as a startup packet of protocol
    /// 1234.5679 / 1234.5680 and refused for its version.
    pub async fn read_startup(&mut self) -> Result<InitialPacket, SessionError> {
        let (mut ssl_done, mut gss_done) = (false, false);
        loop {
            match self.read_initial().await? {
                InitialPacket::SslRequest if !ssl_done => {
                    ssl_done = true;
                    self.write(b"N").await?
                }
                InitialPacket::GssEncRequest if !gss_done => {
                    gss_done = true;
                    self.write(b"N").await?
                }
                InitialPacket::SslRequest => return Err(repeated(SSL_REQUEST_CODE)),
                InitialPacket::GssEncRequest => return Err(repeated(GSSENC_REQUEST_CODE)),
                other => return Ok(other),
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

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        tokio::time::timeout_at(self.deadline, self.stream.write_all(bytes))
            .await
            .map_err(|_| SessionError::AuthTimeout)??;
        Ok(())
    }

    /// Best-effort FATAL error before closing (bounded: a client that does not read is not
    /// waited for).
    pub async fn fatal(&mut self, code: &str, message: &str) {
        super::forward::write_fatal(&mut self.stream, code, message).await;
    }
}

fn repeated(code: i32) -> SessionError {
    StartupError::UnsupportedVersion {
        major: (code >> 16) as u16,
        minor: (code & 0xffff) as u16,
    }
    .into()
}
