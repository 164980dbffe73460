//! Real clients through pgpivot (session mode) behave exactly as against PostgreSQL 15: psql over
//! TCP and the unix socket with SSL negotiation, tokio-postgres (simple and extended protocol,
//! transactions, pipelining, notices, LISTEN/NOTIFY), startup parameters and the server's own
//! login errors, password failures and MD5, psycopg, and cancel requests.
//! Bulk data and tools (COPY, 100 MB values, encodings, large objects, pgbench) are in
//! `clients_data.rs`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use pgpivot_tests::e2e::{
    connect_err, db_error, login_unix, psql, psql_ok, start_cluster, start_pivot, wait_active,
};
use pgpivot_tests::wire::{self, error_field};
use pgpivot_tests::{connect, PivotOptions};
use tokio::io::AsyncWriteExt;
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_over_tcp_unix_socket_and_ssl_negotiation() {
    let c = start_cluster();
    let p = start_pivot(&c, PivotOptions::default()).await;
    let conn = p.conn_string();
    assert_eq!(
        psql_ok(&conn, "SELECT 40 + 2, current_user").await,
        "42|app\n"
    );
    // Unix socket: trusted, no password anywhere; pgpivot reaches the server over TCP.
    let (dir, port) = (p.socket_dir.path().to_str().unwrap(), p.port.to_string());
    let sql = "SELECT current_user, inet_client_addr() IS NOT NULL";
    let args = vec![
        "-h", dir, "-p", &port, "-U", "app", "-d", "bench", "-c", sql,
    ];
    let out = psql(args, &[]).await;
    assert!(out.ok, "psql over the unix socket: {}", out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "app|t\n");
    // sslmode=prefer: pgpivot answers N and the session goes on in plaintext.
    let sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let prefer = format!("{conn} sslmode=prefer");
    assert_eq!(psql_ok(&prefer, sql).await, "f\n");
    let out = psql(
        vec!["-d", &format!("{conn} sslmode=require"), "-c", "SELECT 1"],
        &[],
    )
    .await;
    assert!(
        !out.ok && out.stdout.is_empty(),
        "sslmode=require must fail"
    );
    assert!(
        out.stderr.contains("server does not support SSL"),
        "unexpected error: {}",
        out.stderr
    );
    assert_eq!(psql_ok(&conn, "SELECT 'still fine'").await, "still fine\n");
}

/// tokio-postgres with the connection's async messages (notices, notifications) collected.
async fn connect_with_messages(
    conn: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>,
) {
    let (client, mut connection) = tokio_postgres::connect(conn, NoTls).await.expect("connect");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            let _ = tx.send(m);
        }
    });
    (client, rx)
}

