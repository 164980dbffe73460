//! The `pgpivot` binary itself: `--check`, Bitnami environment, signals.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use pgpivot_tests::{
    connect, free_port, pivot_binary, pivot_env, spawn_binary, wait_listening, Cluster,
    ClusterOptions, PivotOptions,
};

fn check(env: &HashMap<String, String>) -> (bool, String) {
    let out = Command::new(pivot_binary().unwrap())
        .arg("--check")
        .env_clear()
        .envs(env)
        .output()
        .expect("run pgpivot --check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn base_env() -> HashMap<String, String> {
    [
        (
            "PGPOOL_BACKEND_NODES",
            "0:127.0.0.1:15432,1:127.0.0.1:15433,",
        ),
        ("PGPOOL_SR_CHECK_USER", "checker"),
        ("PGPOOL_SR_CHECK_PASSWORD", "sr-secret-value"),
        ("PGPOOL_POSTGRES_USERNAME", "app"),
        ("PGPOOL_POSTGRES_PASSWORD", "app-secret-value"),
        ("PGPOOL_CHILD_LIFE_TIME", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn check_prints_masked_settings_and_names_bad_variables() {
    let (ok, text) = check(&base_env());
    assert!(ok, "{text}");
    assert!(text.contains("127.0.0.1:15433"), "{text}");
    assert!(
        !text.contains("sr-secret-value") && !text.contains("app-secret-value"),
        "secret shown: {text}"
    );
    assert!(text.contains("********"));

    for (var, value) in [
        ("PGPOOL_BACKEND_NODES", "0:host:notaport"),
        ("PGPIVOT_CHECK_INTERVAL_MS", "soon"),
        ("PGPOOL_ENABLE_LOAD_BALANCING", "perhaps"),
        ("PGPIVOT_LISTEN_ADRESS", "127.0.0.1:1"),
    ] {
        let mut env = base_env();
        env.insert(var.into(), value.into());
        let (ok, text) = check(&env);
        assert!(!ok, "{var}={value} accepted");
        assert!(text.contains(var), "{var} not named: {text}");
    }

    // _FILE variants, and a TOML file under the environment.
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "from-file\n").unwrap();
    let toml = dir.path().join("pgpivot.toml");
    std::fs::write(
        &toml,
        "listen_addr = \"127.0.0.1:7777\"\ncheck_interval_ms = 250\n",
    )
    .unwrap();
    let mut env = base_env();
    env.remove("PGPOOL_POSTGRES_PASSWORD");
    env.insert(
        "PGPOOL_POSTGRES_PASSWORD_FILE".into(),
        pw.display().to_string(),
    );
    env.insert("PGPIVOT_CHECK_INTERVAL_MS".into(), "300".into());
    let out = Command::new(pivot_binary().unwrap())
        .args(["--check", "--config"])
        .arg(&toml)
        .env_clear()
        .envs(&env)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("127.0.0.1:7777"), "{text}");
    assert!(
        text.contains("PGPIVOT_CHECK_INTERVAL_MS = 300"),
        "env must win over the file: {text}"
    );
    assert!(text.contains("PGPOOL_POSTGRES_PASSWORD_FILE"), "{text}");
}

/// Starts the binary in front of `cluster`; returns (child, listen address, log path).
/// Starts the binary with a drain bound of `drain_ms`.
fn start_binary(
    cluster: &Cluster,
    dir: &std::path::Path,
    drain_ms: u64,
) -> (std::process::Child, String, std::path::PathBuf) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut env = pivot_env(cluster, &PivotOptions::default(), &listen, dir);
    env.insert("PGPIVOT_SHUTDOWN_TIMEOUT_MS".into(), drain_ms.to_string());
    let log = dir.join("pgpivot.log");
    let child = spawn_binary(&env, &[], &log).expect("spawn pgpivot");
    wait_listening(&listen, Duration::from_secs(10)).expect("pgpivot listening");
    (child, listen, log)
}

fn conn_string(listen: &str) -> String {
    let port = listen.rsplit(':').next().unwrap();
    format!("host=127.0.0.1 port={port} user=app password=secret dbname=bench connect_timeout=10")
}

fn signal(child: &std::process::Child, sig: i32) {
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

fn wait_exit(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_lets_transactions_finish_and_ends_idle_sessions() {
    let cluster = Cluster::start(ClusterOptions::default()).expect("cluster");
    let dir = tempfile::tempdir().unwrap();
    let (mut child, listen, log) = start_binary(&cluster, dir.path(), 4000);
    let conn = conn_string(&listen);
    let idle = connect(&conn).await.expect("idle client");
    idle.simple_query("SELECT 1").await.unwrap();
    let busy = connect(&conn).await.expect("busy client");
    busy.simple_query("BEGIN").await.unwrap();
    busy.execute("INSERT INTO pgpivot_probe (id) VALUES (1)", &[])
        .await
        .unwrap();

    signal(&child, libc::SIGTERM);
    // New connections are refused once the signal is handled.
    let refused_by = std::time::Instant::now() + Duration::from_secs(5);
    while connect(&conn).await.is_ok() {
        assert!(
            std::time::Instant::now() < refused_by,
            "still accepting new clients 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The open transaction can still commit.
    busy.simple_query("COMMIT")
        .await
        .expect("commit during drain");
    assert_eq!(cluster.count_rows(0, "pgpivot_probe").unwrap(), 1);
    // Both sessions are ended once idle and the process exits well before the bound.
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(8)))
        .await
        .unwrap();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "did not exit cleanly: {status:?}\n{log_text}"
    );
    assert!(idle.simple_query("SELECT 1").await.is_err());
    assert!(busy.simple_query("SELECT 1").await.is_err());
    assert!(log_text.contains("primary found"), "{log_text}");
}

/// A client inside a transaction, and the task driving its connection.
async fn client_in_transaction(
    listen: &str,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    let (client, connection) = tokio_postgres::connect(&conn_string(listen), tokio_postgres::NoTls)
        .await
        .expect("connect");
    let driver = tokio::spawn(connection);
    client.simple_query("BEGIN").await.unwrap();
    (client, driver)
}

/// After SIGINT: the session ends within 5 s with 57P01, then the process exits.
async fn ends_at_once_after_sigint(
    mut child: std::process::Child,
    driver: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) {
    signal(&child, libc::SIGINT);
    let ended = tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("session ended promptly after SIGINT")
        .unwrap();
    let err = ended.expect_err("FATAL expected");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::ADMIN_SHUTDOWN),
        "{err}"
    );
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(status.is_some(), "pgpivot still running after SIGINT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_ends_sessions_at_once() {
    let cluster = Cluster::start(ClusterOptions::default()).expect("cluster");
    let dir = tempfile::tempdir().unwrap();
    // A drain bound far above the test's own: a SIGINT that drained like SIGTERM would wait
    // for the open transaction and fail the 5 s bound.
    let (child, listen, _log) = start_binary(&cluster, dir.path(), 120_000);
    let (_client, driver) = client_in_transaction(&listen).await;
    ends_at_once_after_sigint(child, driver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_a_drain_ends_it_at_once() {
    let cluster = Cluster::start(ClusterOptions::default()).expect("cluster");
    let dir = tempfile::tempdir().unwrap();
    let (child, listen, log) = start_binary(&cluster, dir.path(), 120_000);
    let (client, driver) = client_in_transaction(&listen).await;
    signal(&child, libc::SIGTERM);
    // The drain waits for the open transaction (bound: 120 s) ...
    log_line(&log, &["draining"], Duration::from_secs(10)).await;
    client
        .simple_query("SELECT 1")
        .await
        .expect("the transaction goes on during the drain");
    // ... until the operator hurries it.
    ends_at_once_after_sigint(child, driver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_backend_list_from_its_file() {
    let cluster = Cluster::start(ClusterOptions::default()).expect("cluster");
    let dir = tempfile::tempdir().unwrap();
    let nodes_file = dir.path().join("backend_nodes");
    std::fs::write(&nodes_file, format!("0:127.0.0.1:{}\n", cluster.port(0))).unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut env = pivot_env(&cluster, &PivotOptions::default(), &listen, dir.path());
    env.remove("PGPOOL_BACKEND_NODES");
    env.insert(
        "PGPOOL_BACKEND_NODES_FILE".into(),
        nodes_file.display().to_string(),
    );
    let log = dir.path().join("pgpivot.log");
    let mut child = spawn_binary(&env, &[], &log).expect("spawn pgpivot");
    wait_listening(&listen, Duration::from_secs(10)).expect("pgpivot listening");
    let client = connect(&conn_string(&listen)).await.expect("connect");
    let rows = |msgs: Vec<tokio_postgres::SimpleQueryMessage>| {
        msgs.into_iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count()
    };
    assert_eq!(
        rows(client.simple_query("SHOW pool_nodes").await.unwrap()),
        1
    );
    std::fs::write(
        &nodes_file,
        format!(
            "0:127.0.0.1:{},1:127.0.0.1:{}\n",
            cluster.port(0),
            cluster.port(1)
        ),
    )
    .unwrap();
    signal(&child, libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while rows(client.simple_query("SHOW pool_nodes").await.unwrap()) != 2 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .simple_query("SELECT 1")
        .await
        .expect("the client kept working");
    signal(&child, libc::SIGINT);
    let _ =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(5))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_on_the_console_drains_and_exits() {
    let cluster = Cluster::start(ClusterOptions::default()).expect("cluster");
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let admin_port = free_port();
    let mut env = pivot_env(&cluster, &PivotOptions::default(), &listen, dir.path());
    env.insert("PGPOOL_ADMIN_USERNAME".into(), "admin".into());
    env.insert("PGPOOL_ADMIN_PASSWORD".into(), "adminpw".into());
    env.insert(
        "PGPIVOT_ADMIN_ADDR".into(),
        format!("127.0.0.1:{admin_port}"),
    );
    env.insert("PGPIVOT_SHUTDOWN_TIMEOUT_MS".into(), "4000".into());
    let log = dir.path().join("pgpivot.log");
    let mut child = spawn_binary(&env, &[], &log).expect("spawn pgpivot");
    wait_listening(&listen, Duration::from_secs(10)).expect("pgpivot listening");
    let client = connect(&conn_string(&listen)).await.expect("connect");
    client.simple_query("SELECT 1").await.unwrap();
    let admin = connect(&format!(
        "host=127.0.0.1 port={admin_port} user=admin password=adminpw dbname=pgpivot"
    ))
    .await
    .expect("console login");
    admin.simple_query("SHUTDOWN").await.expect("SHUTDOWN");
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(10)))
            .await
            .unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "pgpivot did not exit cleanly after SHUTDOWN: {status:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        client.simple_query("SELECT 1").await.is_err(),
        "sessions ended"
    );
}

/// Waits until the log holds a line with every one of `parts`; returns that line.
async fn log_line(log: &std::path::Path, parts: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_logged_once_with_node_timeline_and_gap() {
    let cluster = Cluster::start(ClusterOptions::default()).expect("cluster");
    let dir = tempfile::tempdir().unwrap();
    let (mut child, listen, log) = start_binary(&cluster, dir.path(), 4000);
    let found = log_line(
        &log,
        &["primary found", "node=0", "timeline=1"],
        Duration::from_secs(10),
    )
    .await;
    assert!(found.contains("standbys=[1]"), "{found}");
    cluster.kill9(0).expect("kill the primary");
    let lost = log_line(
        &log,
        &["primary lost", "lost=0", "timeline=1"],
        Duration::from_secs(10),
    )
    .await;
    assert!(lost.contains("reason="), "{lost}");
    log_line(
        &log,
        &["node down", "node=0", "role=\"primary\""],
        Duration::from_secs(1),
    )
    .await;
    cluster.promote(1).expect("promote");
    let failover = log_line(
        &log,
        &[
            "failover: writes now go to the new primary",
            "from=0",
            "to=1",
            "timeline=2",
        ],
        Duration::from_secs(10),
    )
    .await;
    let gap: u64 = failover
        .split("gap_ms=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no gap in ms: {failover}"));
    assert!(gap > 0 && gap < 60_000, "{failover}");
    log_line(
        &log,
        &[
            "node role changed",
            "node=1",
            "from=\"standby\"",
            "to=\"primary\"",
            "timeline=2",
        ],
        Duration::from_secs(1),
    )
    .await;
    // One line per event, not one per probe.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(text.matches("failover: writes now go").count(), 1, "{text}");
    assert_eq!(text.matches("primary lost").count(), 1, "{text}");
    let client = connect(&conn_string(&listen))
        .await
        .expect("connect after the failover");
    client.simple_query("SELECT 1").await.unwrap();
    signal(&child, libc::SIGINT);
    let _ =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(5))).await;
}
