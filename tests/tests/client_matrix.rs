//! The real-client matrix: psycopg 3, asyncpg, node-postgres, PgJDBC, tokio-postgres and sqlx
//! each run a scenario of ours (`tests/matrix/`, `src/bin/matrix-rust/`) directly against
//! PostgreSQL 15, then through pgpivot in session mode and in transaction mode, and print a
//! transcript of what they observed. Session mode must print exactly what direct PostgreSQL
//! printed; transaction mode too, except for the lines in [`TRANSACTION_MODE_LIMITS`], each a
//! documented limit of transaction pooling (README, *Client matrix*).
//!
//! The clients come from their registries (`deploy/local/install-deps.sh`); a missing one fails
//! the test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use pgpivot_tests::e2e::{start_cluster, start_pivot};
use pgpivot_tests::{Cluster, PivotOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// A whole scenario run; each step also has its own 20 s bound inside the client.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Transcript lines transaction mode may print differently from direct PostgreSQL:
/// (client or `*`, transcript key, why). README's *Client matrix* section lists the same.
const TRANSACTION_MODE_LIMITS: &[(&str, &str, &str)] = &[
    (
        "*",
        "startup.key_pid_is_backend_pid",
        "the login's BackendKeyData names one server connection; later transactions may run on others",
    ),
    (
        "*",
        "notify.got",
        "a client's own notifications carry the pid its login was told (as they do directly), which is not pg_backend_pid() of the connection it listens on",
    ),
    (
        "*",
        "prepared.server_side",
        "pg_prepared_statements lists the statements of the server connection the query runs on",
    ),
    (
        "psycopg",
        "prepared.many",
        "pg_prepared_statements lists the statements of the server connection the query runs on",
    ),
];

#[derive(Clone, Copy, Debug)]
enum Client {
    Psycopg,
    Asyncpg,
    NodePg,
    PgJdbc,
    TokioPostgres,
    Sqlx,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Psycopg => "psycopg",
            Client::Asyncpg => "asyncpg",
            Client::NodePg => "node-pg",
            Client::PgJdbc => "pgjdbc",
            Client::TokioPostgres => "tokio-postgres",
            Client::Sqlx => "sqlx",
        }
    }
}

fn matrix_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("matrix")
}

const PGJDBC_JAR: &str = "/usr/share/java/postgresql.jar";
const INSTALL_HINT: &str = "run deploy/local/install-deps.sh";

