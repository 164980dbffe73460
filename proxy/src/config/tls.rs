//! Client TLS settings: the Bitnami variables (`PGPOOL_ENABLE_TLS`, `PGPOOL_TLS_*_FILE`) and
//! `PGPIVOT_TLS_REQUIRED`. The files are loaded here, so `--check`, start and RELOAD all fail on
//! a bad one, naming the variable that points at it.

use std::path::PathBuf;

use super::build::invalid;
use super::settings::parse_bool;
use super::source::RawSettings;
use super::ConfigError;
use crate::tls::{LoadError, TlsConfig};

pub fn tls_config(raw: &RawSettings) -> Result<(Option<TlsConfig>, bool), ConfigError> {
    let flag = |key: &str| raw.get(key).and_then(|v| parse_bool(&v.value));
    let path = |key: &str| {
        raw.get(key)
            .map(|v| v.value.trim())
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let required = flag("tls_required").unwrap_or(false);
    if flag("enable_tls") != Some(true) {
        if required {
            return Err(invalid(
                raw,
                "tls_required",
                "needs PGPOOL_ENABLE_TLS=yes (no client could connect over TCP)",
            ));
        }
        return Ok((None, false));
    }
    let cert_file = path("tls_cert_file").ok_or(ConfigError::Missing("PGPOOL_TLS_CERT_FILE"))?;
    let key_file = path("tls_key_file").ok_or(ConfigError::Missing("PGPOOL_TLS_KEY_FILE"))?;
    let ca_file = path("tls_ca_file");
    let (config, end_point) = crate::tls::load(
        &cert_file,
        &key_file,
        ca_file.as_deref(),
        // Bitnami's default.
        flag("tls_prefer_server_ciphers").unwrap_or(true),
    )
    .map_err(|e| match e {
        LoadError::Cert(r) => invalid(raw, "tls_cert_file", &r),
        LoadError::Key(r) => invalid(raw, "tls_key_file", &r),
        LoadError::Ca(r) => invalid(raw, "tls_ca_file", &r),
    })?;
    Ok((
        Some(TlsConfig {
            cert_file,
            key_file,
            ca_file,
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            end_point: end_point.map(Into::into),
        }),
        required,
    ))
}
