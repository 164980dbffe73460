//! Effective configuration: typed, validated, with every value traceable to where it was set.

mod admin;
mod nodes;
mod settings;
mod source;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use admin::{AdminConfig, DEFAULT_ADMIN_ADDR};
pub use nodes::{parse_backend_nodes, split_list, BackendNode, NodeFlag};
pub use settings::{parse_bool, Kind, Setting, Use, SETTINGS};
pub use source::{Origin, RawSettings, RawValue};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: {reason}")]
    Invalid { origin: Origin, reason: String },
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("unknown variable {0} (not a pgpivot setting; typo?)")]
    UnknownVariable(String),
    #[error("config file {path}: unknown key `{key}`")]
    UnknownKey { path: String, key: String },
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
}

/// How clients prove who they are to pgpivot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ScramSha256,
    Md5,
}

impl AuthMethod {
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Md5 => "md5",
        }
    }
}

/// The file and environment a configuration was read from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub env: Arc<HashMap<String, String>>,
}

/// A user clients may log in as; the same password logs pgpivot in to the backend.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "User({:?}, ****)", self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A client holds one server connection for its whole session (Pgpool's behaviour).
    Session,
    /// A client holds a server connection only for the duration of a transaction.
    Transaction,
}

impl PoolMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub mode: PoolMode,
    pub size: usize,
    pub max_client_conn: usize,
    pub query_wait_timeout: Duration,
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    pub client_idle_limit: Option<Duration>,
}

/// Credentials and timing of the role monitor.
#[derive(Debug, Clone)]
pub struct CheckSettings {
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Timed-out probes in a row tolerated before the node is marked down.
    pub max_retries: u32,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    /// Where `/metrics`, `/livez` and `/readyz` are served; None when turned off.
    pub metrics_addr: Option<SocketAddr>,
    pub port: u16,
    pub socket_dir: Option<PathBuf>,
    pub socket_trust: bool,
    pub backends: Vec<BackendNode>,
    pub check: CheckSettings,
    pub connect_timeout: Duration,
    pub users: Vec<User>,
    pub auth_method: AuthMethod,
    pub primary_wait_timeout: Duration,
    pub max_message_bytes: usize,
    pub shutdown_timeout: Duration,
    pub authentication_timeout: Duration,
    pub log: String,
    pub pool: PoolConfig,
    pub admin: AdminConfig,
    /// Where this configuration came from, to read it again.
    pub sources: Sources,
    /// The merged raw values, for `--check` and `SHOW CONFIG`.
    pub raw: RawSettings,
}

