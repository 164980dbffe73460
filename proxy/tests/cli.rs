//! The binary's command line without a database (the end-to-end tests in `tests/` use the
//! binary too; this test also makes `cargo test` build it).

use std::process::Command;

#[test]
fn version_and_missing_configuration() {
    let bin = env!("CARGO_BIN_EXE_pgpivot");
    let out = Command::new(bin).arg("--version").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("pgpivot"));

    let out = Command::new(bin)
        .arg("--check")
        .env_clear()
        .output()
        .expect("run");
    assert!(!out.status.success(), "no backend list must be an error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("PGPOOL_BACKEND_NODES"));
}

/// `pgpivot --check` with exactly `env` (plus `args`): (success, stdout, stderr).
fn check(env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgpivot"))
        .arg("--check")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn base() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "PGPOOL_BACKEND_NODES",
            "0:127.0.0.1:15432,1:127.0.0.1:15433,",
        ),
        ("PGPOOL_SR_CHECK_USER", "checker"),
        ("PGPOOL_SR_CHECK_PASSWORD", "sr-secret-value"),
        ("PGPOOL_POSTGRES_USERNAME", "app"),
        ("PGPOOL_POSTGRES_PASSWORD", "app-secret-value"),
    ]
}

fn plus<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut e = base();
    e.retain(|(k, _)| !extra.iter().any(|(x, _)| x == k));
    e.extend_from_slice(extra);
    e
}

#[test]
fn check_accepts_pgpivot_config_service_links_and_masks_the_aes_key() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("pgpivot.toml");
    std::fs::write(&toml, "listen_addr = \"127.0.0.1:7777\"\n").unwrap();
    let toml = toml.display().to_string();
    let (ok, out, err) = check(
        &plus(&[
            ("PGPIVOT_CONFIG", &toml),
            ("PGPIVOT_SERVICE_HOST", "10.96.0.7"),
            ("PGPIVOT_PORT", "tcp://10.96.0.7:5432"),
            ("PGPIVOT_PORT_5432_TCP_ADDR", "10.96.0.7"),
            ("PGPOOL_TLS_CERT_FILE", "/c.pem"),
            ("PGPOOL_AES_KEY", "aes-key-value"),
            ("PGPOOL_ADMIN_USERNAME", "admin"),
            ("PGPOOL_ADMIN_PASSWORD", "admin-secret-value"),
        ]),
        &[],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("listen_addr = 127.0.0.1:7777"), "{out}");
    assert!(
        out.contains("admin_console = on, 127.0.0.1:9433, user admin"),
        "{out}"
    );
    assert!(out.contains("PGPOOL_AES_KEY = ********"), "{out}");
    let all = format!("{out}{err}");
    for secret in ["aes-key-value", "admin-secret-value", "sr-secret-value"] {
        assert!(!all.contains(secret), "{secret} shown: {all}");
    }
    assert!(!err.contains("unknown"), "{err}");

    let (ok, out, _) = check(&plus(&[("PGPIVOT_ADMIN_ADDR", "OFF")]), &[]);
    assert!(ok);
    assert!(out.contains("admin_console = off"), "{out}");
    let (ok, _, err) = check(&plus(&[("PGPIVOT_PORT", "6432")]), &[]);
    assert!(
        !ok && err.contains("unknown variable PGPIVOT_PORT"),
        "{err}"
    );
}

#[test]
fn check_reads_the_user_conf_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("user.conf");
    std::fs::write(
        &conf,
        "num_init_children = 7\nhealth_check_password = 'conf-secret-value'\nwd_authkey = 'wd-secret-value'\n",
    )
    .unwrap();
    let conf_s = conf.display().to_string();
    let (ok, out, err) = check(
        &plus(&[
            ("PGPOOL_USER_CONF_FILE", &conf_s),
            ("PGPOOL_NUM_INIT_CHILDREN", "3"),
        ]),
        &[],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("PGPOOL_NUM_INIT_CHILDREN = 7"), "{out}");
    assert!(
        out.contains("PGPOOL_HEALTH_CHECK_PASSWORD = ********"),
        "{out}"
    );
    assert!(err.contains("line 3: `wd_authkey` has no effect"), "{err}");
    let all = format!("{out}{err}");
    assert!(
        !all.contains("conf-secret") && !all.contains("wd-secret"),
        "{all}"
    );

    std::fs::write(&conf, "port = 5433\nsr_check_password = 'S3cr3tConf\n").unwrap();
    let (ok, out, err) = check(&plus(&[("PGPOOL_USER_CONF_FILE", &conf_s)]), &[]);
    assert!(!ok);
    assert!(
        err.contains("PGPOOL_USER_CONF_FILE") && err.contains("line 2"),
        "{err}"
    );
    assert!(!format!("{out}{err}").contains("S3cr3tConf"));

    let (ok, _, err) = check(
        &plus(&[("PGPOOL_USER_CONF_FILE", "/nonexistent/u.conf")]),
        &[],
    );
    assert!(
        !ok && err.contains("PGPOOL_USER_CONF_FILE (/nonexistent/u.conf)"),
        "{err}"
    );
}

