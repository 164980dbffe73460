//! Loading and validation, from the environment and files.

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn base() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "PGPOOL_BACKEND_NODES",
            "0:127.0.0.1:15432,1:127.0.0.1:15433,",
        ),
        ("PGPOOL_SR_CHECK_USER", "checker"),
        ("PGPOOL_SR_CHECK_PASSWORD", "pw"),
        ("PGPOOL_POSTGRES_USERNAME", "app"),
        ("PGPOOL_POSTGRES_PASSWORD", "secret"),
    ]
}

#[test]
fn bitnami_env_gives_defaults() {
    let c = Config::from_sources(None, &env(&base())).unwrap();
    assert_eq!(c.listen_addr.to_string(), "0.0.0.0:5432");
    assert_eq!(c.backends.len(), 2);
    assert_eq!(c.check.interval, Duration::from_millis(500));
    assert_eq!(c.primary_wait_timeout, Duration::from_secs(30));
    assert_eq!(c.auth_method, AuthMethod::ScramSha256);
    assert_eq!(c.user("app").unwrap().password, "secret");
    assert!(c.socket_path().is_none());
    assert_eq!(c.metrics_addr, Some(SocketAddr::from(([0, 0, 0, 0], 9090))));
}

#[test]
fn metrics_addr_can_be_moved_or_turned_off() {
    for (value, want) in [
        (
            "127.0.0.1:19090",
            Some(SocketAddr::from(([127, 0, 0, 1], 19090))),
        ),
        ("off", None),
        ("no", None),
        // Empty means unset (Bitnami convention): the default.
        ("", Some(SocketAddr::from(([0, 0, 0, 0], 9090)))),
    ] {
        let mut e = base();
        e.push(("PGPIVOT_METRICS_ADDR", value));
        let c = Config::from_sources(None, &env(&e)).unwrap();
        assert_eq!(c.metrics_addr, want, "{value:?}");
    }
}

#[test]
fn custom_users_and_masking() {
    let mut e = base();
    e.push(("PGPOOL_POSTGRES_CUSTOM_USERS", "u1;u2"));
    e.push(("PGPOOL_POSTGRES_CUSTOM_PASSWORDS", "p1,p2"));
    e.push(("PGPOOL_CHILD_LIFE_TIME", ""));
    e.push(("PGPIVOT_SOCKET_DIR", "/tmp/x"));
    let c = Config::from_sources(None, &env(&e)).unwrap();
    assert_eq!(c.users.len(), 3);
    assert_eq!(c.user("u2").unwrap().password, "p2");
    assert_eq!(
        c.socket_path().unwrap(),
        PathBuf::from("/tmp/x/.s.PGSQL.5432")
    );
    let shown = c.describe();
    assert!(shown.iter().all(|(_, v, _)| v != "secret" && v != "p1,p2"));
    assert!(shown
        .iter()
        .any(|(k, v, _)| k == "PGPOOL_POSTGRES_PASSWORD" && v == "********"));
}

#[test]
fn errors_name_the_variable() {
    let cases: &[(&str, &str, &str)] = &[
        ("PGPOOL_BACKEND_NODES", "0:h:nope", "PGPOOL_BACKEND_NODES"),
        (
            "PGPOOL_ENABLE_LOAD_BALANCING",
            "maybe",
            "PGPOOL_ENABLE_LOAD_BALANCING",
        ),
        (
            "PGPIVOT_CHECK_INTERVAL_MS",
            "fast",
            "PGPIVOT_CHECK_INTERVAL_MS",
        ),
        (
            "PGPOOL_AUTHENTICATION_METHOD",
            "trust",
            "PGPOOL_AUTHENTICATION_METHOD",
        ),
        ("PGPIVOT_LISTEN_ADDR", "localhost", "PGPIVOT_LISTEN_ADDR"),
        ("PGPIVOT_METRICS_ADDR", "9090", "PGPIVOT_METRICS_ADDR"),
        (
            "PGPOOL_POSTGRES_CUSTOM_USERS",
            "a,b",
            "PGPOOL_POSTGRES_CUSTOM_PASSWORDS",
        ),
    ];
    for (k, v, named) in cases {
        let mut e = base();
        e.retain(|(n, _)| n != k);
        e.push((k, v));
        let err = Config::from_sources(None, &env(&e))
            .unwrap_err()
            .to_string();
        assert!(err.contains(named), "{k}={v}: {err}");
    }
    let mut e = base();
    e.retain(|(n, _)| *n != "PGPOOL_BACKEND_NODES");
    let err = Config::from_sources(None, &env(&e))
        .unwrap_err()
        .to_string();
    assert!(err.contains("PGPOOL_BACKEND_NODES"));
}