/// Checks the client is installed and readies it (PgJDBC: compiles the scenario into `scratch`).
async fn prepare(client: Client, scratch: &Path) {
    let check = |program: &str, args: &[&str]| {
        let out = std::process::Command::new(program)
            .args(args)
            .current_dir(matrix_dir())
            .output();
        assert!(
            out.as_ref().is_ok_and(|o| o.status.success()),
            "{} is required for the matrix ({INSTALL_HINT}): `{program} {}` gave {out:?}",
            client.name(),
            args.join(" ")
        );
    };
    match client {
        Client::Psycopg => check("python3", &["-c", "import psycopg"]),
        Client::Asyncpg => check("python3", &["-c", "import asyncpg"]),
        Client::NodePg => check(
            "node",
            &["-e", "require('./node/node_modules/pg'); require('./node/node_modules/pg-cursor'); require('./node/node_modules/pg-copy-streams')"],
        ),
        Client::PgJdbc => {
            assert!(Path::new(PGJDBC_JAR).is_file(), "PgJDBC ({PGJDBC_JAR}) is required ({INSTALL_HINT})");
            let src = matrix_dir().join("java/Scenario.java");
            let mut javac = tokio::process::Command::new("javac");
            javac.args(["-nowarn", "-cp", PGJDBC_JAR, "-d"]).arg(scratch).arg(&src).kill_on_drop(true);
            let out = tokio::time::timeout(Duration::from_secs(120), javac.output())
                .await
                .expect("javac timed out")
                .unwrap_or_else(|e| panic!("javac is required ({INSTALL_HINT}): {e}"));
            assert!(out.status.success(), "javac failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Client::TokioPostgres | Client::Sqlx => {}
    }
}

fn command(client: Client, scratch: &Path) -> tokio::process::Command {
    let dir = matrix_dir();
    let (program, args): (&str, Vec<String>) = match client {
        Client::Psycopg => (
            "python3",
            vec![dir.join("scenario_psycopg.py").display().to_string()],
        ),
        Client::Asyncpg => (
            "python3",
            vec![dir.join("scenario_asyncpg.py").display().to_string()],
        ),
        Client::NodePg => (
            "node",
            vec![
                "--no-deprecation".into(),
                dir.join("node/scenario.js").display().to_string(),
            ],
        ),
        Client::PgJdbc => (
            "java",
            vec![
                "-Xshare:auto".into(),
                "-XX:TieredStopAtLevel=1".into(),
                "-cp".into(),
                format!("{}:{PGJDBC_JAR}", scratch.display()),
                "Scenario".into(),
            ],
        ),
        Client::TokioPostgres => (
            env!("CARGO_BIN_EXE_matrix-rust"),
            vec!["tokio-postgres".into()],
        ),
        Client::Sqlx => (env!("CARGO_BIN_EXE_matrix-rust"), vec!["sqlx".into()]),
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs the scenario against 127.0.0.1:`port`; returns the transcript with the port replaced
/// by `<port>` (client-side messages may name it). A run that fails, exits early or outlives
/// [`RUN_TIMEOUT`] keeps what it printed, then a `run:` line saying so and its stderr.
async fn run(client: Client, scratch: &Path, c: &Cluster, port: u16) -> String {
    let o = c.options();
    let mut cmd = command(client, scratch);
    cmd.env("MATRIX_HOST", "127.0.0.1")
        .env("MATRIX_PORT", port.to_string())
        .env("MATRIX_USER", &o.app_user)
        .env("MATRIX_PASSWORD", &o.app_password)
        .env("MATRIX_DB", &o.database)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", client.name()));
    let stderr = child.stderr.take().expect("piped stderr");
    let stderr = tokio::spawn(async move {
        let mut buf = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut buf).await;
        buf
    });
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let deadline = tokio::time::Instant::now() + RUN_TIMEOUT;
    let mut transcript = String::new();
    let mut problem = None;
    loop {
        match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                transcript.push_str(&line.replace(&port.to_string(), "<port>"));
                transcript.push('\n');
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                problem = Some(format!("reading its output: {e}"));
                break;
            }
            Err(_) => {
                problem = Some(format!("still running after {RUN_TIMEOUT:?}, killed"));
                break;
            }
        }
    }
    let _ = child.start_kill();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let finished = transcript.ends_with(&format!("done: {}\n", client.name()));
    let problem = match (problem, status) {
        (Some(p), _) => Some(p),
        (None, Ok(Ok(s))) if s.success() && finished => None,
        (None, status) => Some(format!("did not finish ({status:?})")),
    };
    if let Some(p) = problem {
        let stderr = tokio::time::timeout(Duration::from_secs(5), stderr).await;
        let stderr = stderr.ok().and_then(Result::ok).unwrap_or_default();
        transcript.push_str(&format!("run: {p}\n"));
        for line in stderr.lines() {
            transcript.push_str(&format!("run.stderr: {line}\n"));
        }
    }
    transcript
}

/// A line-level diff (longest common subsequence): the lines only in `a` (`-`) and only in `b`
/// (`+`), in order.
fn diff<'a>(a: &'a str, b: &'a str) -> Vec<(char, &'a str)> {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(('-', a[i]));
            i += 1;
        } else {
            out.push(('+', b[j]));
            j += 1;
        }
    }
    out
}

fn key(line: &str) -> &str {
    line.split_once(':').map_or(line, |(k, _)| k)
}

fn allowed_in_transaction_mode(client: Client, line: &str) -> bool {
    TRANSACTION_MODE_LIMITS
        .iter()
        .any(|(c, k, _)| (*c == "*" || *c == client.name()) && *k == key(line))
}

