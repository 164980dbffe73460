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