async fn recv(m: &mut tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>) -> AsyncMessage {
    let next = tokio::time::timeout(Duration::from_secs(5), m.recv()).await;
    next.expect("no async message within 5 s")
        .expect("connection ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_queries_transactions_pipelining_notices_notifications() {
    let c = start_cluster();
    let p = start_pivot(&c, PivotOptions::default()).await;
    let (client, mut messages) = connect_with_messages(&p.conn_string()).await;
    let rows: Vec<String> = client
        .simple_query("SELECT 1 AS a; SELECT 'two' AS b")
        .await
        .expect("simple query")
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(rows, ["1", "two"]);
    let row = client
        .query_one(
            "SELECT $1::int4 + $2::int4, $3::text",
            &[&40i32, &2i32, &"héllo"],
        )
        .await
        .expect("extended query");
    assert_eq!((row.get::<_, i32>(0), row.get::<_, &str>(1)), (42, "héllo"));

    client
        .batch_execute("CREATE TABLE tx (id int PRIMARY KEY)")
        .await
        .expect("create");
    let mut client = client;
    let t = client.transaction().await.expect("begin");
    t.execute("INSERT INTO tx VALUES (1)", &[])
        .await
        .expect("insert");
    t.rollback().await.expect("rollback");
    let t = client.transaction().await.expect("begin");
    t.execute("INSERT INTO tx VALUES (2)", &[])
        .await
        .expect("insert");
    t.commit().await.expect("commit");
    let ids: Vec<i32> = client
        .query("SELECT id FROM tx", &[])
        .await
        .expect("select")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [2]);

    // Pipelining: all queries are written before the first answer is read; one fails alone.
    let st = client
        .prepare("SELECT $1::int8 * 2")
        .await
        .expect("prepare");
    let results = futures::future::join_all((0..50i64).map(|i| {
        let (client, st) = (&client, &st);
        async move {
            if i == 25 {
                return client.query_one("SELECT 1 / 0", &[]).await.map(|_| -1);
            }
            client
                .query_one(st, &[&i])
                .await
                .map(|r| r.get::<_, i64>(0))
        }
    }))
    .await;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Err(e) => assert_eq!((i, db_error(&e).0.as_str()), (25, "22012")),
            Ok(v) => assert_eq!(v, 2 * i as i64),
        }
    }

    client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$")
        .await
        .expect("DO with notice");
    match recv(&mut messages).await {
        AsyncMessage::Notice(n) => assert_eq!(n.message(), "hello 42"),
        other => panic!("expected a notice, got {other:?}"),
    }
    client.batch_execute("LISTEN chan").await.expect("listen");
    let other = p.client().await.expect("second client");
    other
        .execute("SELECT pg_notify('chan', 'payload-1')", &[])
        .await
        .expect("notify");
    match recv(&mut messages).await {
        AsyncMessage::Notification(n) => {
            assert_eq!((n.channel(), n.payload()), ("chan", "payload-1"))
        }
        other => panic!("expected a notification, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_and_server_errors_pass_through() {
    let c = start_cluster();
    let p = start_pivot(&c, PivotOptions::default()).await;
    let extra = "options='-c statement_timeout=1234' application_name=xyz";
    let client = connect(&format!("{} {extra}", p.conn_string()))
        .await
        .expect("connect");
    let row = client
        .query_one(
            "SELECT current_setting('statement_timeout'), current_setting('application_name')",
            &[],
        )
        .await
        .expect("settings");
    assert_eq!(
        (row.get::<_, &str>(0), row.get::<_, &str>(1)),
        ("1234ms", "xyz")
    );
    // The server's own refusal, word for word, as a direct login gets it.
    for (extra, code) in [
        ("dbname=nosuchdb", "3D000"),
        ("options='-c nosuchparam=1'", "42704"),
    ] {
        let via = connect_err(&format!("{} {extra}", p.conn_string())).await;
        let direct = connect_err(&format!("{} {extra}", c.app_conn_string(0))).await;
        assert_eq!(via, direct, "{extra}");
        assert_eq!((via.0.as_str(), via.1.as_str()), (code, "FATAL"), "{extra}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_md5() {
    let c = start_cluster();
    let p = start_pivot(&c, PivotOptions::default()).await;
    let conn = p.conn_string();
    let wrong = connect_err(&conn.replace("password=secret", "password=wrong")).await;
    let unknown = connect_err(&conn.replace("user=app", "user=nobody")).await;
    let msg = |u: &str| format!("password authentication failed for user \"{u}\"");
    assert_eq!(wrong, ("28P01".into(), "FATAL".into(), msg("app")));
    assert_eq!(unknown, ("28P01".into(), "FATAL".into(), msg("nobody")));
    let direct = connect_err(
        &c.app_conn_string(0)
            .replace("password=secret", "password=x"),
    )
    .await;
    assert_eq!(wrong, direct, "same answer as the server's own");

    let p = start_pivot(
        &c,
        PivotOptions {
            auth_method: "md5",
            ..Default::default()
        },
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.expect("tcp");
    s.write_all(&wire::startup(&[("user", "app"), ("database", "bench")]))
        .await
        .unwrap();
    let (tag, body) = wire::read_message(&mut s)
        .await
        .expect("read")
        .expect("auth request");
    assert_eq!(
        (tag, &body[..4]),
        (b'R', &5i32.to_be_bytes()[..]),
        "MD5 requested"
    );
    let client = p.client().await.expect("md5 login");
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, &str>(0), "app");
    let wrong = connect_err(&p.conn_string().replace("password=secret", "password=wrong")).await;
    assert_eq!(wrong, ("28P01".into(), "FATAL".into(), msg("app")));
}

const PSYCOPG_SCRIPT: &str = r#"
import hashlib, sys, psycopg
with psycopg.connect(sys.argv[1]) as conn, conn.cursor() as cur:
    cur.execute("SELECT %s::int + %s::int, %s::text", (40, 2, "héllo"))
    print("sum", *cur.fetchone())
    cur.execute("CREATE TABLE py (id int PRIMARY KEY, s text)")
    conn.commit()
    cur.execute("INSERT INTO py VALUES (%s, %s)", (-1, "rolled back"))
    conn.rollback()
    with cur.copy("COPY py FROM STDIN") as copy:
        for i in range(1000):
            copy.write_row((i, f"r{i}é"))
    conn.commit()
    h = hashlib.md5()
    with cur.copy("COPY (SELECT id, s FROM py ORDER BY id) TO STDOUT") as copy:
        for block in copy:
            h.update(block)
    cur.execute("SELECT count(*), sum(id) FROM py")
    print("rows", *cur.fetchone())
    print("md5", h.hexdigest())
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_client() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import psycopg"])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "python3 with psycopg is required: run deploy/local/install-deps.sh ({probe:?})"
    );
    let c = start_cluster();
    let p = start_pivot(&c, PivotOptions::default()).await;
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args(["-c", PSYCOPG_SCRIPT, &p.conn_string()])
        .env("PYTHONIOENCODING", "utf-8")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("python timed out")
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sql = "SELECT md5(string_agg(id || E'\\t' || s || E'\\n', '' ORDER BY id)) FROM py";
    let md5 = c.psql(0, sql).expect("md5 on the server");
    assert_eq!(
        stdout,
        format!("sum 42 héllo\nrows 1000 499500\nmd5 {md5}\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests() {
    let c = start_cluster();
    let p = start_pivot(&c, PivotOptions::default()).await;
    let client = p.client().await.expect("connect");
    let token = client.cancel_token();
    let query = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    wait_active(&c, "SELECT pg_sleep(30)", 1).await;
    let start = Instant::now();
    token.cancel_query(NoTls).await.expect("cancel");
    let r = tokio::time::timeout(Duration::from_secs(5), query)
        .await
        .expect("not cancelled");
    assert_eq!(
        db_error(&r.unwrap().expect_err("query must fail")).0,
        "57014"
    );
    assert!(start.elapsed() < Duration::from_secs(5));

    // Raw session over the unix socket (trust) to learn the key pgpivot handed out.
    let (mut s, key) = login_unix(&p).await;
    let pid = i32::from_be_bytes(key[..4].try_into().unwrap());
    let secret = key[4..].to_vec();
    let addr = p.addr;
    let cancel = |pid: i32, secret: Vec<u8>| async move {
        let mut t = tokio::net::TcpStream::connect(addr).await.expect("tcp");
        t.write_all(&wire::cancel_request(pid, &secret))
            .await
            .expect("cancel request");
        let _ = wire::read_message(&mut t).await; // pgpivot closes without answering
    };
    s.write_all(&wire::query("SELECT pg_sleep(4), 'done'"))
        .await
        .unwrap();
    wait_active(&c, "SELECT pg_sleep(4)", 1).await;
    let wrong: Vec<u8> = secret.iter().map(|b| b ^ 0x5a).collect();
    cancel(pid, wrong).await;
    cancel(pid.wrapping_add(1), secret.clone()).await;
    // The wrong keys were tried while the query ran (else this proves nothing).
    assert_eq!(
        pgpivot_tests::e2e::active_queries(&c, "SELECT pg_sleep(4)"),
        1,
        "the query ended before the wrong cancels were tried"
    );
    let answer = wire::read_until_ready(&mut s, Duration::from_secs(10))
        .await
        .expect("answer");
    assert!(
        answer.iter().all(|(t, _)| *t != b'E'),
        "a wrong key cancelled: {answer:?}"
    );
    assert!(answer
        .iter()
        .any(|(t, b)| *t == b'D' && b.ends_with(b"done")));
    s.write_all(&wire::query("SELECT pg_sleep(30)"))
        .await
        .unwrap();
    wait_active(&c, "SELECT pg_sleep(30)", 1).await;
    cancel(pid, secret).await;
    let answer = wire::read_until_ready(&mut s, Duration::from_secs(5))
        .await
        .expect("cancelled");
    let err = answer
        .iter()
        .find(|(t, _)| *t == b'E')
        .expect("an ErrorResponse");
    assert_eq!(error_field(&err.1, b'C').as_deref(), Some("57014"));
}
