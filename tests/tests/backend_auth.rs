//! pgpivot logging in to PostgreSQL by each method pg_hba can ask for: MD5, cleartext and trust
//! work; a password the server no longer accepts, an authentication method pgpivot does not
//! speak, and the server's own connection limit each reach the client promptly, once, with a
//! SQLSTATE that says what happened (not "could not connect").

use std::time::{Duration, Instant};

use pgpivot_tests::e2e::{db_error, start_pivot};
use pgpivot_tests::{connect, write_pg_file, AuthMethod, Cluster, ClusterOptions, PivotOptions};

/// How long a refused login may take through pgpivot: well under `primary_wait_timeout` (10 s in
/// these tests), which is what a retry loop would take.
const PROMPT: Duration = Duration::from_secs(5);

fn cluster(auth_method: AuthMethod, extra_conf: &[&str]) -> Cluster {
    Cluster::start(ClusterOptions {
        standbys: 0,
        auth_method,
        extra_conf: extra_conf.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("cluster start failed: {e:#}"))
}

/// How often `needle` occurs in node 0's server log.
fn log_count(c: &Cluster, needle: &str) -> usize {
    c.node(0).log_tail(usize::MAX).matches(needle).count()
}

/// Logs in through pgpivot with `conn`, expecting a server error; returns it and how long the
/// refusal took.
async fn refused(conn: &str) -> ((String, String, String), Duration) {
    let start = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(60), connect(conn))
        .await
        .expect("no answer within 60 s");
    let e = r
        .err()
        .unwrap_or_else(|| panic!("login with `{conn}` succeeded"));
    let e = e
        .downcast_ref::<tokio_postgres::Error>()
        .unwrap_or_else(|| panic!("not a client error: {e:?}"));
    (db_error(e), start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_cleartext_and_trust_backends() {
    for (method, logged) in [
        (AuthMethod::Md5, Some("method=md5")),
        (AuthMethod::Password, Some("method=password")),
        (AuthMethod::Trust, None),
    ] {
        let c = cluster(method, &["log_connections = on"]);
        let p = start_pivot(&c, PivotOptions::default()).await;
        let client = p
            .client()
            .await
            .unwrap_or_else(|e| panic!("{method:?}: {e}"));
        let row = client
            .query_one("SELECT current_user::text", &[])
            .await
            .expect("query");
        assert_eq!(row.get::<_, String>(0), "app", "{method:?}");
        // The server really asked for this method (PostgreSQL logs it once it accepts).
        if let Some(logged) = logged {
            let line = format!("connection authenticated: identity=\"app\" {logged}");
            assert!(
                log_count(&c, &line) >= 1,
                "{method:?}: no `{line}` in the log"
            );
        }
        if method == AuthMethod::Trust {
            continue;
        }
        // The server stops accepting the password pgpivot has for app; pgpivot still accepts it
        // from the client. A new login (a new pool: another database) gets the server's own
        // error, once.
        c.psql(0, "ALTER ROLE app PASSWORD 'changed'")
            .expect("alter role");
        let failures = "password authentication failed for user \"app\"";
        let before = log_count(&c, failures);
        let conn = p.conn_string().replace("dbname=bench", "dbname=postgres");
        let (err, took) = refused(&conn).await;
        assert_eq!(
            err,
            ("28P01".into(), "FATAL".into(), failures.into()),
            "{method:?}"
        );
        assert!(took < PROMPT, "{method:?}: refused after {took:?}");
        assert_eq!(
            log_count(&c, failures) - before,
            1,
            "{method:?}: one attempt at the server, no retries"
        );
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_method_pgpivot_cannot_speak() {
    let c = cluster(AuthMethod::ScramSha256, &[]);
    let p = start_pivot(&c, PivotOptions::default()).await;
    // GSSAPI for app only (the health-check user keeps its method): the server asks for
    // authentication method 7.
    let hba = c.node(0).data_dir.join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).expect("pg_hba.conf");
    write_pg_file(&hba, &format!("host all app 127.0.0.1/32 gss\n{old}")).expect("pg_hba");
    c.psql(0, "SELECT pg_reload_conf()").expect("reload");
    let deadline = Instant::now() + Duration::from_secs(20);
    while connect(&c.app_conn_string(0)).await.is_ok() {
        assert!(Instant::now() < deadline, "pg_hba.conf never reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ((code, severity, message), took) = refused(&p.conn_string()).await;
    assert_eq!(
        (code.as_str(), severity.as_str()),
        ("28000", "FATAL"),
        "{message}"
    );
    assert_eq!(
        message,
        "the server requires GSSAPI authentication (method 7), which pgpivot does not support"
    );
    assert!(took < PROMPT, "refused after {took:?}");
    // An unreachable server is told apart: it is not a class-28 error.
    c.stop_fast(0).expect("stop");
    let (unreachable, _) = refused(&p.conn_string()).await;
    assert_ne!(&unreachable.0[..2], "28", "{unreachable:?}");
}

/// PostgreSQL's own "sorry, too many clients already" for a new login through pgpivot: worth
/// retrying (a slot may free up) until `primary_wait_timeout`, then the client gets the
/// server's own error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connection_limit_reaches_the_client() {
    // 8 connections, 3 of them for superusers: the app user gets 5; the health-check user is
    // made a superuser so pgpivot's probes keep working while the app slots are full.
    let c = Cluster::start(ClusterOptions {
        standbys: 0,
        max_connections: 8,
        extra_conf: vec!["superuser_reserved_connections = 3".into()],
        ..Default::default()
    })
    .expect("cluster start");
    c.psql(0, "ALTER ROLE checker SUPERUSER")
        .expect("superuser");
    let wait = Duration::from_secs(3);
    let p = start_pivot(
        &c,
        PivotOptions {
            primary_wait_timeout_ms: wait.as_millis() as u64,
            ..Default::default()
        },
    )
    .await;
    // Every app slot taken: a refusal may come while one of pgpivot's probes (a superuser)
    // holds a slot, which frees again, so the slots are taken until ten refusals in a row.
    let mut held = Vec::new();
    let mut refusals = 0;
    let direct = loop {
        match connect(&c.app_conn_string(0)).await {
            Ok(client) => {
                held.push(client);
                refusals = 0;
            }
            Err(e) if refusals == 9 => break e,
            Err(_) => {
                refusals += 1;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
        assert!(held.len() <= 8, "max_connections is not in force");
    };
    let direct = direct
        .downcast_ref::<tokio_postgres::Error>()
        .map(db_error)
        .expect("a server error");
    assert_eq!(direct.0, "53300", "{direct:?}");
    let (via, took) = refused(&p.conn_string()).await;
    assert_eq!(via, direct, "the server's own error, passed through");
    assert!(
        took < wait + Duration::from_secs(5),
        "refused after {took:?}"
    );
    drop(held);
}
