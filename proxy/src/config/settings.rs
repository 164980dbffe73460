//! The one list of settings pgpivot understands.
//!
//! Every setting has a file key (TOML) and an environment variable; the environment wins over the
//! file, and each variable may also come as `NAME_FILE` (read from that file, as the Bitnami image
//! does for secrets). One table drives loading, `--check` output and secret masking, so a new
//! setting cannot be honoured in one place and forgotten in another.

/// How a setting is used at this stage of the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Read and applied.
    Applied,
    /// A Bitnami/Pgpool variable accepted for compatibility (validated when it has a shape) but
    /// with no effect yet; a warning says so when it is set.
    Accepted,
}

/// Shape of a value, checked for every setting that is set, applied or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// `yes`/`no` (also true/false, on/off, 1/0).
    Bool,
    /// Non-negative integer.
    Number,
}

#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub key: &'static str,
    pub env: &'static str,
    pub secret: bool,
    pub kind: Kind,
    pub used: Use,
    pub default: Option<&'static str>,
    pub help: &'static str,
}

const fn s(
    key: &'static str,
    env: &'static str,
    kind: Kind,
    default: Option<&'static str>,
    help: &'static str,
) -> Setting {
    Setting {
        key,
        env,
        secret: false,
        kind,
        used: Use::Applied,
        default,
        help,
    }
}

const fn secret(key: &'static str, env: &'static str, help: &'static str) -> Setting {
    Setting {
        key,
        env,
        secret: true,
        kind: Kind::Text,
        used: Use::Applied,
        default: None,
        help,
    }
}

/// The help of a compatibility setting with nothing more to say.
pub const COMPAT_HELP: &str = "Pgpool/Bitnami setting accepted for compatibility; no effect";

const fn compat(key: &'static str, env: &'static str, kind: Kind) -> Setting {
    noted(key, env, kind, COMPAT_HELP)
}

/// A compatibility setting whose help says what pgpivot does instead (logged when it is set).
const fn noted(key: &'static str, env: &'static str, kind: Kind, help: &'static str) -> Setting {
    Setting {
        key,
        env,
        secret: false,
        kind,
        used: Use::Accepted,
        default: None,
        help,
    }
}

use Kind::*;

