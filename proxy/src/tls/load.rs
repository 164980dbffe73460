//! PEM files → a rustls server configuration. Errors say which file is wrong, so configuration
//! loading can name the variable that points at it.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

/// Which file did not load, and why.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("certificate: {0}")]
    Cert(String),
    #[error("key: {0}")]
    Key(String),
    #[error("CA: {0}")]
    Ca(String),
}

/// Builds the server configuration: certificate chain, its key (PKCS#8, PKCS#1/RSA or SEC1/EC),
/// and, with a CA, optional client-certificate verification. `prefer_server_ciphers` is Pgpool's
/// `ssl_prefer_server_ciphers`. ALPN `postgresql` is offered (libpq 17 sends it; direct TLS
/// requires it). Also returns the certificate's `tls-server-end-point` binding data.
pub fn load(
    cert: &Path,
    key: &Path,
    ca: Option<&Path>,
    prefer_server_ciphers: bool,
) -> Result<(Arc<ServerConfig>, Option<Vec<u8>>), LoadError> {
    let chain = certs(cert).map_err(LoadError::Cert)?;
    let end_point = super::end_point_hash(&chain[0]);
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| LoadError::Key(format!("{}: {}", key.display(), pem_error(e))))?;
    // The ring provider explicitly: no process-wide default to install or to conflict over.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError::Cert(e.to_string()))?;
    let builder = match ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca).map_err(LoadError::Ca)? {
                roots
                    .add(c)
                    .map_err(|e| LoadError::Ca(format!("{}: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| LoadError::Ca(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| LoadError::Key(format!("does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![super::ALPN_POSTGRESQL.to_vec()];
    config.ignore_client_order = prefer_server_ciphers;
    Ok((Arc::new(config), end_point))
}

/// Every certificate in a PEM file; none at all is an error (a key file given as the
/// certificate, say).
fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {}", path.display(), pem_error(e)))?;
    if chain.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(chain)
}

fn pem_error(e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM item of the expected kind".into(),
        other => format!("not valid PEM ({other:?})"),
    }
}
