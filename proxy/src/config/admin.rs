//! The admin console's settings: where it listens and who may log in.

use std::net::SocketAddr;

use super::build::{addr_or_off, invalid};
use super::source::RawSettings;
use super::{ConfigError, User};

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
    // Bitnami requires both; one without the other is a mistake, not a wish for no console.
    let user = match (text("admin_username"), text("admin_password")) {
        (Some(name), Some(password)) => Some(User { name, password }),
        (Some(_), None) => {
            return Err(invalid(
                raw,
                "admin_username",
                "PGPOOL_ADMIN_PASSWORD must be set with PGPOOL_ADMIN_USERNAME",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                raw,
                "admin_password",
                "PGPOOL_ADMIN_USERNAME must be set with PGPOOL_ADMIN_PASSWORD",
            ))
        }
        (None, None) => None,
    };
    let addr = match raw.get("admin_addr") {
        Some(_) => addr_or_off(raw, "admin_addr", DEFAULT_ADMIN_ADDR)?,
        None => DEFAULT_ADMIN_ADDR.parse().ok(),
    };
    Ok(AdminConfig {
        addr: if user.is_some() { addr } else { None },
        user,
    })
}

impl AdminConfig {
    /// One line for `--check`: where the console listens, or why there is none.
    pub fn describe(&self, raw: &RawSettings) -> String {
        match (&self.addr, &self.user) {
            (Some(a), Some(u)) => format!("on, {a}, user {}", u.name),
            (None, Some(_)) => "off (PGPIVOT_ADMIN_ADDR is off)".into(),
            _ if raw.get("admin_username").is_none() => {
                "off (no PGPOOL_ADMIN_USERNAME / PGPOOL_ADMIN_PASSWORD)".into()
            }
            _ => "off".into(),
        }
    }
}