fn load(e: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_sources(None, &env(e))
}

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut e = base();
    e.retain(|(n, _)| !extra.iter().any(|(k, _)| k == n));
    e.extend_from_slice(extra);
    e
}

fn err(extra: &[(&'static str, &'static str)]) -> String {
    load(&with(extra)).unwrap_err().to_string()
}

#[test]
fn pgpivot_config_is_a_known_name_and_survives_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, "check_interval_ms = 250\n").unwrap();
    let mut e = env(&base());
    e.insert("PGPIVOT_CONFIG".into(), path.display().to_string());
    let c = Config::from_sources(Some(&path), &e).unwrap();
    assert_eq!(c.check.interval, Duration::from_millis(250));
    std::fs::write(&path, "check_interval_ms = 300\n").unwrap();
    assert_eq!(
        c.reload().unwrap().check.interval,
        Duration::from_millis(300)
    );
}

#[test]
fn kubernetes_service_links_are_ignored_other_names_are_not() {
    let c = load(&with(&[
        ("PGPIVOT_PORT", "tcp://10.96.0.7:5432"),
        ("PGPIVOT_PORT_5432_TCP", "tcp://10.96.0.7:5432"),
        ("PGPIVOT_PORT_5432_TCP_ADDR", "10.96.0.7"),
        ("PGPIVOT_PORT_5432_TCP_PORT", "5432"),
        ("PGPIVOT_PORT_5432_TCP_PROTO", "tcp"),
        ("PGPIVOT_SERVICE_HOST", "10.96.0.7"),
        ("PGPIVOT_SERVICE_PORT", "5432"),
        ("PGPIVOT_SERVICE_PORT_POSTGRESQL", "5432"),
    ]))
    .unwrap();
    let links: Vec<_> = c
        .notices
        .iter()
        .filter(|n| n.message.contains("service link"))
        .collect();
    assert_eq!(links.len(), 8);
    assert!(links.iter().all(|n| n.level == Level::Debug));
    assert!(c.reload().is_ok());
    let e = err(&[("PGPIVOT_PORT", "6432")]);
    assert!(e.contains("unknown variable PGPIVOT_PORT"), "{e}");
    let e = err(&[("PGPIVOT_SERVICE_HOSTS", "x")]);
    assert!(e.contains("PGPIVOT_SERVICE_HOSTS"), "{e}");
}

#[test]
fn real_names_ending_in_file_are_not_unknown() {
    let c = load(&with(&[
        ("PGPOOL_TLS_CERT_FILE", "/c.pem"),
        ("PGPOOL_TLS_KEY_FILE", "/k.pem"),
        ("PGPOOL_TLS_CA_FILE", "/ca.pem"),
        ("PGPOOL_PASSWD_FILE", "/pool_passwd"),
    ]))
    .unwrap();
    assert!(
        c.notices.iter().all(|n| !n.message.contains("unknown")),
        "{:?}",
        c.notices
    );
}

#[test]
fn aes_key_is_masked_everywhere() {
    let c = load(&with(&[("PGPOOL_AES_KEY", "aes-key-value")])).unwrap();
    assert!(c.describe().iter().all(|(_, v, _)| !v.contains("aes-key")));
    assert!(c
        .describe_all()
        .iter()
        .all(|(_, v, _, _)| !v.contains("aes-key")));
    assert!(c.notices.iter().all(|n| !n.message.contains("aes-key")));
    assert!(c
        .notices
        .iter()
        .any(|n| n.message.contains("PGPOOL_AES_KEY")));
    assert!(!format!("{c:?}").contains("aes-key"));
}

#[test]
fn debug_output_masks_every_password() {
    let c = load(&with(&[
        ("PGPOOL_HEALTH_CHECK_PASSWORD", "hc-pw-value"),
        ("PGPOOL_ADMIN_USERNAME", "admin"),
        ("PGPOOL_ADMIN_PASSWORD", "admin-pw-value"),
    ]))
    .unwrap();
    let shown = format!("{c:?} {:?}", c.check);
    for secret in ["hc-pw-value", "admin-pw-value", "\"secret\"", "\"pw\""] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("checker"));
}

#[test]
fn errors_never_blame_a_default() {
    let e = err(&[("PGPOOL_NUM_INIT_CHILDREN", "0")]);
    assert!(e.starts_with("PGPOOL_NUM_INIT_CHILDREN: "), "{e}");
    let e = err(&[("PGPIVOT_POOL_SIZE", "0")]);
    assert!(e.starts_with("PGPIVOT_POOL_SIZE: "), "{e}");
    let raw = RawSettings::load(None, &env(&base())).unwrap();
    let e = build::invalid(&raw, "check_interval_ms", "x").to_string();
    assert_eq!(e, "PGPIVOT_CHECK_INTERVAL_MS: x");
}