#[test]
fn check_names_the_variable_and_hides_toml_text() {
    for (var, value, says) in [
        (
            "PGPOOL_NUM_INIT_CHILDREN",
            "0",
            "PGPOOL_NUM_INIT_CHILDREN: must be at least 1",
        ),
        (
            "PGPOOL_CONNECT_TIMEOUT",
            "0",
            "PGPOOL_CONNECT_TIMEOUT: must not be 0",
        ),
        (
            "PGPOOL_HEALTH_CHECK_TIMEOUT",
            "0",
            "PGPOOL_HEALTH_CHECK_TIMEOUT: must not be 0",
        ),
        (
            "PGPOOL_HEALTH_CHECK_MAX_RETRIES",
            "4294967296",
            "PGPOOL_HEALTH_CHECK_MAX_RETRIES",
        ),
        (
            "PGPIVOT_LOG",
            "foo=[bad",
            "PGPIVOT_LOG: not a valid log filter",
        ),
        ("PGPOOL_BACKEND_NODES", "0:::1", "[::1]"),
        (
            "PGPOOL_ADMIN_PASSWORD",
            "x",
            "PGPOOL_ADMIN_USERNAME must be set",
        ),
    ] {
        let (ok, out, err) = check(&plus(&[(var, value)]), &[]);
        assert!(!ok, "{var}={value} accepted: {out}");
        assert!(err.contains(says), "{var}={value}: {err}");
        assert!(!err.contains("default:"), "{err}");
    }

    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("bad.toml");
    std::fs::write(&toml, "port = 1\npostgres_password = \"S3cr3tToml\n").unwrap();
    let (ok, out, err) = check(&base(), &["--config", toml.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("line 2, column"), "{err}");
    assert!(!format!("{out}{err}").contains("S3cr3tToml"), "{err}");
}

/// The log filter is the configuration's: the file's `log` key and PGPIVOT_LOG_FILE apply.
#[test]
fn check_logs_with_the_configured_filter() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("p.toml");
    let period = ("PGPOOL_SR_CHECK_PERIOD", "30");
    let notice = "PGPOOL_SR_CHECK_PERIOD = 30: accepted for compatibility";
    std::fs::write(&toml, "log = \"warn\"\n").unwrap();
    let (ok, _, err) = check(&plus(&[period]), &["--config", toml.to_str().unwrap()]);
    assert!(ok);
    assert!(!err.contains(notice), "info logged at warn: {err}");
    std::fs::write(&toml, "log = \"info\"\n").unwrap();
    let (ok, _, err) = check(&plus(&[period]), &["--config", toml.to_str().unwrap()]);
    assert!(ok);
    assert!(err.contains(notice), "{err}");

    let file = dir.path().join("log");
    std::fs::write(&file, "error\n").unwrap();
    let file = file.display().to_string();
    let (ok, out, err) = check(&plus(&[period, ("PGPIVOT_LOG_FILE", &file)]), &[]);
    assert!(ok);
    assert!(out.contains("PGPIVOT_LOG = error"), "{out}");
    assert!(!err.contains(notice), "{err}");

    // An empty _FILE leaves the variable's value.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.display().to_string();
    let (ok, out, _) = check(
        &plus(&[
            ("PGPOOL_SR_CHECK_DATABASE", "monitor"),
            ("PGPOOL_SR_CHECK_DATABASE_FILE", &empty),
        ]),
        &[],
    );
    assert!(ok);
    assert!(out.contains("PGPOOL_SR_CHECK_DATABASE = monitor"), "{out}");
}
