//! The admin console's settings: where it listens and who may log in.

use std::net::SocketAddr;

use super::source::RawSettings;
use super::{invalid, ConfigError, User};

/// Loopback by default: the console steers routing, so it is reached with `kubectl exec` or a
/// sidecar unless an operator opens it deliberately.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9433";

#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `None`: no console (`PGPIVOT_ADMIN_ADDR=off`, or no admin user configured).
    pub addr: Option<SocketAddr>,
    pub user: Option<User>,
}

pub fn admin_config(raw: &RawSettings) -> Result<AdminConfig, ConfigError> {
    let text = |key: &str| raw.get(key).map(|v| v.value.clone());
    let user = match (text("admin_username"), text("admin_password")) {
        (Some(name), Some(password)) => Some(User { name, password }),
        (Some(_), None) => {
            return Err(invalid(
                raw,
                "admin_username",
                "PGPOOL_ADMIN_PASSWORD must be set with PGPOOL_ADMIN_USERNAME",
            ))
        }
        _ => None,
    };
    let addr = match text("admin_addr").as_deref() {
        Some("off") => None,
        Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
            invalid(
                raw,
                "admin_addr",
                "expected host:port (e.g. 127.0.0.1:9433) or off",
            )
        })?),
        None => DEFAULT_ADMIN_ADDR.parse().ok(),
    };
    Ok(AdminConfig {
        addr: if user.is_some() { addr } else { None },
        user,
    })
}
