//! Session errors, each mapped to the SQLSTATE the client sees.

use pgpivot_protocol::frame::FrameError;
use pgpivot_protocol::sqlstate;
use pgpivot_protocol::startup::StartupError;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Startup(#[from] StartupError),
    #[error("password authentication failed for user \"{0}\"")]
    AuthFailed(String),
    #[error("{0}")]
    Protocol(String),
    #[error("timeout expired during authentication")]
    AuthTimeout,
    #[error("no primary available: {0}")]
    NoPrimary(String),
    #[error("no server connection available within {0} ms (all {1} in use)")]
    PoolTimeout(u128, usize),
    #[error("could not connect to the primary: {0}")]
    Backend(String),
    /// The backend's own ErrorResponse, forwarded verbatim (its SQLSTATE, its words).
    #[error("the server refused the login")]
    ServerRefused(bytes::Bytes),
    /// CVE-2021-23214: bytes the client sent after its SSLRequest without waiting for 'S' were
    /// not encrypted and may have been injected; PostgreSQL 15 refuses them with these words.
    #[error("received unencrypted data after SSL request")]
    UnencryptedAfterSsl,
    /// The same after a GSSENCRequest (answered 'N'), in PostgreSQL 15's words.
    #[error("received unencrypted data after GSSAPI encryption request")]
    UnencryptedAfterGss,
    /// `PGPIVOT_TLS_REQUIRED`: a plaintext TCP client, refused as PostgreSQL's `hostssl`-only
    /// pg_hba.conf refuses it.
    #[error("SSL required: no pgpivot entry for host \"{host}\", user \"{user}\", database \"{database}\", no encryption")]
    TlsRequired {
        host: String,
        user: String,
        database: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl SessionError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            SessionError::Frame(e) => e.sqlstate(),
            SessionError::Startup(e) => e.sqlstate(),
            SessionError::AuthFailed(_) => sqlstate::INVALID_PASSWORD,
            SessionError::Protocol(_) => sqlstate::PROTOCOL_VIOLATION,
            SessionError::AuthTimeout => sqlstate::PROTOCOL_VIOLATION,
            SessionError::NoPrimary(_) => sqlstate::CANNOT_CONNECT_NOW,
            SessionError::PoolTimeout(..) => sqlstate::TOO_MANY_CONNECTIONS,
            SessionError::Backend(_) => sqlstate::CONNECTION_FAILURE,
            SessionError::ServerRefused(_) => sqlstate::CONNECTION_FAILURE,
            SessionError::UnencryptedAfterSsl | SessionError::UnencryptedAfterGss => {
                sqlstate::PROTOCOL_VIOLATION
            }
            SessionError::TlsRequired { .. } => sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            SessionError::Io(_) => sqlstate::CONNECTION_FAILURE,
        }
    }

    /// Ends the connection without a reply, as PostgreSQL does for what it only logs: a bad
    /// first packet, a login that timed out (it never writes to a client during
    /// authentication once the time is up), a client that went away.
    pub fn is_silent(&self) -> bool {
        match self {
            SessionError::Startup(e) => e.is_silent(),
            SessionError::AuthTimeout | SessionError::Io(_) => true,
            _ => false,
        }
    }

    /// PostgreSQL's DETAIL, where it gives one.
    pub fn detail(&self) -> Option<&'static str> {
        match self {
            SessionError::UnencryptedAfterSsl | SessionError::UnencryptedAfterGss => Some(
                "This could be either a client-software bug or evidence of an attempted \
                 man-in-the-middle attack.",
            ),
            _ => None,
        }
    }
}
