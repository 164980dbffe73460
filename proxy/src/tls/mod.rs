//! Client TLS, the way Bitnami's Pgpool image configures it (`PGPOOL_ENABLE_TLS`, PEM certificate
//! and key, optional CA for client certificates): loading the files into a rustls acceptor
//! (`load`), the opening of a TCP connection — SSLRequest or PostgreSQL 17 direct TLS — up to
//! the startup packet inside TLS (`open`), the socket type TLS sessions run on (`stream`) and
//! the certificate hash SCRAM-SHA-256-PLUS binds to (`end_point`).
//!
//! The acceptor lives in the [`crate::config::Config`] it was built from, so RELOAD swaps it
//! with the rest of the configuration: new handshakes use the new certificate, running sessions
//! keep theirs, and files that do not load refuse the reload whole (the old ones stay).

mod end_point;
mod load;
pub mod open;
mod stream;

use std::path::PathBuf;

pub use end_point::end_point_hash;
pub use load::{load, LoadError};
pub use open::Opened;
pub use stream::TlsRead;

/// The ALPN protocol PostgreSQL 17 requires for direct TLS (and libpq 17 sends with SSLRequest).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Client TLS as configured: where the files are (for `--check`) and the acceptor built from
/// them.
#[derive(Clone)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Client certificates are requested and verified against this CA (optional for the client,
    /// as PostgreSQL's `hostssl` without `clientcert`).
    pub ca_file: Option<PathBuf>,
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// `tls-server-end-point` binding data of the certificate served; `None` (no
    /// `SCRAM-SHA-256-PLUS` offered) when its signature algorithm has no usable hash.
    pub end_point: Option<std::sync::Arc<[u8]>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// One line for `--check`.
    pub fn describe(&self, required: bool) -> String {
        format!(
            "on, cert {}, key {}, client certificates {}, plaintext TCP clients {}",
            self.cert_file.display(),
            self.key_file.display(),
            match &self.ca_file {
                Some(ca) => format!("verified against {} (optional)", ca.display()),
                None => "not requested".into(),
            },
            if required { "refused" } else { "allowed" }
        )
    }
}
