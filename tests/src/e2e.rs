//! Helpers shared by the client and bad-input end-to-end tests: a standby-less cluster with
//! pgpivot in front, psql as a real client, server errors compared field by field, and a raw
//! login over pgpivot's trusted unix socket.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use crate::{pg_bin, wire, Cluster, ClusterOptions, Pivot, PivotOptions};

/// A primary without standbys (client behaviour does not need one).
pub fn start_cluster() -> Cluster {
    Cluster::start(ClusterOptions {
        standbys: 0,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("cluster start failed: {e:#}"))
}

/// pgpivot in front of `c`; its log (info and up) is captured and shown if the test fails.
pub async fn start_pivot(c: &Cluster, opts: PivotOptions) -> Pivot {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("PGPIVOT_TEST_LOG").unwrap_or_else(|_| "pgpivot=info".into()),
        )
        .with_test_writer()
        .try_init();
    Pivot::start(c, opts)
        .await
        .unwrap_or_else(|e| panic!("pgpivot start failed: {e:#}"))
}

/// What a psql run produced.
pub struct PsqlOut {
    pub ok: bool,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Runs psql (`-X -tA`, never prompting, no `PGPASSWORD` from our environment) as the current
/// user with `args` and extra environment; fails the test after 60 s.
pub async fn psql<A: Into<OsString>>(args: Vec<A>, env: &[(&str, &str)]) -> PsqlOut {
    let mut cmd = tokio::process::Command::new(pg_bin("psql"));
    cmd.args(["-X", "-tA", "-w"])
        .args(args.into_iter().map(Into::into))
        .env_remove("PGPASSWORD")
        .env("PGCONNECT_TIMEOUT", "10")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("psql timed out")
        .expect("running psql");
    PsqlOut {
        ok: out.status.success(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// psql `-d conn -c sql` that must succeed; returns its stdout.
pub async fn psql_ok(conn: &str, sql: &str) -> String {
    let out = psql(vec!["-d", conn, "-c", sql], &[]).await;
    assert!(out.ok, "psql `{sql}` failed: {}", out.stderr);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (SQLSTATE, severity, message) of a server error; panics on any other kind of error.
pub fn db_error(e: &tokio_postgres::Error) -> (String, String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected a server error, got {e:?}"));
    let code = db.code().code().to_string();
    (code, db.severity().to_string(), db.message().to_string())
}

/// A new client on `conn` inserts row `id` into `pgpivot_probe`; returns the node that stored
/// it (the table's `node` default names the server it lives on).
pub async fn insert_row(conn: &str, id: i64) -> anyhow::Result<String> {
    let c = crate::connect(conn).await?;
    let row = c
        .query_one(
            "INSERT INTO pgpivot_probe (id) VALUES ($1) RETURNING node",
            &[&id],
        )
        .await?;
    Ok(row.get(0))
}

/// The server error a login with `conn` must fail with.
pub async fn connect_err(conn: &str) -> (String, String, String) {
    match tokio_postgres::connect(conn, tokio_postgres::NoTls).await {
        Ok(_) => panic!("login with `{conn}` unexpectedly succeeded"),
        Err(e) => db_error(&e),
    }
}

/// Number of active queries starting with `prefix` on node 0.
pub fn active_queries(c: &Cluster, prefix: &str) -> usize {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '{prefix}%'"
    );
    let out = c.psql(0, &sql).expect("pg_stat_activity");
    out.parse()
        .unwrap_or_else(|_| panic!("count(*) gave {out:?}"))
}

/// Waits (10 s at most) until `count` queries starting with `prefix` run on node 0.
pub async fn wait_active(c: &Cluster, prefix: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while active_queries(c, prefix) != count {
        assert!(Instant::now() < deadline, "`{prefix}` never ran {count}x");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Logged in as `app` over pgpivot's unix socket (trusted: no password exchange), after
/// ReadyForQuery; also returns the BackendKeyData body pgpivot handed out.
pub async fn login_unix(p: &Pivot) -> (UnixStream, Vec<u8>) {
    let path = p.socket_dir.path().join(format!(".s.PGSQL.{}", p.port));
    let mut s = UnixStream::connect(&path).await.expect("unix socket");
    let startup = wire::startup(&[("user", "app"), ("database", "bench")]);
    s.write_all(&startup).await.expect("startup");
    let greeting = wire::read_until_ready(&mut s, Duration::from_secs(10))
        .await
        .expect("login");
    let key = greeting
        .into_iter()
        .find(|(t, _)| *t == b'K')
        .expect("BackendKeyData");
    (s, key.1)
}