#[test]
fn log_filter_comes_from_the_configuration_and_is_checked() {
    assert_eq!(load(&base()).unwrap().log, "info");
    let c = load(&with(&[("PGPIVOT_LOG", "debug,tokio=warn")])).unwrap();
    assert_eq!(c.log, "debug,tokio=warn");
    let mut e = base();
    e.push(("RUST_LOG", "warn"));
    assert_eq!(load(&e).unwrap().log, "warn");
    e.push(("PGPIVOT_LOG", "error"));
    assert_eq!(load(&e).unwrap().log, "error");

    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("p.toml");
    std::fs::write(&toml, "log = \"trace\"\n").unwrap();
    let mut e = env(&base());
    e.insert("RUST_LOG".into(), "warn".into());
    assert_eq!(Config::from_sources(Some(&toml), &e).unwrap().log, "trace");
    let file = dir.path().join("log");
    std::fs::write(&file, "pgpivot=debug\n").unwrap();
    e.insert("PGPIVOT_LOG_FILE".into(), file.display().to_string());
    assert_eq!(
        Config::from_sources(Some(&toml), &e).unwrap().log,
        "pgpivot=debug"
    );

    let e = err(&[("PGPIVOT_LOG", "foo=[bad")]);
    assert!(e.starts_with("PGPIVOT_LOG: not a valid log filter"), "{e}");
}

#[test]
fn zero_timeouts_are_refused_with_the_reason() {
    for var in [
        "PGPOOL_CONNECT_TIMEOUT",
        "PGPOOL_HEALTH_CHECK_TIMEOUT",
        "PGPIVOT_CHECK_TIMEOUT_MS",
        "PGPIVOT_AUTHENTICATION_TIMEOUT_MS",
        "PGPIVOT_QUERY_WAIT_TIMEOUT_MS",
        "PGPIVOT_SERVER_IDLE_TIMEOUT_MS",
    ] {
        let e = err(&[(var, "0")]);
        assert!(e.starts_with(&format!("{var}: must not be 0")), "{e}");
    }
    assert!(err(&[("PGPOOL_CONNECT_TIMEOUT", "0")]).contains("Pgpool"));
    // Where 0 has a meaning it stays allowed: never, no wait, no drain.
    let c = load(&with(&[
        ("PGPOOL_CONNECTION_LIFE_TIME", "0"),
        ("PGPOOL_CLIENT_IDLE_LIMIT", "0"),
        ("PGPIVOT_PRIMARY_WAIT_TIMEOUT_MS", "0"),
        ("PGPIVOT_SHUTDOWN_TIMEOUT_MS", "0"),
    ]))
    .unwrap();
    assert!(c.pool.client_idle_limit.is_none());
    let c = load(&with(&[("PGPOOL_HEALTH_CHECK_TIMEOUT", "3")])).unwrap();
    assert_eq!(c.check.timeout, Duration::from_secs(3));
    let e = err(&[("PGPOOL_CLIENT_IDLE_LIMIT", "18446744073709551615")]);
    assert!(e.starts_with("PGPOOL_CLIENT_IDLE_LIMIT: too large"), "{e}");
}

#[test]
fn an_empty_file_variant_leaves_the_earlier_value() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let empty = empty.display().to_string();
    let mut e = with(&[("PGPOOL_SR_CHECK_DATABASE", "fromenv")]);
    e.push(("PGPOOL_SR_CHECK_DATABASE_FILE", &empty));
    let c = load(&e).unwrap();
    assert_eq!(c.check.database, "fromenv");
    assert!(c
        .notices
        .iter()
        .any(|n| n.level == Level::Warn && n.message.contains("is empty")));

    let toml = dir.path().join("p.toml");
    std::fs::write(&toml, "sr_check_database = \"fromtoml\"\n").unwrap();
    let mut e = env(&base());
    e.insert("PGPOOL_SR_CHECK_DATABASE_FILE".into(), empty.clone());
    let c = Config::from_sources(Some(&toml), &e).unwrap();
    assert_eq!(c.check.database, "fromtoml");
}

