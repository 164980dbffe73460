//! From raw values to a typed, validated [`Config`]. Every error names what the operator set —
//! the variable, `_FILE`, file key or user-conf line — or, when the value is a default, the
//! setting's variable; never just "default".

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::notice::{Level, Notice};
use super::settings::{by_key, parse_bool, Kind, Use, COMPAT_HELP, SETTINGS};
use super::source::{Origin, RawSettings, RawValue};
use super::{
    admin, parse_backend_nodes, users, AuthMethod, CheckSettings, Config, ConfigError, PoolConfig,
    PoolMode, Sources,
};

/// Longer than any sensible timeout, short enough that `Instant::now() + d` cannot overflow.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub(super) fn build(raw: RawSettings) -> Result<Config, ConfigError> {
    validate_shapes(&raw)?;
    let text = |key: &str| raw.get(key).map(|v| v.value.clone());
    let flag = |key: &str| raw.get(key).and_then(|v| parse_bool(&v.value));

    let port = num(&raw, "port")?.unwrap_or(5432);
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| invalid(&raw, "port", "not a valid port number"))?;
    let listen_addr = match raw.get("listen_addr") {
        Some(v) => v.value.trim().parse::<SocketAddr>().map_err(|_| {
            invalid(
                &raw,
                "listen_addr",
                "expected host:port, e.g. 127.0.0.1:6432",
            )
        })?,
        None => SocketAddr::from(([0, 0, 0, 0], port)),
    };
    let metrics_addr = addr_or_off(&raw, "metrics_addr", "0.0.0.0:9090")?;
    let backends = match raw.get("backend_nodes") {
        Some(v) => parse_backend_nodes(&v.value).map_err(|reason| ConfigError::Invalid {
            origin: v.origin.clone(),
            reason,
        })?,
        None => return Err(ConfigError::Missing("PGPOOL_BACKEND_NODES")),
    };

    let users = users::collect_users(&raw)?;
    let check = check_settings(&raw)?;
    let auth_method = match text("authentication_method").as_deref().map(str::trim) {
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
    let (tls, tls_required) = super::tls::tls_config(&raw)?;
    let max_message_bytes = num(&raw, "max_message_bytes")?.unwrap_or(1 << 30);
    if !(1024..=(1u64 << 31)).contains(&max_message_bytes) {
        return Err(invalid(
            &raw,
            "max_message_bytes",
            "must be between 1024 and 2^31",
        ));
    }
    let log = text("log").unwrap_or_else(|| "info".into());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
        return Err(invalid(
            &raw,
            "log",
            &format!("not a valid log filter ({e}); e.g. info or info,pgpivot=debug"),
        ));
    }
    let pool = pool_config(&raw)?;
    let admin = admin::admin_config(&raw)?;
    let notices = compat_notices(&raw);
    Ok(Config {
        listen_addr,
        metrics_addr,
        port,
        socket_dir: text("socket_dir").map(PathBuf::from),
        socket_trust: flag("socket_trust").unwrap_or(true),
        backends,
        check,
        connect_timeout: timeout_ms(&raw, "connect_timeout", NO_BACKEND_WAIT_UNBOUNDED)?
            .unwrap_or(Duration::from_secs(10)),
        users,
        auth_method,
        primary_wait_timeout: ms(&raw, "primary_wait_timeout_ms")?
            .unwrap_or(Duration::from_secs(30)),
        max_message_bytes: max_message_bytes as usize,
        shutdown_timeout: ms(&raw, "shutdown_timeout_ms")?.unwrap_or(Duration::from_secs(25)),
        authentication_timeout: timeout_ms(
            &raw,
            "authentication_timeout_ms",
            "0 would refuse every login at once",
        )?
        .unwrap_or(Duration::from_secs(30)),
        log,
        pool,
        admin,
        tls,
        tls_required,
        notices,
        sources: Sources::default(),
        raw,
    })
}

