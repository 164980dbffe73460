//! `PGPOOL_USER_CONF_FILE` end to end through loading: precedence, warnings, errors, masking.

use super::*;

fn env_with_conf(conf: &Path, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut e: HashMap<String, String> = [
        ("PGPOOL_BACKEND_NODES", "0:127.0.0.1:15432"),
        ("PGPOOL_SR_CHECK_USER", "checker"),
        ("PGPOOL_POSTGRES_USERNAME", "app"),
        ("PGPOOL_POSTGRES_PASSWORD", "secret"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    e.insert("PGPOOL_USER_CONF_FILE".into(), conf.display().to_string());
    e
}

fn conf(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user.conf");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn its_keys_override_the_variables_and_secrets_stay_masked() {
    let (_d, path) = conf(
        "# appended to pgpool.conf by the Bitnami image\n\
         num_init_children = 7\n\
         connect_timeout = 2500\n\
         client_idle_limit = 60\n\
         health_check_timeout = 4\n\
         health_check_max_retries = 5\n\
         sr_check_user = 'conf_checker'\n\
         sr_check_password = 'conf''pw'\n\
         sr_check_database = monitor\n\
         port = 5433\n",
    );
    let e = env_with_conf(
        &path,
        &[
            ("PGPOOL_NUM_INIT_CHILDREN", "3"),
            ("PGPOOL_CONNECT_TIMEOUT", "9000"),
            ("PGPOOL_SR_CHECK_PASSWORD", "envpw"),
        ],
    );
    let c = Config::from_sources(None, &e).unwrap();
    assert_eq!(c.pool.size, 7);
    assert_eq!(c.connect_timeout, Duration::from_millis(2500));
    assert_eq!(c.pool.client_idle_limit, Some(Duration::from_secs(60)));
    assert_eq!(c.check.timeout, Duration::from_secs(4));
    assert_eq!(c.check.max_retries, 5);
    assert_eq!(c.check.user, "conf_checker");
    assert_eq!(c.check.password.as_deref(), Some("conf'pw"));
    assert_eq!(c.check.database, "monitor");
    assert_eq!(c.port, 5433);
    // pgpivot's own variables still win over their Pgpool counterparts.
    let mut e2 = e.clone();
    e2.insert("PGPIVOT_POOL_SIZE".into(), "9".into());
    assert_eq!(Config::from_sources(None, &e2).unwrap().pool.size, 9);

    let shown = c.describe();
    let (_, v, origin) = shown
        .iter()
        .find(|(k, _, _)| k == "PGPOOL_SR_CHECK_PASSWORD")
        .unwrap();
    assert_eq!(v, "********");
    assert!(origin.contains("line 8"), "{origin}");
    let all = format!("{shown:?} {:?} {c:?}", c.describe_all());
    assert!(!all.contains("conf'pw") && !all.contains("envpw"), "{all}");
}

#[test]
fn keys_without_meaning_warn_one_line_each_without_their_value() {
    let (_d, path) = conf(
        "listen_addresses = '*'\n\
         wd_authkey = 'wd-secret-value'\n\
         memory_cache_enabled = off\n\
         load_balance_mode = on\n",
    );
    let c = Config::from_sources(None, &env_with_conf(&path, &[])).unwrap();
    let warns: Vec<&Notice> = c
        .notices
        .iter()
        .filter(|n| n.level == Level::Warn && n.message.contains("has no effect"))
        .collect();
    assert_eq!(warns.len(), 3, "{warns:?}");
    assert!(warns[0].message.contains("line 1: `listen_addresses`"));
    assert!(warns[0].message.contains("PGPIVOT_LISTEN_ADDR"));
    assert!(c.notices.iter().all(|n| !n.message.contains("wd-secret")));
    // A mapped compatibility key gets the same notice as its variable.
    assert!(c.notices.iter().any(|n| n.level == Level::Warn
        && n.message.contains("`load_balance_mode`")
        && n.message.contains("primary")));
}

#[test]
fn a_missing_file_or_a_syntax_error_fails_naming_the_variable_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.conf");
    let e = Config::from_sources(None, &env_with_conf(&missing, &[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("PGPOOL_USER_CONF_FILE (") && e.contains("cannot read"),
        "{e}"
    );

    let (_d, path) = conf("port = 5433\nsr_check_password = 'S3cr3tConf\n");
    let e = Config::from_sources(None, &env_with_conf(&path, &[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("PGPOOL_USER_CONF_FILE (") && e.contains(") line 2: "),
        "{e}"
    );
    assert!(!e.contains("S3cr3tConf"), "{e}");

    // A value that does not fit its setting names the line and key.
    let (_d, path) = conf("\nnum_init_children = 0\n");
    let e = Config::from_sources(None, &env_with_conf(&path, &[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 2 `num_init_children`: must be at least 1"),
        "{e}"
    );
    let (_d, path) = conf("load_balance_mode = maybe\n");
    let e = Config::from_sources(None, &env_with_conf(&path, &[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1 `load_balance_mode`"), "{e}");
}

#[test]
fn reload_reads_it_again() {
    let (_d, path) = conf("num_init_children = 4\n");
    let c = Config::from_sources(None, &env_with_conf(&path, &[])).unwrap();
    assert_eq!(c.pool.size, 4);
    std::fs::write(&path, "num_init_children = 6\n").unwrap();
    assert_eq!(c.reload().unwrap().pool.size, 6);
}