#[test]
fn periods_are_accepted_with_a_notice_and_load_balancing_warns() {
    let c = load(&with(&[
        ("PGPOOL_SR_CHECK_PERIOD", "30"),
        ("PGPOOL_HEALTH_CHECK_PERIOD", "30"),
        ("PGPOOL_HEALTH_CHECK_RETRY_DELAY", "5"),
        ("PGPOOL_ENABLE_LOAD_BALANCING", "yes"),
    ]))
    .unwrap();
    assert_eq!(c.check.interval, Duration::from_millis(500));
    let about = |var: &str| {
        c.notices
            .iter()
            .find(|n| n.message.starts_with(var))
            .unwrap_or_else(|| panic!("no notice for {var}: {:?}", c.notices))
            .clone()
    };
    for var in [
        "PGPOOL_SR_CHECK_PERIOD",
        "PGPOOL_HEALTH_CHECK_PERIOD",
        "PGPOOL_HEALTH_CHECK_RETRY_DELAY",
    ] {
        let n = about(var);
        assert_eq!(n.level, Level::Info);
        assert!(n.message.contains("PGPIVOT_CHECK_INTERVAL_MS"), "{n:?}");
    }
    let n = about("PGPOOL_ENABLE_LOAD_BALANCING");
    assert_eq!(n.level, Level::Warn);
    assert!(n
        .message
        .contains("reads and writes both go to the primary"));
    let c = load(&with(&[("PGPOOL_ENABLE_LOAD_BALANCING", "no")])).unwrap();
    assert!(c.notices.iter().all(|n| n.level != Level::Warn));
}

#[test]
fn smaller_checks() {
    for big in ["4294967296", "101"] {
        let e = err(&[("PGPOOL_HEALTH_CHECK_MAX_RETRIES", big)]);
        assert!(
            e.starts_with("PGPOOL_HEALTH_CHECK_MAX_RETRIES: too large"),
            "{e}"
        );
    }
    assert!(load(&with(&[("PGPOOL_HEALTH_CHECK_MAX_RETRIES", "100")])).is_ok());
    let e = err(&[("PGPIVOT_CHECK_TIMEOUT_MS", "9")]);
    assert!(
        e.starts_with("PGPIVOT_CHECK_TIMEOUT_MS: must be at least 10"),
        "{e}"
    );
    let e = err(&[("PGPOOL_BACKEND_NODES", "0:a,128:b")]);
    assert!(
        e.starts_with("PGPOOL_BACKEND_NODES: ") && e.contains("0 to 127"),
        "{e}"
    );
    let e = err(&[("PGPOOL_BACKEND_NODES", "0:::1")]);
    assert!(e.contains("[::1]"), "{e}");

    let admin = [
        ("PGPOOL_ADMIN_USERNAME", "admin"),
        ("PGPOOL_ADMIN_PASSWORD", "apw"),
    ];
    for off in ["off", "OFF", "No", "false"] {
        let mut e = with(&admin);
        e.push(("PGPIVOT_ADMIN_ADDR", off));
        assert_eq!(load(&e).unwrap().admin.addr, None, "{off}");
        e.retain(|(k, _)| *k != "PGPIVOT_ADMIN_ADDR");
        e.push(("PGPIVOT_METRICS_ADDR", off));
        assert_eq!(load(&e).unwrap().metrics_addr, None, "{off}");
    }
    let mut e = with(&admin);
    e.push(("PGPIVOT_ADMIN_ADDR", " 127.0.0.1:19433 "));
    let c = load(&e).unwrap();
    assert_eq!(
        c.admin.addr,
        Some(SocketAddr::from(([127, 0, 0, 1], 19433)))
    );
    assert!(c.admin.describe(&c.raw).starts_with("on, 127.0.0.1:19433"));
    let e = err(&[("PGPOOL_ADMIN_PASSWORD", "apw")]);
    assert!(
        e.starts_with("PGPOOL_ADMIN_PASSWORD: PGPOOL_ADMIN_USERNAME must be set"),
        "{e}"
    );

    // The main user repeated in the custom list: same password is fine, another is an error.
    let ok = load(&with(&[
        ("PGPOOL_POSTGRES_CUSTOM_USERS", "app,u1"),
        ("PGPOOL_POSTGRES_CUSTOM_PASSWORDS", "secret,p1"),
    ]))
    .unwrap();
    assert_eq!(ok.users.len(), 2);
    for (users, pws) in [("app,u1", "other,p1"), ("u1,u1", "p1,p2")] {
        let e = err(&[
            ("PGPOOL_POSTGRES_CUSTOM_USERS", users),
            ("PGPOOL_POSTGRES_CUSTOM_PASSWORDS", pws),
        ]);
        assert!(e.starts_with("PGPOOL_POSTGRES_CUSTOM_USERS: "), "{e}");
        assert!(!e.contains("other") && !e.contains("p2"), "{e}");
    }

    let c = load(&with(&[("PGPIVOT_LISTEN_ADDR", " 127.0.0.1:6432\n")])).unwrap();
    assert_eq!(c.listen_addr, SocketAddr::from(([127, 0, 0, 1], 6432)));
}
