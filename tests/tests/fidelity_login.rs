//! Session mode is indistinguishable from PostgreSQL at login, and transaction mode differs only
//! where pooling must: the pid in BackendKeyData (the server's own in session mode; one no
//! backend can have in transaction mode), cancel through either, NOTIFY's sender pid, startup
//! parameters through every sequence of clients and the client's own RESET ALL / DISCARD ALL,
//! and the ParameterStatus greeting compared byte for byte with PostgreSQL's for the same
//! startup packet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgpivot_tests::e2e::{start_cluster, start_pivot};
use pgpivot_tests::wire;
use pgpivot_tests::{Cluster, Pivot, PivotOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

const TIMEOUT: Duration = Duration::from_secs(10);
/// Linux's PID_MAX_LIMIT: no process can have a larger pid.
const PID_MAX_LIMIT: i32 = 4_194_304;

type Msg = (u8, Vec<u8>);

fn opts(mode: &str, pool_size: usize) -> PivotOptions {
    PivotOptions {
        env: vec![
            ("PGPIVOT_POOL_MODE".into(), mode.into()),
            ("PGPIVOT_POOL_SIZE".into(), pool_size.to_string()),
        ],
        ..Default::default()
    }
}

fn pivot_socket(p: &Pivot) -> PathBuf {
    p.socket_dir.path().join(format!(".s.PGSQL.{}", p.port))
}

/// The primary's own unix socket (trusted by the fixture's pg_hba, as pgpivot's is).
fn direct_socket(c: &Cluster) -> PathBuf {
    let n = c.node(0);
    n.socket_dir.join(format!(".s.PGSQL.{}", n.port))
}

/// A trusted login as `app` to `bench` with extra startup parameters: the stream after
/// ReadyForQuery and every message of the greeting.
async fn login(path: &Path, extra: &[(&str, &str)]) -> (UnixStream, Vec<Msg>) {
    let mut s = UnixStream::connect(path).await.expect("unix socket");
    let mut params = vec![("user", "app"), ("database", "bench")];
    params.extend_from_slice(extra);
    s.write_all(&wire::startup(&params)).await.unwrap();
    let greeting = wire::read_until_ready(&mut s, TIMEOUT)
        .await
        .expect("login");
    assert!(
        !greeting.iter().any(|m| m.0 == b'E'),
        "login with {extra:?} failed: {greeting:?}"
    );
    (s, greeting)
}

/// The pid of the greeting's BackendKeyData.
fn key_pid(greeting: &[Msg]) -> i32 {
    let k = greeting
        .iter()
        .find(|m| m.0 == b'K')
        .expect("BackendKeyData");
    i32::from_be_bytes(k.1[..4].try_into().unwrap())
}

/// The first column of the first row of a simple query that must succeed.
async fn one(s: &mut UnixStream, sql: &str) -> String {
    s.write_all(&wire::query(sql)).await.unwrap();
    let answer = wire::read_until_ready(s, TIMEOUT).await.expect("answer");
    assert!(
        !answer.iter().any(|m| m.0 == b'E'),
        "`{sql}` failed: {answer:?}"
    );
    let row = answer
        .iter()
        .find(|m| m.0 == b'D')
        .unwrap_or_else(|| panic!("`{sql}`: no row in {answer:?}"));
    let len = i32::from_be_bytes(row.1[2..6].try_into().unwrap()) as usize;
    String::from_utf8_lossy(&row.1[6..6 + len]).into_owned()
}

/// A simple query that must succeed, its rows ignored.
async fn run(s: &mut UnixStream, sql: &str) {
    s.write_all(&wire::query(sql)).await.unwrap();
    let answer = wire::read_until_ready(s, TIMEOUT).await.expect("answer");
    assert!(
        !answer.iter().any(|m| m.0 == b'E'),
        "`{sql}` failed: {answer:?}"
    );
}

async fn leave(mut s: UnixStream) {
    s.write_all(&wire::message(b'X', b"")).await.unwrap();
    let _ = wire::answer_then_close(&mut s, TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_key_pid_is_the_servers_in_session_mode_and_no_backends_in_transaction_mode() {
    let c = start_cluster();
    for mode in ["session", "transaction"] {
        let p = start_pivot(&c, opts(mode, 4)).await;
        // Twice: the first login opens the pool's first connection, the second finds a pool.
        for round in 0..2 {
            let (mut s, greeting) = login(&pivot_socket(&p), &[]).await;
            let reported = key_pid(&greeting);
            let real: i32 = one(&mut s, "SELECT pg_backend_pid()")
                .await
                .parse()
                .unwrap();
            if mode == "session" {
                assert_eq!(reported, real, "{mode} #{round}: BackendKeyData pid");
            } else {
                assert!(
                    reported > PID_MAX_LIMIT,
                    "{mode} #{round}: {reported} could be a backend's pid"
                );
            }
            leave(s).await;
        }
        p.stop().await;
    }
}

/// psycopg (libpq): the pid the driver reports, notifications to itself, and cancel.
const PSYCOPG_PIDS: &str = r#"
import sys, threading, psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True)
pid = conn.info.backend_pid
real = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
conn.execute("LISTEN fidelity")
conn.execute("NOTIFY fidelity, 'to myself'")
n = next(conn.notifies(timeout=10, stop_after=1))
out = {"pid_is_real": pid == real, "pid_beyond_pid_max": pid > 4194304,
       "own_notification": n.pid == pid, "payload": n.payload}
for how in ["cancel", "cancel_safe"]:
    timer = threading.Timer(0.5, getattr(conn, how))
    timer.start()
    try:
        conn.execute("SELECT pg_sleep(20)")
        out[how] = "not cancelled"
    except psycopg.errors.QueryCanceled:
        out[how] = "cancelled"
    timer.join()
for k in sorted(out):
    print(k, out[k])
"#;

/// What the script printed, one `key value` per line.
async fn psycopg(script: &str, conn: &str) -> BTreeMap<String, String> {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args(["-c", script, conn]).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("python timed out")
        .expect("python3 with psycopg is required: run deploy/local/install-deps.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_see_their_own_pid_notifications_and_cancel() {
    let c = start_cluster();
    let direct = psycopg(PSYCOPG_PIDS, &c.app_conn_string(0)).await;
    for mode in ["session", "transaction"] {
        let p = start_pivot(&c, opts(mode, 4)).await;
        let got = psycopg(PSYCOPG_PIDS, &p.conn_string()).await;
        assert_eq!(got["payload"], "to myself", "{mode}");
        assert_eq!(got["cancel"], "cancelled", "{mode}: {got:?}");
        assert_eq!(got["cancel_safe"], "cancelled", "{mode}: {got:?}");
        if mode == "session" {
            assert_eq!(got, direct, "session mode is PostgreSQL");
        } else {
            // A transaction-pooling limit (README): pg_backend_pid() is not the reported pid,
            // which no backend can have; the client's own notifications carry it.
            assert_eq!(got["pid_is_real"], "False", "{got:?}");
            assert_eq!(got["pid_beyond_pid_max"], "True", "{got:?}");
            assert_eq!(got["own_notification"], "True", "{got:?}");
        }
        p.stop().await;
    }
}

/// `SHOW` of each name, one query each.
async fn shows(s: &mut UnixStream, names: &[&str]) -> Vec<String> {
    let mut v = Vec::new();
    for n in names {
        v.push(one(s, &format!("SHOW {n}")).await);
    }
    v
}

/// Startup parameters beyond user and database.
type Params<'a> = &'a [(&'a str, &'a str)];

const WATCHED: &[&str] = &[
    "statement_timeout",
    "idle_in_transaction_session_timeout",
    "application_name",
];

/// A sequence of clients with equal and different startup parameters, each checked on login,
/// after its own SET, RESET and DISCARD ALL: the values PostgreSQL gives for the same startup
/// packet. With one server connection every client reuses the previous client's.
async fn parameter_sequence(path: &Path, what: &str) {
    let five = [("statement_timeout", "5s"), ("application_name", "five")];
    let cases: &[(Params, [&str; 3])] = &[
        (&five, ["5s", "0", "five"]),
        (&five, ["5s", "0", "five"]),
        (&[], ["0", "0", ""]),
        (
            &[
                ("idle_in_transaction_session_timeout", "7s"),
                ("statement_timeout", "3000"),
            ],
            ["3s", "7s", ""],
        ),
        (
            &[("idle_in_transaction_session_timeout", "7s")],
            ["0", "7s", ""],
        ),
        (&five, ["5s", "0", "five"]),
    ];
    for (i, (params, want)) in cases.iter().enumerate() {
        let (mut s, _) = login(path, params).await;
        assert_eq!(
            shows(&mut s, WATCHED).await,
            want,
            "{what}: client #{i} {params:?} at login"
        );
        leave(s).await;
    }
    // The client's own resets go back to its startup values, as in PostgreSQL.
    for reset in [
        "RESET ALL",
        "DISCARD ALL",
        "RESET statement_timeout",
        "SET statement_timeout TO DEFAULT",
    ] {
        let (mut s, _) = login(path, &five).await;
        run(&mut s, "SET application_name = 'changed'").await;
        run(&mut s, reset).await;
        let got = shows(&mut s, &WATCHED[..1]).await;
        assert_eq!(got, ["5s"], "{what}: after {reset}");
        if reset.contains("ALL") {
            let got = shows(&mut s, &WATCHED[2..]).await;
            assert_eq!(got, ["five"], "{what}: application_name after {reset}");
        }
        leave(s).await;
        // And the next client with the same startup parameters gets them too.
        let (mut s, _) = login(path, &five).await;
        assert_eq!(
            shows(&mut s, WATCHED).await,
            ["5s", "0", "five"],
            "{what}: the client after one that ran {reset}"
        );
        leave(s).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_hold_across_clients_and_resets() {
    let c = start_cluster();
    // The expectations are PostgreSQL's own.
    parameter_sequence(&direct_socket(&c), "PostgreSQL").await;
    for mode in ["session", "transaction"] {
        let p = start_pivot(&c, opts(mode, 1)).await;
        parameter_sequence(&pivot_socket(&p), mode).await;
        p.stop().await;
    }
}

/// The ParameterStatus messages of a greeting, in order.
fn statuses(greeting: &[Msg]) -> Vec<String> {
    greeting
        .iter()
        .filter(|m| m.0 == b'S')
        .map(|m| String::from_utf8_lossy(&m.1).replace('\0', "|"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_parameter_status_is_postgres_own() {
    let c = start_cluster();
    let cases: &[&[(&str, &str)]] = &[
        &[],
        &[("client_encoding", "utf-8")],
        &[("client_encoding", "UNICODE")],
        &[("client_encoding", "euc-jp")],
        &[("client_encoding", "latin1")],
        &[("client_encoding", "Win-1252")],
        &[("datestyle", "german")],
        &[("DateStyle", "iso, dmy")],
        &[("TIMEZONE", "utc")],
        &[("timezone", "Asia/Tokyo")],
        &[("IntervalStyle", "iso_8601")],
        &[("application_name", "fidelity")],
        // PgJDBC's startup packet.
        &[
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "Europe/Paris"),
            ("extra_float_digits", "3"),
            ("application_name", "PostgreSQL JDBC Driver"),
        ],
    ];
    let mut want = Vec::new();
    for params in cases {
        let (s, greeting) = login(&direct_socket(&c), params).await;
        want.push(statuses(&greeting));
        leave(s).await;
    }
    for mode in ["session", "transaction"] {
        let p = start_pivot(&c, opts(mode, 2)).await;
        // Twice: greeted from a server connection, then from what the pool knows.
        for round in 0..2 {
            for (params, want) in cases.iter().zip(&want) {
                let (mut s, greeting) = login(&pivot_socket(&p), params).await;
                assert_eq!(
                    &statuses(&greeting),
                    want,
                    "{mode} #{round}: greeting for {params:?}"
                );
                // And the session is what it was told.
                let encoding = one(&mut s, "SHOW client_encoding").await;
                let told = want
                    .iter()
                    .find_map(|l| l.strip_prefix("client_encoding|"))
                    .unwrap();
                assert_eq!(format!("{encoding}|"), told, "{mode}: {params:?}");
                leave(s).await;
            }
        }
        p.stop().await;
    }
}
