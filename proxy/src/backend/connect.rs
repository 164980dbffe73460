//! Opening a server connection to a backend and logging in with the client's credentials, by
//! whatever method the backend asks for (SCRAM-SHA-256, MD5, cleartext or trust).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pgpivot_protocol::auth::md5::md5_salted;
use pgpivot_protocol::build;
use pgpivot_protocol::frame::{read_frame, Frame};
use pgpivot_protocol::sqlstate;
use pgpivot_protocol::startup::StartupMessage;
use pgpivot_protocol::views::{self, AuthRequest, ErrorView};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest message accepted from a backend during login.
const MAX_LOGIN_MESSAGE: usize = 1 << 20;

/// A logged-in server connection, ready for queries.
pub struct ServerConn {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    /// The backend's cancel key; 0 and empty when it sent no BackendKeyData (then nothing can
    /// be cancelled on it, see `cancel::send_cancel`).
    pub pid: i32,
    pub secret: Vec<u8>,
    /// ParameterStatus, NoticeResponse and the final ReadyForQuery, raw, in arrival order:
    /// forwarded to the client as they are.
    pub greeting: BytesMut,
    /// Bytes read past the login (normally none).
    pub leftover: BytesMut,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The backend could not be reached or went away: try again (the primary may be moving).
    #[error("{0}")]
    Unreachable(String),
    /// The backend answered with an ErrorResponse (unknown database, bad parameter, wrong
    /// password...): forwarded to the client verbatim, with the server's own SQLSTATE.
    #[error("the server refused the connection: {}", describe(.0))]
    Refused(Bytes),
    #[error("{0}")]
    Protocol(String),
}

fn describe(frame: &Bytes) -> String {
    let v = ErrorView::new(frame.get(5..).unwrap_or_default());
    format!(
        "{} {}",
        v.sqlstate().unwrap_or("?????"),
        v.message().unwrap_or("")
    )
}

impl ConnectError {
    /// pgpivot's own refusal of a login it cannot complete (an authentication method it does not
    /// speak), built like the server's ErrorResponse so it reaches the client the same way: with
    /// its SQLSTATE and words, not as "could not connect" (which means the node is unreachable).
    pub fn refuse(code: &str, message: &str) -> ConnectError {
        let mut frame = BytesMut::new();
        build::error_response(
            &mut frame,
            &build::ErrorFields {
                severity: "FATAL",
                code,
                message,
                detail: None,
                hint: None,
            },
        );
        ConnectError::Refused(frame.freeze())
    }

    /// A 57P03 "the database system is starting up / shutting down / in recovery" is the node's
    /// state, not the client's fault: worth retrying like an unreachable node.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectError::Unreachable(_) => true,
            ConnectError::Refused(f) => {
                let v = ErrorView::new(f.get(5..).unwrap_or_default());
                matches!(v.sqlstate(), Some("57P03") | Some("57P01") | Some("53300"))
            }
            ConnectError::Protocol(_) => false,
        }
    }
}

/// Connects to `addr` and logs in as `startup.user()` with `password`, sending the client's
/// startup parameters as given. Every await is bounded by `timeout` in total.
pub async fn connect(
    addr: &str,
    startup: &StartupMessage,
    password: &str,
    timeout: Duration,
) -> Result<ServerConn, ConnectError> {
    match tokio::time::timeout(timeout, connect_inner(addr, startup, password)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Unreachable(format!(
            "timed out after {} ms connecting to {addr}",
            timeout.as_millis()
        ))),
    }
}

async fn connect_inner(
    addr: &str,
    startup: &StartupMessage,
    password: &str,
) -> Result<ServerConn, ConnectError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| ConnectError::Unreachable(format!("{addr}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
    set_keepalive(&stream);
    let mut conn = Login {
        stream,
        buf: BytesMut::with_capacity(8192),
        out: BytesMut::with_capacity(512),
    };
    startup.encode(&mut conn.out);
    conn.flush().await?;
    conn.authenticate(startup.user(), password).await?;

    let mut greeting = BytesMut::with_capacity(1024);
    let mut key = None;
    loop {
        let f = conn.next().await?;
        match f.tag() {
            b'S' | b'N' => greeting.extend_from_slice(f.as_bytes()),
            b'K' => {
                let (pid, secret) = views::backend_key_data(f.body())
                    .ok_or_else(|| ConnectError::Protocol("malformed BackendKeyData".into()))?;
                key = Some((pid, secret.to_vec()));
            }
            b'Z' => {
                greeting.extend_from_slice(f.as_bytes());
                break;
            }
            b'E' => return Err(ConnectError::Refused(f.into_bytes())),
            other => {
                return Err(ConnectError::Protocol(format!(
                    "unexpected message {:?} during login",
                    other as char
                )))
            }
        }
    }
    // PostgreSQL always sends one; a server that does not (some poolers) gets no cancels.
    let (pid, secret) = key.unwrap_or((0, Vec::new()));
    Ok(ServerConn {
        stream: conn.stream,
        addr: peer,
        pid,
        secret,
        greeting,
        leftover: conn.buf,
    })
}

/// Keepalives let a half-dead backend (host gone, no RST) be noticed by the kernel.
fn set_keepalive(stream: &TcpStream) {
    let sock = socket2::SockRef::from(stream);
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5));
    let _ = sock.set_tcp_keepalive(&ka);
}