/// Every setting, in the order `--check` prints them.
pub const SETTINGS: &[Setting] = &[
    s(
        "listen_addr",
        "PGPIVOT_LISTEN_ADDR",
        Text,
        None,
        "TCP listen address (default 0.0.0.0:<port>)",
    ),
    s(
        "metrics_addr",
        "PGPIVOT_METRICS_ADDR",
        Text,
        Some("0.0.0.0:9090"),
        "HTTP address of /metrics, /livez and /readyz (off: no endpoint)",
    ),
    s(
        "port",
        "PGPOOL_PORT_NUMBER",
        Number,
        Some("5432"),
        "port number; also names the unix socket .s.PGSQL.<port>",
    ),
    s(
        "socket_dir",
        "PGPIVOT_SOCKET_DIR",
        Text,
        None,
        "unix socket directory (unset: no unix socket)",
    ),
    s(
        "socket_trust",
        "PGPIVOT_SOCKET_TRUST",
        Bool,
        Some("yes"),
        "known users need no password on the unix socket (Bitnami pool_hba: local all all trust)",
    ),
    s(
        "backend_nodes",
        "PGPOOL_BACKEND_NODES",
        Text,
        None,
        "num:host[:port[:weight[:datadir[:flag]]]] separated by , ; or spaces",
    ),
    s(
        "sr_check_user",
        "PGPOOL_SR_CHECK_USER",
        Text,
        None,
        "user for role probes (pg_is_in_recovery)",
    ),
    secret(
        "sr_check_password",
        "PGPOOL_SR_CHECK_PASSWORD",
        "password of sr_check_user",
    ),
    s(
        "sr_check_database",
        "PGPOOL_SR_CHECK_DATABASE",
        Text,
        Some("postgres"),
        "database for role probes",
    ),
    // Pgpool's periods (Bitnami: 30 s) would make failover detection 60 times slower than
    // pgpivot's 500 ms probes: accepted, not applied.
    noted(
        "sr_check_period",
        "PGPOOL_SR_CHECK_PERIOD",
        Number,
        "role probes run every PGPIVOT_CHECK_INTERVAL_MS (default 500 ms) instead",
    ),
    s(
        "health_check_user",
        "PGPOOL_HEALTH_CHECK_USER",
        Text,
        None,
        "probe user when sr_check_user is unset",
    ),
    secret(
        "health_check_password",
        "PGPOOL_HEALTH_CHECK_PASSWORD",
        "probe password when sr_check_password is unset",
    ),
    noted(
        "health_check_period",
        "PGPOOL_HEALTH_CHECK_PERIOD",
        Number,
        "health and role are one probe, run every PGPIVOT_CHECK_INTERVAL_MS (default 500 ms)",
    ),
    s(
        "health_check_timeout",
        "PGPOOL_HEALTH_CHECK_TIMEOUT",
        Number,
        None,
        "seconds; probe timeout when check_timeout_ms is unset",
    ),
    s(
        "health_check_max_retries",
        "PGPOOL_HEALTH_CHECK_MAX_RETRIES",
        Number,
        None,
        "timed-out probes tolerated before a node is marked down (default 2)",
    ),
    noted(
        "health_check_retry_delay",
        "PGPOOL_HEALTH_CHECK_RETRY_DELAY",
        Number,
        "a timed-out probe is retried at the next PGPIVOT_CHECK_INTERVAL_MS tick",
    ),
    s(
        "connect_timeout",
        "PGPOOL_CONNECT_TIMEOUT",
        Number,
        Some("10000"),
        "ms; timeout for connecting and logging in to a backend",
    ),
    s(
        "postgres_username",
        "PGPOOL_POSTGRES_USERNAME",
        Text,
        Some("postgres"),
        "application user clients log in as",
    ),
    secret(
        "postgres_password",
        "PGPOOL_POSTGRES_PASSWORD",
        "its password (also used to log in to the backend)",
    ),
    s(
        "postgres_custom_users",
        "PGPOOL_POSTGRES_CUSTOM_USERS",
        Text,
        None,
        "more users, separated by , ; or spaces",
    ),
    secret(
        "postgres_custom_passwords",
        "PGPOOL_POSTGRES_CUSTOM_PASSWORDS",
        "their passwords, same order",
    ),
    s(
        "admin_username",
        "PGPOOL_ADMIN_USERNAME",
        Text,
        None,
        "admin console user (SCRAM login; no console without it)",
    ),
    s(
        "admin_addr",
        "PGPIVOT_ADMIN_ADDR",
        Text,
        Some("127.0.0.1:9433"),
        "admin console listener (host:port, or off)",
    ),
    secret(
        "admin_password",
        "PGPOOL_ADMIN_PASSWORD",
        "admin console password",
    ),
    s(
        "authentication_method",
        "PGPOOL_AUTHENTICATION_METHOD",
        Text,
        Some("scram-sha-256"),
        "client authentication: scram-sha-256 or md5",
    ),
    s(
        "check_interval_ms",
        "PGPIVOT_CHECK_INTERVAL_MS",
        Number,
        Some("500"),
        "role probe interval",
    ),
    s(
        "check_timeout_ms",
        "PGPIVOT_CHECK_TIMEOUT_MS",
        Number,
        None,
        "role probe timeout (default 1000, or health_check_timeout)",
    ),
    s(
        "primary_wait_timeout_ms",
        "PGPIVOT_PRIMARY_WAIT_TIMEOUT_MS",
        Number,
        Some("30000"),
        "how long new connections wait for a primary",
    ),
    s(
        "max_message_bytes",
        "PGPIVOT_MAX_MESSAGE_BYTES",
        Number,
        Some("1073741824"),
        "largest message accepted from a client",
    ),
    s(
        "shutdown_timeout_ms",
        "PGPIVOT_SHUTDOWN_TIMEOUT_MS",
        Number,
        Some("25000"),
        "SIGTERM drain bound (below Kubernetes' 30 s grace)",
    ),
    s(
        "authentication_timeout_ms",
        "PGPIVOT_AUTHENTICATION_TIMEOUT_MS",
        Number,
        Some("30000"),
        "time a client has to complete its login",
    ),
    s(
        "log",
        "PGPIVOT_LOG",
        Text,
        Some("info"),
        "log filter (tracing EnvFilter syntax)",
    ),
    s("pool_mode", "PGPIVOT_POOL_MODE", Text, Some("session"), "session (a server connection per client session) or transaction"),
    s("pool_size", "PGPIVOT_POOL_SIZE", Number, None, "server connections per (node, user, database) pool (default PGPOOL_NUM_INIT_CHILDREN, else 20)"),
    s("max_client_conn", "PGPIVOT_MAX_CLIENT_CONN", Number, Some("10000"), "client connections accepted at once; more get 53300"),
    s("query_wait_timeout_ms", "PGPIVOT_QUERY_WAIT_TIMEOUT_MS", Number, Some("120000"), "how long a client waits for a free server connection"),
    s("server_lifetime_ms", "PGPIVOT_SERVER_LIFETIME_MS", Number, Some("3600000"), "idle server connections older than this are closed"),
    s("server_idle_timeout_ms", "PGPIVOT_SERVER_IDLE_TIMEOUT_MS", Number, None, "idle server connections unused this long are closed (default 600000, or PGPOOL_CONNECTION_LIFE_TIME)"),
    noted(
        "enable_load_balancing",
        "PGPOOL_ENABLE_LOAD_BALANCING",
        Bool,
        "pgpivot does not route reads: reads and writes both go to the primary",
    ),
    noted(
        "enable_statement_load_balancing",
        "PGPOOL_ENABLE_STATEMENT_LOAD_BALANCING",
        Bool,
        "pgpivot does not route reads: reads and writes both go to the primary",
    ),
    compat(
        "disable_load_balance_on_write",
        "PGPOOL_DISABLE_LOAD_BALANCE_ON_WRITE",
        Text,
    ),
    compat("max_pool", "PGPOOL_MAX_POOL", Number),
    s(
        "num_init_children",
        "PGPOOL_NUM_INIT_CHILDREN",
        Number,
        None,
        "Pgpool's cap on concurrent sessions: the default pool size",
    ),
    compat(
        "reserved_connections",
        "PGPOOL_RESERVED_CONNECTIONS",
        Number,
    ),
    s("client_idle_limit", "PGPOOL_CLIENT_IDLE_LIMIT", Number, None, "seconds; a client idle outside a transaction this long is disconnected (0 = never)"),
    s("connection_life_time", "PGPOOL_CONNECTION_LIFE_TIME", Number, None, "seconds; idle server connections unused this long are closed (0 = never)"),
    compat("child_life_time", "PGPOOL_CHILD_LIFE_TIME", Number),
    compat(
        "child_max_connections",
        "PGPOOL_CHILD_MAX_CONNECTIONS",
        Number,
    ),
    compat(
        "enable_connection_cache",
        "PGPOOL_ENABLE_CONNECTION_CACHE",
        Bool,
    ),
    compat("timeout", "PGPOOL_TIMEOUT", Number),
    s(
        "enable_tls",
        "PGPOOL_ENABLE_TLS",
        Bool,
        Some("no"),
        "TLS for clients (SSLRequest and PostgreSQL 17 direct TLS), data port and admin console",
    ),
    s(
        "tls_cert_file",
        "PGPOOL_TLS_CERT_FILE",
        Text,
        None,
        "PEM certificate (chain) served to clients; re-read by RELOAD/SIGHUP",
    ),
    s(
        "tls_key_file",
        "PGPOOL_TLS_KEY_FILE",
        Text,
        None,
        "PEM private key (PKCS#8, PKCS#1/RSA or SEC1/EC); re-read by RELOAD/SIGHUP",
    ),
    s(
        "tls_ca_file",
        "PGPOOL_TLS_CA_FILE",
        Text,
        None,
        "PEM CA: client certificates are requested and verified against it (optional for clients)",
    ),
    s(
        "tls_prefer_server_ciphers",
        "PGPOOL_TLS_PREFER_SERVER_CIPHERS",
        Bool,
        Some("yes"),
        "choose the cipher suite by the server's order rather than the client's (Bitnami: yes)",
    ),
    s(
        "tls_required",
        "PGPIVOT_TLS_REQUIRED",
        Bool,
        Some("no"),
        "refuse plaintext TCP clients with FATAL 28000 (unix-socket clients are exempt)",
    ),
    s(
        "user_conf_file",
        "PGPOOL_USER_CONF_FILE",
        Text,
        None,
        "pgpool.conf lines; keys with a meaning here override the PGPOOL_* variables",
    ),
    compat("user_hba_file", "PGPOOL_USER_HBA_FILE", Text),
    compat("enable_pool_hba", "PGPOOL_ENABLE_POOL_HBA", Bool),
    compat("enable_pool_passwd", "PGPOOL_ENABLE_POOL_PASSWD", Bool),
    compat("passwd_file", "PGPOOL_PASSWD_FILE", Text),
    Setting {
        secret: true,
        ..compat("aes_key", "PGPOOL_AES_KEY", Text)
    },
    compat("enable_ldap", "PGPOOL_ENABLE_LDAP", Bool),
    compat(
        "enable_log_connections",
        "PGPOOL_ENABLE_LOG_CONNECTIONS",
        Bool,
    ),
    compat("enable_log_hostname", "PGPOOL_ENABLE_LOG_HOSTNAME", Bool),
    compat(
        "enable_log_per_node_statement",
        "PGPOOL_ENABLE_LOG_PER_NODE_STATEMENT",
        Bool,
    ),
    compat(
        "enable_log_pcp_processes",
        "PGPOOL_ENABLE_LOG_PCP_PROCESSES",
        Bool,
    ),
    compat("log_line_prefix", "PGPOOL_LOG_LINE_PREFIX", Text),
    compat("client_min_messages", "PGPOOL_CLIENT_MIN_MESSAGES", Text),
    compat("auto_failback", "PGPOOL_AUTO_FAILBACK", Bool),
    compat(
        "backend_application_names",
        "PGPOOL_BACKEND_APPLICATION_NAMES",
        Text,
    ),
    compat("discard_status", "PGPOOL_DISCARD_STATUS", Bool),
    compat(
        "failover_on_backend_shutdown",
        "PGPOOL_FAILOVER_ON_BACKEND_SHUTDOWN",
        Text,
    ),
    compat(
        "failover_on_backend_error",
        "PGPOOL_FAILOVER_ON_BACKEND_ERROR",
        Text,
    ),
    compat(
        "health_check_psql_timeout",
        "PGPOOL_HEALTH_CHECK_PSQL_TIMEOUT",
        Number,
    ),
    compat("daemon_user", "PGPOOL_DAEMON_USER", Text),
    compat("daemon_group", "PGPOOL_DAEMON_GROUP", Text),
    compat("extra_flags", "PGPOOL_EXTRA_FLAGS", Text),
];