const NO_BACKEND_WAIT_UNBOUNDED: &str = "in Pgpool 0 means no timeout, but pgpivot bounds every \
     wait on a backend and 0 would time each one out at once; give a duration";

const MAX_RETRIES: u64 = 100;

fn check_settings(raw: &RawSettings) -> Result<CheckSettings, ConfigError> {
    let text = |key: &str| raw.get(key).map(|v| v.value.clone());
    let user = text("sr_check_user")
        .or_else(|| text("health_check_user"))
        .ok_or(ConfigError::Missing("PGPOOL_SR_CHECK_USER"))?;
    let password = text("sr_check_password").or_else(|| text("health_check_password"));
    let timeout = match timeout_ms(raw, "check_timeout_ms", NO_BACKEND_WAIT_UNBOUNDED)? {
        // Shorter than a loopback login: every probe would time out and every node go down.
        Some(t) if t < Duration::from_millis(10) => {
            return Err(invalid(raw, "check_timeout_ms", "must be at least 10 (ms)"));
        }
        Some(t) => t,
        None => match num(raw, "health_check_timeout")? {
            Some(0) => {
                let why = format!("must not be 0: {NO_BACKEND_WAIT_UNBOUNDED}");
                return Err(invalid(raw, "health_check_timeout", &why));
            }
            Some(s) => bounded(raw, "health_check_timeout", Duration::from_secs(s))?,
            None => Duration::from_millis(1000),
        },
    };
    let interval = ms(raw, "check_interval_ms")?.unwrap_or(Duration::from_millis(500));
    if interval.is_zero() {
        return Err(invalid(raw, "check_interval_ms", "must be at least 1"));
    }
    // The budget is also how long a fresh pgpivot waits for a silent node before choosing a
    // primary without it (topology::decide): keep it a number of probes, not forever.
    let max_retries = match num(raw, "health_check_max_retries")? {
        None => 2,
        Some(n) if n <= MAX_RETRIES => n as u32,
        Some(_) => {
            return Err(invalid(
                raw,
                "health_check_max_retries",
                &format!("too large (at most {MAX_RETRIES})"),
            ))
        }
    };
    Ok(CheckSettings {
        user,
        password,
        database: text("sr_check_database").unwrap_or_else(|| "postgres".into()),
        interval,
        timeout,
        max_retries,
    })
}

fn pool_config(raw: &RawSettings) -> Result<PoolConfig, ConfigError> {
    let mode = match raw.get("pool_mode").map(|v| v.value.trim()) {
        None | Some("session") => PoolMode::Session,
        Some("transaction") => PoolMode::Transaction,
        Some(_) => return Err(invalid(raw, "pool_mode", "expected session or transaction")),
    };
    // PGPIVOT_POOL_SIZE, else Pgpool's num_init_children: blame whichever gave the value.
    let (size, size_key) = match num(raw, "pool_size")? {
        Some(n) => (n, "pool_size"),
        None => (
            num(raw, "num_init_children")?.unwrap_or(20),
            "num_init_children",
        ),
    };
    if size == 0 {
        return Err(invalid(raw, size_key, "must be at least 1"));
    }
    let server_idle_timeout = match timeout_ms(
        raw,
        "server_idle_timeout_ms",
        "0 would close every server connection as soon as it is idle (no pooling); \
         PGPOOL_CONNECTION_LIFE_TIME=0 means never",
    )? {
        Some(d) => d,
        None => match num(raw, "connection_life_time")? {
            Some(0) => MAX_DURATION,
            Some(s) => bounded(raw, "connection_life_time", Duration::from_secs(s))?,
            None => Duration::from_secs(600),
        },
    };
    let client_idle_limit = match num(raw, "client_idle_limit")? {
        None | Some(0) => None,
        Some(s) => Some(bounded(raw, "client_idle_limit", Duration::from_secs(s))?),
    };
    Ok(PoolConfig {
        mode,
        size: size as usize,
        max_client_conn: num(raw, "max_client_conn")?.unwrap_or(10_000) as usize,
        query_wait_timeout: timeout_ms(
            raw,
            "query_wait_timeout_ms",
            "0 would fail every client that has to wait for a server connection at once",
        )?
        .unwrap_or(Duration::from_secs(120)),
        server_lifetime: ms(raw, "server_lifetime_ms")?.unwrap_or(Duration::from_secs(3600)),
        server_idle_timeout,
        client_idle_limit,
    })
}

