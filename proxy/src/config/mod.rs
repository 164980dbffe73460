//! Effective configuration: typed, validated, with every value traceable to where it was set.

mod admin;
mod build;
mod names;
mod nodes;
mod notice;
pub(crate) mod pgpool_conf;
mod settings;
mod source;
mod tls;
mod toml_file;
mod users;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use admin::{AdminConfig, DEFAULT_ADMIN_ADDR};
pub use nodes::{parse_backend_nodes, split_list, BackendNode, NodeFlag};
pub use notice::{Level, Notice};
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
    /// `PGPOOL_USER_CONF_FILE`: unreadable, or a syntax error at `line`.
    #[error("{file}{}: {reason}", .line.map(|l| format!(" line {l}")).unwrap_or_default())]
    UserConf {
        file: String,
        line: Option<usize>,
        reason: String,
    },
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
#[derive(Clone, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub env: Arc<HashMap<String, String>>,
}

/// Variable names only: their values hold passwords.
impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.env.keys().collect();
        names.sort();
        f.debug_struct("Sources")
            .field("file", &self.file)
            .field("env", &names)
            .finish()
    }
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
#[derive(Clone)]
pub struct CheckSettings {
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Timed-out probes in a row tolerated before the node is marked down.
    pub max_retries: u32,
}

impl std::fmt::Debug for CheckSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckSettings")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "****"))
            .field("database", &self.database)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
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
    /// Client TLS (`PGPOOL_ENABLE_TLS`), with the acceptor built from its files.
    pub tls: Option<crate::tls::TlsConfig>,
    /// `PGPIVOT_TLS_REQUIRED`: plaintext TCP clients are refused.
    pub tls_required: bool,
    /// What loading wants the operator to know; see [`Config::log_notices`].
    pub notices: Vec<Notice>,
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
        let mut config = build::build(raw)?;
        // Only our own variables are kept: RELOAD re-reads the file and the `_FILE` secrets.
        let ours = env
            .iter()
            .filter(|(k, _)| {
                k.starts_with("PGPOOL_") || k.starts_with("PGPIVOT_") || *k == "RUST_LOG"
            })
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
        let new = Self::from_sources(self.sources.file.as_deref(), &self.sources.env)?;
        new.log_notices();
        Ok(new)
    }

    /// Logs what loading noticed (ignored variables and keys, settings without effect). The
    /// binary calls it once logging is set up with this configuration's filter.
    pub fn log_notices(&self) {
        for n in &self.notices {
            n.emit();
        }
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
        if self.log != new.log {
            out.push("PGPIVOT_LOG");
        }
        out
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

#[cfg(test)]
mod tests;
#[cfg(test)]
mod user_conf_tests;