/// Looks a setting up by file key.
pub fn by_key(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// Parses the boolean spellings Bitnami scripts and operators use: yes/no as Bitnami documents,
/// and, leniently, true/false, on/off (pgpool.conf), 1/0 and y/n, in any case.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" | "y" => Some(true),
        "no" | "false" | "off" | "0" | "n" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_env_names_are_unique() {
        let mut keys: Vec<_> = SETTINGS.iter().map(|s| s.key).collect();
        let mut envs: Vec<_> = SETTINGS.iter().map(|s| s.env).collect();
        keys.sort();
        envs.sort();
        let (k, e) = (keys.len(), envs.len());
        keys.dedup();
        envs.dedup();
        assert_eq!(keys.len(), k);
        assert_eq!(envs.len(), e);
    }

    /// Anything that looks like a credential is masked in `--check`, SHOW CONFIG and logs.
    /// (`*_KEY_FILE` and `PGPOOL_PASSWD_FILE` name paths, not secrets.)
    #[test]
    fn secret_looking_names_are_secret() {
        for s in SETTINGS {
            let name = s.env.trim_end_matches("_FILE");
            let looks = ["PASSWORD", "SECRET", "TOKEN"]
                .iter()
                .any(|w| s.env.contains(w))
                || (name.ends_with("_KEY") && !s.env.ends_with("_FILE"));
            assert_eq!(s.secret, looks, "{}", s.env);
        }
    }

    #[test]
    fn bools() {
        assert_eq!(parse_bool("yes"), Some(true));
        assert_eq!(parse_bool("NO"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }
}