struct Login {
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
}

impl Login {
    async fn flush(&mut self) -> Result<(), ConnectError> {
        self.stream
            .write_all(&self.out)
            .await
            .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
        self.out.clear();
        Ok(())
    }

    async fn next(&mut self) -> Result<Frame, ConnectError> {
        loop {
            if let Some(f) = read_frame(&mut self.buf, MAX_LOGIN_MESSAGE)
                .map_err(|e| ConnectError::Protocol(e.to_string()))?
            {
                return Ok(f);
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
            if n == 0 {
                return Err(ConnectError::Unreachable(
                    "server closed the connection during login".into(),
                ));
            }
        }
    }

    /// Reads the next Authentication request, or fails with the server's error.
    async fn next_auth(&mut self) -> Result<Frame, ConnectError> {
        let f = self.next().await?;
        self.auth_or_error(f)
    }

    /// The first answer to the startup packet: an Authentication request, possibly preceded by
    /// a NegotiateProtocolVersion. pgpivot asks for 3.0 without protocol options, so a server
    /// has nothing to negotiate; one that says it speaks 3.x anyway is harmless and skipped.
    async fn first_auth(&mut self) -> Result<Frame, ConnectError> {
        let f = self.next().await?;
        if f.tag() != b'v' {
            return self.auth_or_error(f);
        }
        let Some((version, options)) = views::negotiate_protocol_version(f.body()) else {
            return Err(ConnectError::Protocol(
                "malformed NegotiateProtocolVersion".into(),
            ));
        };
        if version >> 16 != 3 {
            return Err(ConnectError::Protocol(format!(
                "the server negotiates protocol {}.{}; pgpivot speaks 3.0",
                version >> 16,
                version & 0xffff
            )));
        }
        tracing::debug!(
            version = format!("{}.{}", version >> 16, version & 0xffff),
            unrecognized = options.len(),
            "server sent NegotiateProtocolVersion without being asked; ignored"
        );
        self.next_auth().await
    }

    fn auth_or_error(&self, f: Frame) -> Result<Frame, ConnectError> {
        match f.tag() {
            b'R' => Ok(f),
            b'E' => Err(ConnectError::Refused(f.into_bytes())),
            t => Err(ConnectError::Protocol(format!(
                "expected an authentication request, got {:?}",
                t as char
            ))),
        }
    }

    async fn authenticate(&mut self, user: &str, password: &str) -> Result<(), ConnectError> {
        let f = self.first_auth().await?;
        let req = views::auth_request(f.body())
            .ok_or_else(|| ConnectError::Protocol("malformed authentication request".into()))?;
        match req {
            AuthRequest::Ok => return Ok(()),
            AuthRequest::CleartextPassword => {
                build::password_message(&mut self.out, password.as_bytes());
            }
            AuthRequest::Md5Password { salt } => {
                build::password_message(&mut self.out, md5_salted(user, password, salt).as_bytes());
            }
            AuthRequest::Sasl { mechanisms } => {
                if !mechanisms.contains(&SCRAM_SHA_256) {
                    return Err(ConnectError::refuse(
                        sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                        &format!(
                            "none of the server's SASL authentication mechanisms ({}) are \
                             supported by pgpivot",
                            mechanisms.join(", ")
                        ),
                    ));
                }
                return self.scram(password).await;
            }
            AuthRequest::Other(code) => {
                return Err(ConnectError::refuse(
                    sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                    &format!(
                        "the server requires {} authentication (method {code}), which pgpivot \
                         does not support",
                        views::auth_method_name(code)
                    ),
                ))
            }
            AuthRequest::SaslContinue(_) | AuthRequest::SaslFinal(_) => {
                return Err(ConnectError::Protocol(
                    "SASL message from the server before SASL was started".into(),
                ))
            }
        }
        self.flush().await?;
        self.expect_ok().await
    }

    async fn scram(&mut self, password: &str) -> Result<(), ConnectError> {
        let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut self.out)
            .map_err(|e| ConnectError::Protocol(e.to_string()))?;
        self.flush().await?;
        let f = self.next_auth().await?;
        let Some(AuthRequest::SaslContinue(data)) = views::auth_request(f.body()) else {
            return Err(ConnectError::Protocol("expected SASL continue".into()));
        };
        scram
            .update(data)
            .map_err(|e| ConnectError::Protocol(format!("SCRAM: {e}")))?;
        frontend::sasl_response(scram.message(), &mut self.out)
            .map_err(|e| ConnectError::Protocol(e.to_string()))?;
        self.flush().await?;
        let f = self.next_auth().await?;
        let Some(AuthRequest::SaslFinal(data)) = views::auth_request(f.body()) else {
            return Err(ConnectError::Protocol("expected SASL final".into()));
        };
        scram
            .finish(data)
            .map_err(|e| ConnectError::Protocol(format!("SCRAM server signature: {e}")))?;
        self.expect_ok().await
    }

    async fn expect_ok(&mut self) -> Result<(), ConnectError> {
        let f = self.next_auth().await?;
        match views::auth_request(f.body()) {
            Some(AuthRequest::Ok) => Ok(()),
            _ => Err(ConnectError::Protocol("expected AuthenticationOk".into())),
        }
    }
}

#[cfg(test)]
#[path = "connect_tests.rs"]
mod tests;
