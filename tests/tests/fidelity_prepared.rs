//! Protocol-level prepared statements through pgpivot behave as PostgreSQL's own: in session mode
//! the client's statement names reach the server unchanged (Close closes, `pg_prepared_statements`
//! lists the client's names, errors are the server's), SQL `DEALLOCATE` and `DISCARD ALL` of
//! protocol-level statements are noticed in every form (simple, multi-statement, inside a rolled
//! back transaction, extended), and after a transparent failover the client's statements come
//! back on the new primary under the client's names. Transaction mode keeps psycopg's
//! `DEALLOCATE ALL` after DDL working and caps what a shared server connection holds. Replies
//! are compared byte for byte with a direct connection where the two must agree.

use std::time::{Duration, Instant};

use pgpivot_tests::e2e::{login_unix, start_cluster, start_pivot};
use pgpivot_tests::wire::{self, error_field};
use pgpivot_tests::{Cluster, ClusterOptions, Pivot, PivotOptions};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

type Reply = Vec<(u8, Vec<u8>)>;

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// Parse without parameter types.
fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend_from_slice(&[0, 0]);
    wire::message(b'P', &b)
}

/// Bind of `stmt` to the unnamed portal, no parameters, text results.
fn bind(stmt: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, "");
    cstr(&mut b, stmt);
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    wire::message(b'B', &b)
}

fn execute() -> Vec<u8> {
    wire::message(b'E', b"\0\0\0\0\0")
}

fn sync() -> Vec<u8> {
    wire::message(b'S', b"")
}

fn describe_statement(name: &str) -> Vec<u8> {
    let mut b = vec![b'S'];
    cstr(&mut b, name);
    wire::message(b'D', &b)
}

fn close_statement(name: &str) -> Vec<u8> {
    let mut b = vec![b'S'];
    cstr(&mut b, name);
    wire::message(b'C', &b)
}

/// Bind + Execute + Sync of `stmt`.
fn run(stmt: &str) -> Vec<u8> {
    [bind(stmt), execute(), sync()].concat()
}

/// The extended-protocol form of a one-statement query: unnamed Parse, Bind, Execute, Sync.
fn extended(sql: &str) -> Vec<u8> {
    [parse("", sql), run("")].concat()
}

const LIST: &str = "SELECT name, statement, parameter_types::text, from_sql \
                    FROM pg_prepared_statements ORDER BY name";

/// Each step is one request (ending in one Sync or one Query) sent on its own; returns each
/// step's replies up to its ReadyForQuery.
async fn play<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, steps: &[Vec<u8>]) -> Vec<Reply> {
    let mut out = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        s.write_all(step).await.expect("write a step");
        let reply = wire::read_until_ready(s, Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("step {i}: {e}"));
        out.push(reply);
    }
    out
}

/// Logged in as app to node `i` directly, over its (trusted) unix socket.
async fn direct(c: &Cluster, i: usize) -> UnixStream {
    let n = c.node(i);
    let path = n.socket_dir.join(format!(".s.PGSQL.{}", n.port));
    let mut s = UnixStream::connect(path).await.expect("unix socket");
    s.write_all(&wire::startup(&[("user", "app"), ("database", "bench")]))
        .await
        .unwrap();
    wire::read_until_ready(&mut s, Duration::from_secs(10))
        .await
        .expect("direct login");
    s
}

fn pivot_opts(mode: &str) -> PivotOptions {
    PivotOptions {
        env: vec![("PGPIVOT_POOL_MODE".into(), mode.into())],
        ..Default::default()
    }
}

/// `(tag, text)` of each message, for readable assertion failures.
fn show(reply: &Reply) -> Vec<(char, String)> {
    reply
        .iter()
        .map(|(t, b)| (*t as char, String::from_utf8_lossy(b).into_owned()))
        .collect()
}

/// Replies of the pgpivot run equal the direct run's, step by step.
fn assert_same(got: &[Reply], want: &[Reply], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g == w,
            "{what}, step {i}:\n pgpivot: {:?}\n postgres: {:?}",
            show(g),
            show(w)
        );
    }
}

/// SQLSTATE and message of the first ErrorResponse in `reply`.
fn error_of(reply: &Reply) -> Option<(String, String)> {
    reply.iter().find(|(t, _)| *t == b'E').map(|(_, b)| {
        (
            error_field(b, b'C').unwrap_or_default(),
            error_field(b, b'M').unwrap_or_default(),
        )
    })
}

/// The first column of every DataRow in `reply`.
fn first_column(reply: &Reply) -> Vec<String> {
    reply
        .iter()
        .filter(|(t, _)| *t == b'D')
        .map(|(_, b)| {
            let len = i32::from_be_bytes([b[2], b[3], b[4], b[5]]);
            String::from_utf8_lossy(&b[6..6 + len as usize]).into_owned()
        })
        .collect()
}

const PSYCOPG_SCRIPT: &str = r#"
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True, prepare_threshold=0) as conn:
    for i in range(2):
        conn.execute("create table t(a int)")
        conn.execute("drop table t")
    conn.execute("select 1")
