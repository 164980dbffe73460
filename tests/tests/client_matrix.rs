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

/// A whole scenario run; each step also has its own 20 s bound inside the client.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Transcript lines transaction mode may print differently from direct PostgreSQL:
/// (client or `*`, transcript key, why). README's *Client matrix* section lists the same.
const TRANSACTION_MODE_LIMITS: &[(&str, &str, &str)] = &[];

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
        Client::Psycopg => ("python3", vec![dir.join("scenario_psycopg.py").display().to_string()]),
        Client::Asyncpg => ("python3", vec![dir.join("scenario_asyncpg.py").display().to_string()]),
        Client::NodePg => ("node", vec!["--no-deprecation".into(), dir.join("node/scenario.js").display().to_string()]),
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
        Client::TokioPostgres => (env!("CARGO_BIN_EXE_matrix-rust"), vec!["tokio-postgres".into()]),
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
/// by `<port>` (client-side messages may name it). A failed or timed-out run panics with what
/// it printed.
async fn run(client: Client, scratch: &Path, c: &Cluster, port: u16, label: &str) -> String {
    let o = c.options();
    let mut cmd = command(client, scratch);
    cmd.env("MATRIX_HOST", "127.0.0.1")
        .env("MATRIX_PORT", port.to_string())
        .env("MATRIX_USER", &o.app_user)
        .env("MATRIX_PASSWORD", &o.app_password)
        .env("MATRIX_DB", &o.database);
    let out = tokio::time::timeout(RUN_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{} ({label}) ran longer than {RUN_TIMEOUT:?}", client.name()))
        .unwrap_or_else(|e| panic!("starting {} ({label}): {e}", client.name()));
    let stdout = String::from_utf8_lossy(&out.stdout).replace(&port.to_string(), "<port>");
    let done = format!("done: {}\n", client.name());
    assert!(
        out.status.success() && stdout.ends_with(&done),
        "{} ({label}) did not finish: {:?}\n{stdout}\n{}",
        client.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A line-level diff (longest common subsequence): the lines only in `a` (`-`) and only in `b`
/// (`+`), in order.
fn diff<'a>(a: &'a str, b: &'a str) -> Vec<(char, &'a str)> {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
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
    let mut s = format!("{} through pgpivot in {mode} mode differs from direct PostgreSQL:\n", client.name());
    for (sign, line) in lines {
        s.push_str(&format!("  {sign} {line}\n"));
    }
    s
}

async fn matrix(client: Client) {
    let scratch = tempfile::Builder::new().prefix("pgpivot-matrix").tempdir().expect("temp dir");
    prepare(client, scratch.path()).await;
    let c = start_cluster();
    let direct = run(client, scratch.path(), &c, c.node(0).port, "direct").await;
    let errors: Vec<&str> = direct.lines().filter(|l| key(l).ends_with(".error")).collect();
    assert!(errors.is_empty(), "the scenario itself fails against PostgreSQL: {errors:?}\n{direct}");

    let mut failures = String::new();
    for mode in ["session", "transaction"] {
        let opts = PivotOptions {
            env: vec![("PGPIVOT_POOL_MODE".into(), mode.into())],
            ..Default::default()
        };
        let p = start_pivot(&c, opts).await;
        let through = run(client, scratch.path(), &c, p.addr.port(), mode).await;
        p.stop().await;
        let d = diff(&direct, &through);
        let unexpected: Vec<(char, &str)> = match mode {
            "session" => d,
            _ => d.into_iter().filter(|(_, l)| !allowed_in_transaction_mode(client, l)).collect(),
        };
        if !unexpected.is_empty() {
            failures.push_str(&report(client, mode, &unexpected));
        }
    }
    assert!(failures.is_empty(), "{failures}\ndirect PostgreSQL printed:\n{direct}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg() {
    matrix(Client::Psycopg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg() {
    matrix(Client::Asyncpg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres() {
    matrix(Client::NodePg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc() {
    matrix(Client::PgJdbc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres() {
    matrix(Client::TokioPostgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx() {
    matrix(Client::Sqlx).await;
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