fn report(client: Client, mode: &str, lines: &[(char, &str)]) -> String {
    let mut s = format!(
        "{} through pgpivot in {mode} mode differs from direct PostgreSQL:\n",
        client.name()
    );
    for (sign, line) in lines {
        s.push_str(&format!("  {sign} {line}\n"));
    }
    s
}

/// Runs `client`'s scenario directly, then through pgpivot in each pool mode, and compares.
///
/// pgpivot runs on a runtime of its own: a session that spins without yielding must make the
/// test fail at its deadline, not starve the timers and child processes of the test itself.
fn matrix(client: Client) {
    let test_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("test runtime");
    let scratch = tempfile::Builder::new()
        .prefix("pgpivot-matrix")
        .tempdir()
        .expect("temp dir");
    test_rt.block_on(prepare(client, scratch.path()));
    let c = start_cluster();
    let direct = test_rt.block_on(run(client, scratch.path(), &c, c.node(0).port));
    let errors: Vec<&str> = direct
        .lines()
        .filter(|l| key(l).ends_with(".failed") || key(l).starts_with("run"))
        .collect();
    assert!(
        errors.is_empty(),
        "the scenario itself fails against PostgreSQL: {errors:?}\n{direct}"
    );

    let mut failures = String::new();
    for mode in ["session", "transaction"] {
        let pivot_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pgpivot")
            .enable_all()
            .build()
            .expect("pgpivot runtime");
        let opts = PivotOptions {
            env: vec![("PGPIVOT_POOL_MODE".into(), mode.into())],
            ..Default::default()
        };
        let p = pivot_rt.block_on(start_pivot(&c, opts));
        let through = test_rt.block_on(run(client, scratch.path(), &c, p.addr.port()));
        let stopping = pivot_rt.spawn(p.stop());
        let stopped = test_rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(15), stopping).await });
        pivot_rt.shutdown_background();
        let d = diff(&direct, &through);
        let unexpected: Vec<(char, &str)> = match mode {
            "session" => d,
            _ => d
                .into_iter()
                .filter(|(_, l)| !allowed_in_transaction_mode(client, l))
                .collect(),
        };
        if !unexpected.is_empty() {
            failures.push_str(&report(client, mode, &unexpected));
        }
        if stopped.is_err() {
            failures.push_str(&format!(
                "pgpivot ({mode} mode) did not stop within 15 s after the run\n"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{failures}\ndirect PostgreSQL printed:\n{direct}"
    );
}

#[test]
fn psycopg() {
    matrix(Client::Psycopg);
}

#[test]
fn asyncpg() {
    matrix(Client::Asyncpg);
}

#[test]
fn node_postgres() {
    matrix(Client::NodePg);
}

#[test]
fn pgjdbc() {
    matrix(Client::PgJdbc);
}

#[test]
fn tokio_postgres() {
    matrix(Client::TokioPostgres);
}

#[test]
fn sqlx() {
    matrix(Client::Sqlx);
}

/// Every transaction-mode limit the matrix accepts is written down for users.
#[test]
fn transaction_mode_limits_are_documented() {
    let readme = include_str!("../../README.md");
    let section = readme
        .split_once("## Client matrix")
        .map(|(_, s)| s)
        .expect("README has a Client matrix section");
    for (client, key, _) in TRANSACTION_MODE_LIMITS {
        assert!(
            section.contains(&format!("`{key}`")) && (*client == "*" || section.contains(client)),
            "README's Client matrix section does not list {client} `{key}`"
        );
    }
}

#[test]
fn diff_finds_changed_missing_and_extra_lines() {
    let d = diff("a: 1\nb: 2\nc: 3\n", "a: 1\nb: 9\nc: 3\nd: 4\n");
    assert_eq!(d, [('-', "b: 2"), ('+', "b: 9"), ('+', "d: 4")]);
    assert!(diff("x: 1\n", "x: 1\n").is_empty());
}