print("ok")
"#;

/// psycopg prepares every statement (`prepare_threshold=0`) and sends `DEALLOCATE ALL` after
/// `DROP`: the next Parse of an already seen text must be prepared again, not assumed present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_ddl_with_prepare_threshold_zero_in_both_modes() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import psycopg"])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "python3 with psycopg is required: run deploy/local/install-deps.sh ({probe:?})"
    );
    let c = start_cluster();
    for mode in ["session", "transaction"] {
        let p = start_pivot(&c, pivot_opts(mode)).await;
        let mut cmd = tokio::process::Command::new("python3");
        cmd.args(["-c", PSYCOPG_SCRIPT, &p.conn_string()])
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("python timed out")
            .expect("python3");
        assert!(
            out.status.success() && out.stdout == b"ok\n",
            "{mode} mode: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        p.stop().await;
    }
}

/// Session mode: statement names pass through. Close really closes, the server lists the
/// client's names and only its open statements, and every error is the server's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_close_and_pg_prepared_statements_match_postgres() {
    let c = start_cluster();
    let steps = vec![
        [
            parse("s1", "SELECT 1"),
            parse("s2", "SELECT $1::int"),
            parse("S3", "SELECT 3"),
            sync(),
        ]
        .concat(),
        wire::query(LIST),
        [close_statement("s1"), sync()].concat(),
        wire::query(LIST),
        run("s1"),
        [describe_statement("s1"), sync()].concat(),
        [parse("s2", "SELECT 2"), sync()].concat(),
        // Close of a name that does not exist is not an error.
        [close_statement("nope"), close_statement("s1"), sync()].concat(),
        // The same text under a new name is a second statement on the server.
        [
            parse("s4", "SELECT $1::int"),
            describe_statement("s4"),
            sync(),
        ]
        .concat(),
        run("S3"),
        [close_statement("s2"), close_statement("S3"), sync()].concat(),
        wire::query(LIST),
        [parse("s1", "SELECT 'again'"), sync()].concat(),
        run("s1"),
        wire::query(LIST),
    ];
    let want = play(&mut direct(&c, 0).await, &steps).await;
    let p = start_pivot(&c, pivot_opts("session")).await;
    let (mut s, _) = login_unix(&p).await;
    let got = play(&mut s, &steps).await;
    assert_same(&got, &want, "session mode");
    assert_eq!(first_column(&got[1]), ["S3", "s1", "s2"]);
    assert_eq!(first_column(&got[14]), ["s1", "s4"]);
}