impl Config {
    /// Loads from an optional TOML file and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::from_sources(file, &env)
    }

    pub fn from_sources(
        file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let raw = RawSettings::load(file, env)?;
        let mut config = Self::from_raw(raw)?;
        // Only our own variables are kept: RELOAD re-reads the file and the `_FILE` secrets.
        let ours = env
            .iter()
            .filter(|(k, _)| k.starts_with("PGPOOL_") || k.starts_with("PGPIVOT_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        config.sources = Sources {
            file: file.map(Path::to_path_buf),
            env: Arc::new(ours),
        };
        Ok(config)
    }

    /// Reads the same sources again (RELOAD, SIGHUP): the file and every `NAME_FILE` secret
    /// may have changed; the environment of a running process cannot.
    pub fn reload(&self) -> Result<Config, ConfigError> {
        Self::from_sources(self.sources.file.as_deref(), &self.sources.env)
    }

    /// Settings whose change only takes effect after a restart (listeners, pool mode).
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.listen_addr != new.listen_addr {
            out.push("PGPIVOT_LISTEN_ADDR");
        }
        if self.port != new.port || self.socket_dir != new.socket_dir {
            out.push("PGPOOL_PORT_NUMBER / PGPIVOT_SOCKET_DIR");
        }
        if self.admin.addr != new.admin.addr {
            out.push("PGPIVOT_ADMIN_ADDR");
        }
        if self.metrics_addr != new.metrics_addr {
            out.push("PGPIVOT_METRICS_ADDR");
        }
        if self.pool.mode != new.pool.mode {
            out.push("PGPIVOT_POOL_MODE");
        }
        out
    }

    fn from_raw(raw: RawSettings) -> Result<Config, ConfigError> {
        validate_shapes(&raw)?;
        let text = |key: &str| raw.get(key).map(|v| v.value.clone());
        let num = |key: &str| -> Result<Option<u64>, ConfigError> {
            raw.get(key).map(parse_num).transpose()
        };
        let ms = |key: &str| -> Result<Option<Duration>, ConfigError> {
            Ok(num(key)?.map(Duration::from_millis))
        };
        let flag = |key: &str| raw.get(key).and_then(|v| parse_bool(&v.value));

        let port = num("port")?.unwrap_or(5432);
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| invalid(&raw, "port", "not a valid port number"))?;
        let listen_addr = match raw.get("listen_addr") {
            Some(v) => v.value.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    &raw,
                    "listen_addr",
                    "expected host:port, e.g. 127.0.0.1:6432",
                )
            })?,
            None => SocketAddr::from(([0, 0, 0, 0], port)),
        };
        let metrics_addr = match raw.get("metrics_addr") {
            None => None,
            Some(v) if parse_bool(&v.value) == Some(false) => None,
            Some(v) => Some(v.value.trim().parse::<SocketAddr>().map_err(|_| {
                invalid(
                    &raw,
                    "metrics_addr",
                    "expected host:port (e.g. 0.0.0.0:9090) or off",
                )
            })?),
        };
        let backends = match raw.get("backend_nodes") {
            Some(v) => parse_backend_nodes(&v.value).map_err(|reason| ConfigError::Invalid {
                origin: v.origin.clone(),
                reason,
            })?,
            None => return Err(ConfigError::Missing("PGPOOL_BACKEND_NODES")),
        };

        let users = collect_users(&raw)?;
        let check_user = text("sr_check_user")
            .or_else(|| text("health_check_user"))
            .ok_or(ConfigError::Missing("PGPOOL_SR_CHECK_USER"))?;
        let check_password = text("sr_check_password").or_else(|| text("health_check_password"));
        let timeout = match ms("check_timeout_ms")? {
            Some(t) => t,
            None => num("health_check_timeout")?
                .map(Duration::from_secs)
                .unwrap_or(Duration::from_millis(1000)),
        };
        let interval = ms("check_interval_ms")?.unwrap_or(Duration::from_millis(500));
        if interval.is_zero() {
            return Err(invalid(&raw, "check_interval_ms", "must be at least 1"));
        }
        let check = CheckSettings {
            user: check_user,
            password: check_password,
            database: text("sr_check_database").unwrap_or_else(|| "postgres".into()),
            interval,
            timeout: timeout.max(Duration::from_millis(10)),
            max_retries: num("health_check_max_retries")?.unwrap_or(2) as u32,
        };
        let auth_method = match text("authentication_method").as_deref() {
            None | Some("scram-sha-256") => AuthMethod::ScramSha256,
            Some("md5") => AuthMethod::Md5,
            Some(_) => {
                return Err(invalid(
                    &raw,
                    "authentication_method",
                    "expected scram-sha-256 or md5",
                ))
            }
        };
        if flag("enable_tls") == Some(true) {
            return Err(invalid(
                &raw,
                "enable_tls",
                "TLS is not supported by this pgpivot version yet; set it to no",
            ));
        }
        let max_message_bytes = num("max_message_bytes")?.unwrap_or(1 << 30);
        if !(1024..=(1u64 << 31)).contains(&max_message_bytes) {
            return Err(invalid(
                &raw,
                "max_message_bytes",
                "must be between 1024 and 2^31",
            ));
        }
        let pool = pool_config(&raw)?;
        let admin = admin::admin_config(&raw)?;
        for s in SETTINGS.iter().filter(|s| s.used == Use::Accepted) {
            if let Some(v) = raw.get(s.key) {
                tracing::info!(setting = s.env, value = %v.value, "accepted for compatibility; no effect in this version");
            }
        }
        Ok(Config {
            listen_addr,
            metrics_addr,
            port,
            socket_dir: text("socket_dir").map(PathBuf::from),
            socket_trust: flag("socket_trust").unwrap_or(true),
            backends,
            check,
            connect_timeout: ms("connect_timeout")?.unwrap_or(Duration::from_secs(10)),
            users,
            auth_method,
            primary_wait_timeout: ms("primary_wait_timeout_ms")?.unwrap_or(Duration::from_secs(30)),
            max_message_bytes: max_message_bytes as usize,
            shutdown_timeout: ms("shutdown_timeout_ms")?.unwrap_or(Duration::from_secs(25)),
            authentication_timeout: ms("authentication_timeout_ms")?
                .unwrap_or(Duration::from_secs(30)),
            log: text("log").unwrap_or_else(|| "info".into()),
            pool,
            admin,
            sources: Sources::default(),
            raw,
        })
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The unix socket path clients use: `<dir>/.s.PGSQL.<port>`.
    pub fn socket_path(&self) -> Option<PathBuf> {
        self.socket_dir
            .as_ref()
            .map(|d| d.join(format!(".s.PGSQL.{}", self.port)))
    }

    /// Every setting pgpivot knows, as (variable, value, origin, description), secrets masked:
    /// what SHOW CONFIG lists.
    pub fn describe_all(&self) -> Vec<(String, String, String, String)> {
        SETTINGS
            .iter()
            .map(|s| {
                let (value, origin) = match self.raw.get(s.key) {
                    Some(_) if s.secret => ("********".to_string(), "set".to_string()),
                    Some(v) => (v.value.clone(), v.origin.to_string()),
                    None => (
                        s.default.unwrap_or("").to_string(),
                        if s.default.is_some() {
                            "default"
                        } else {
                            "unset"
                        }
                        .to_string(),
                    ),
                };
                (s.env.to_string(), value, origin, s.help.to_string())
            })
            .collect()
    }

    /// The effective settings as `name = value  (origin)` lines, secrets masked.
    pub fn describe(&self) -> Vec<(String, String, String)> {
        SETTINGS
            .iter()
            .filter_map(|s| {
                let v = self.raw.get(s.key)?;
                let shown = if s.secret {
                    "********".to_string()
                } else {
                    v.value.clone()
                };
                Some((s.env.to_string(), shown, v.origin.to_string()))
            })
            .collect()
    }
}