/// One line per compatibility setting that is set: what pgpivot does instead. Load balancing
/// turned on is a warning: reads are not routed, so a migration expecting it must know.
fn compat_notices(raw: &RawSettings) -> Vec<Notice> {
    let mut out = raw.notices.clone();
    for s in SETTINGS.iter().filter(|s| s.used == Use::Accepted) {
        let Some(v) = raw.get(s.key) else { continue };
        let balancing = matches!(
            s.key,
            "enable_load_balancing" | "enable_statement_load_balancing"
        ) && parse_bool(&v.value) == Some(true);
        let level = if balancing { Level::Warn } else { Level::Info };
        let shown = if s.secret {
            "********"
        } else {
            v.value.as_str()
        };
        let instead = match s.help {
            COMPAT_HELP => String::new(),
            help => format!(": {help}"),
        };
        out.push(Notice::new(
            level,
            format!(
                "{} = {shown}: accepted for compatibility, no effect in pgpivot{instead}",
                v.origin
            ),
        ));
    }
    out
}

/// The origin to blame for `key`: where it was set or, for a default, the setting's variable.
pub(super) fn origin_of(raw: &RawSettings, key: &'static str) -> Origin {
    match raw.get(key) {
        Some(v) if v.origin != Origin::Default => v.origin.clone(),
        _ => Origin::Env(by_key(key).map_or(key, |s| s.env)),
    }
}

pub(super) fn invalid(raw: &RawSettings, key: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        origin: origin_of(raw, key),
        reason: reason.to_string(),
    }
}

fn parse_num(v: &RawValue) -> Result<u64, ConfigError> {
    v.value
        .trim()
        .parse::<u64>()
        .map_err(|_| ConfigError::Invalid {
            origin: v.origin.clone(),
            reason: format!("`{}` is not a non-negative integer", v.value.trim()),
        })
}

fn num(raw: &RawSettings, key: &str) -> Result<Option<u64>, ConfigError> {
    raw.get(key).map(parse_num).transpose()
}

fn bounded(raw: &RawSettings, key: &'static str, d: Duration) -> Result<Duration, ConfigError> {
    if d > MAX_DURATION {
        return Err(invalid(raw, key, "too large (at most 100 years)"));
    }
    Ok(d)
}

fn ms(raw: &RawSettings, key: &'static str) -> Result<Option<Duration>, ConfigError> {
    num(raw, key)?
        .map(|n| bounded(raw, key, Duration::from_millis(n)))
        .transpose()
}

/// A timeout in milliseconds where 0 would be taken literally and break things: refused, saying
/// why.
fn timeout_ms(
    raw: &RawSettings,
    key: &'static str,
    why_not_zero: &str,
) -> Result<Option<Duration>, ConfigError> {
    match ms(raw, key)? {
        Some(d) if d.is_zero() => Err(invalid(raw, key, &format!("must not be 0: {why_not_zero}"))),
        other => Ok(other),
    }
}

/// `host:port`, or a boolean false (`off`, `no`, `false`, any case) for no listener.
pub(super) fn addr_or_off(
    raw: &RawSettings,
    key: &'static str,
    example: &str,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(v) = raw.get(key) else {
        return Ok(None);
    };
    if parse_bool(&v.value) == Some(false) {
        return Ok(None);
    }
    v.value.trim().parse::<SocketAddr>().map(Some).map_err(|_| {
        invalid(
            raw,
            key,
            &format!("expected host:port (e.g. {example}) or off"),
        )
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
                        reason: format!("`{}` is not yes or no", v.value.trim()),
                    });
                }
            }
        }
    }
    Ok(())
}