/// `DEALLOCATE` and `DISCARD ALL` of protocol-level statements, in every form a client sends
/// them, against the same steps on a direct connection.
fn deallocate_steps() -> Vec<Vec<u8>> {
    let prepare_all = [
        parse("s1", "SELECT 1"),
        parse("s2", "SELECT 2"),
        parse("s3", "SELECT 3"),
        parse("s4", "SELECT 4"),
        parse("s5", "SELECT 5"),
        parse("Mixed", "SELECT 6"),
        sync(),
    ]
    .concat();
    vec![
        prepare_all,
        wire::query("DEALLOCATE s1"),
        run("s1"),
        wire::query("deallocate prepare s2"),
        run("s2"),
        wire::query("SELECT 1; DEALLOCATE s3; SELECT 2"),
        run("s3"),
        wire::query("BEGIN"),
        wire::query("DEALLOCATE s4"),
        wire::query("ROLLBACK"),
        run("s4"),
        extended("DEALLOCATE s5"),
        run("s5"),
        wire::query("DEALLOCATE \"Mixed\""),
        run("Mixed"),
        // Gone means gone: the names can be used again.
        [
            parse("s1", "SELECT 'one'"),
            parse("s3", "SELECT 'three'"),
            sync(),
        ]
        .concat(),
        run("s1"),
        wire::query("DEALLOCATE ALL"),
        run("s1"),
        [parse("s1", "SELECT 1"), parse("s2", "SELECT 2"), sync()].concat(),
        wire::query("DISCARD ALL"),
        run("s2"),
        [parse("s2", "SELECT 'two'"), sync()].concat(),
        run("s2"),
        // A failing DEALLOCATE changes nothing, and the next one still counts.
        wire::query("DEALLOCATE nope; DEALLOCATE s2"),
        run("s2"),
        wire::query("DEALLOCATE s2"),
        run("s2"),
        [parse("s3", "SELECT 3"), sync()].concat(),
        run("s3"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_forms_match_postgres_in_session_mode() {
    let c = start_cluster();
    let mut steps = deallocate_steps();
    steps.push(wire::query(LIST));
    let want = play(&mut direct(&c, 0).await, &steps).await;
    let p = start_pivot(&c, pivot_opts("session")).await;
    let (mut s, _) = login_unix(&p).await;
    let got = play(&mut s, &steps).await;
    assert_same(&got, &want, "session mode");
    assert_eq!(first_column(got.last().unwrap()), ["s3"]);
}

/// Transaction mode: the same forms; the server's statement names are pgpivot's there, so
/// `pg_prepared_statements` is not compared, everything the client sees is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_forms_match_postgres_in_transaction_mode() {
    let c = start_cluster();
    let steps = deallocate_steps();
    let want = play(&mut direct(&c, 0).await, &steps).await;
    let p = start_pivot(&c, pivot_opts("transaction")).await;
    let (mut s, _) = login_unix(&p).await;
    let got = play(&mut s, &steps).await;
    assert_same(&got, &want, "transaction mode");
}

/// Session mode, transparent failover: the idle client's statements (minus those it
/// deallocated or closed) are prepared on the new primary under its own names before first use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_statements_follow_a_transparent_failover_under_client_names() {
    let c = Cluster::start(ClusterOptions::default()).expect("cluster");
    let p: Pivot = start_pivot(&c, pivot_opts("session")).await;
    let (mut s, _) = login_unix(&p).await;
    let before = vec![
        [
            parse("a", "SELECT 'a'"),
            parse("b", "SELECT 'b'"),
            parse("c", "SELECT 'c'"),
            parse("d", "SELECT 'd'"),
            parse("e", "SELECT 'e'"),
            parse("f", "SELECT 'f'"),
            parse("g", "SELECT $1::int + 1"),
            sync(),
        ]
        .concat(),
        wire::query("DEALLOCATE b"),
        wire::query("SELECT 1; DEALLOCATE PREPARE c"),
        wire::query("BEGIN"),
        wire::query("DEALLOCATE d"),
        wire::query("ROLLBACK"),
        extended("DEALLOCATE e"),
        [close_statement("f"), sync()].concat(),
        wire::query(LIST),
    ];
    let got = play(&mut s, &before).await;
    for (i, r) in got.iter().enumerate() {
        assert_eq!(
            error_of(r),
            None,
            "step {i} before the failover: {:?}",
            show(r)
        );
    }
    assert_eq!(first_column(got.last().unwrap()), ["a", "g"]);

    c.kill9(0).expect("kill the primary");
    let start = Instant::now();
    while p.primary() == Some(0) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "pgpivot kept node 0"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.promote(1).expect("promote");
    p.wait_primary(1, Duration::from_secs(20)).await.unwrap();

    let after = vec![
        run("a"),
        wire::query(LIST),
        run("b"),
        run("c"),
        run("d"),
        run("e"),
        run("f"),
        [parse("a", "SELECT 'other'"), sync()].concat(),
        [parse("b", "SELECT 'b2'"), describe_statement("g"), sync()].concat(),
        run("b"),
        wire::query(LIST),
        wire::query("SELECT pg_is_in_recovery()"),
    ];
    let got = play(&mut s, &after).await;
    assert_eq!(error_of(&got[0]), None, "{:?}", show(&got[0]));
    assert_eq!(first_column(&got[0]), ["a"]);
    assert_eq!(first_column(&got[1]), ["a"], "only what was used so far");
    for (i, name) in ["b", "c", "d", "e", "f"].iter().enumerate() {
        assert_eq!(
            error_of(&got[2 + i]),
            Some((
                "26000".into(),
                format!("prepared statement \"{name}\" does not exist")
            )),
            "{name}"
        );
    }
    assert_eq!(
        error_of(&got[7]),
        Some((
            "42P05".into(),
            "prepared statement \"a\" already exists".into()
        ))
    );
    assert_eq!(error_of(&got[8]), None, "{:?}", show(&got[8]));
    assert_eq!(first_column(&got[9]), ["b2"]);
    assert_eq!(first_column(&got[10]), ["a", "b", "g"]);
    assert_eq!(first_column(&got[11]), ["f"], "on the new primary");
}

/// Transaction mode: every client's statements accumulate on the shared server connections, so
/// pgpivot closes a connection's least recently used past 1,000 (between transactions); the
/// client's statements all still work, prepared again where they were closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_server_statements_are_capped() {
    let c = start_cluster();
    let mut opts = pivot_opts("transaction");
    opts.env.push(("PGPIVOT_POOL_SIZE".into(), "1".into()));
    let p = start_pivot(&c, opts).await;
    let (mut s, _) = login_unix(&p).await;
    let steps: Vec<Vec<u8>> = (0..11)
        .map(|batch| {
            let mut b: Vec<u8> = (0..100)
                .flat_map(|i| {
                    let n = batch * 100 + i;
                    parse(&format!("s{n}"), &format!("SELECT {n}"))
                })
                .collect();
            b.extend(sync());
            b
        })
        .collect();
    for r in play(&mut s, &steps).await {
        assert_eq!(error_of(&r), None);
    }
    let count = "SELECT count(*) FROM pg_prepared_statements";
    let got = play(&mut s, &[run("s0"), wire::query(count), run("s1099")]).await;
    assert_eq!(first_column(&got[0]), ["0"], "{:?}", show(&got[0]));
    let on_server: usize = first_column(&got[1])[0].parse().unwrap();
    assert!(
        (800..=1000).contains(&on_server),
        "{on_server} statements on the server connection"
    );
    assert_eq!(first_column(&got[2]), ["1099"]);
}