fn pool_config(raw: &RawSettings) -> Result<PoolConfig, ConfigError> {
    let num = |key: &str| raw.get(key).map(parse_num).transpose();
    let mode = match raw.get("pool_mode").map(|v| v.value.as_str()) {
        None | Some("session") => PoolMode::Session,
        Some("transaction") => PoolMode::Transaction,
        Some(_) => return Err(invalid(raw, "pool_mode", "expected session or transaction")),
    };
    let size = match num("pool_size")? {
        Some(n) => n,
        None => num("num_init_children")?.unwrap_or(20),
    };
    if size == 0 {
        return Err(invalid(raw, "pool_size", "must be at least 1"));
    }
    let never = Duration::from_secs(100 * 365 * 24 * 3600);
    let secs_or_never = |n: u64| {
        if n == 0 {
            never
        } else {
            Duration::from_secs(n)
        }
    };
    let server_idle_timeout = match num("server_idle_timeout_ms")? {
        Some(ms) => Duration::from_millis(ms),
        None => num("connection_life_time")?
            .map(secs_or_never)
            .unwrap_or(Duration::from_secs(600)),
    };
    Ok(PoolConfig {
        mode,
        size: size as usize,
        max_client_conn: num("max_client_conn")?.unwrap_or(10_000) as usize,
        query_wait_timeout: Duration::from_millis(num("query_wait_timeout_ms")?.unwrap_or(120_000)),
        server_lifetime: Duration::from_millis(num("server_lifetime_ms")?.unwrap_or(3_600_000)),
        server_idle_timeout,
        client_idle_limit: num("client_idle_limit")?
            .filter(|s| *s > 0)
            .map(Duration::from_secs),
    })
}

fn invalid(raw: &RawSettings, key: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        origin: raw
            .get(key)
            .map(|v| v.origin.clone())
            .unwrap_or(Origin::Default),
        reason: reason.to_string(),
    }
}

fn parse_num(v: &RawValue) -> Result<u64, ConfigError> {
    v.value
        .trim()
        .parse::<u64>()
        .map_err(|_| ConfigError::Invalid {
            origin: v.origin.clone(),
            reason: format!("`{}` is not a non-negative integer", v.value),
        })
}

/// Checks every set value against its declared shape, applied or only accepted, so a typo in a
/// Bitnami variable fails at start instead of surprising later.
fn validate_shapes(raw: &RawSettings) -> Result<(), ConfigError> {
    for s in SETTINGS {
        let Some(v) = raw.get(s.key) else { continue };
        match s.kind {
            Kind::Text => {}
            Kind::Number => {
                parse_num(v)?;
            }
            Kind::Bool => {
                if parse_bool(&v.value).is_none() {
                    return Err(ConfigError::Invalid {
                        origin: v.origin.clone(),
                        reason: format!("`{}` is not yes or no", v.value),
                    });
                }
            }
        }
    }
    Ok(())
}

fn collect_users(raw: &RawSettings) -> Result<Vec<User>, ConfigError> {
    let mut users = Vec::new();
    let main = raw
        .get("postgres_username")
        .map(|v| v.value.clone())
        .unwrap_or_else(|| "postgres".into());
    if let Some(pw) = raw.get("postgres_password") {
        users.push(User {
            name: main,
            password: pw.value.clone(),
        });
    }
    let names = raw.get("postgres_custom_users");
    let pws = raw.get("postgres_custom_passwords");
    match (names, pws) {
        (None, None) => {}
        (Some(n), Some(p)) => {
            let (ns, ps) = (split_list(&n.value), split_list(&p.value));
            if ns.len() != ps.len() {
                return Err(ConfigError::Invalid {
                    origin: p.origin.clone(),
                    reason: format!(
                        "{} users but {} passwords (lists must have the same length)",
                        ns.len(),
                        ps.len()
                    ),
                });
            }
            for (n, p) in ns.into_iter().zip(ps) {
                if users.iter().any(|u: &User| u.name == n) {
                    continue;
                }
                users.push(User {
                    name: n.to_string(),
                    password: p.to_string(),
                });
            }
        }
        (Some(_), None) => return Err(ConfigError::Missing("PGPOOL_POSTGRES_CUSTOM_PASSWORDS")),
        (None, Some(_)) => return Err(ConfigError::Missing("PGPOOL_POSTGRES_CUSTOM_USERS")),
    }
    if users.is_empty() {
        return Err(ConfigError::Missing("PGPOOL_POSTGRES_PASSWORD"));
    }
    Ok(users)
}

#[cfg(test)]
mod tests;
