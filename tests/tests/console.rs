//! The admin console against real PostgreSQL: SCRAM login as the admin user only, every SHOW
//! command, errors that list the commands, KILL CLIENT, DETACH/ATTACH NODE, SET PRIMARY, the
//! standby's sync state in SHOW pool_nodes, and a planned switchover (PAUSE, promote the standby, RESUME) with zero client errors under pgbench.

use std::time::Duration;

use pgpivot_tests::e2e::{connect_err, db_error, psql, start_pivot};
use pgpivot_tests::{
    connect, pgbench_app, pgbench_init, Cluster, ClusterOptions, Pivot, PivotOptions,
};

const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "admin-secret";

fn cluster_with_standby() -> Cluster {
    Cluster::start(ClusterOptions {
        standbys: 1,
        ..Default::default()
    })
    .expect("cluster")
}

fn admin_opts(mode: &str) -> PivotOptions {
    PivotOptions {
        env: vec![
            ("PGPOOL_ADMIN_USERNAME".into(), ADMIN.into()),
            ("PGPOOL_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
            ("PGPIVOT_ADMIN_ADDR".into(), "127.0.0.1:0".into()),
            ("PGPIVOT_POOL_MODE".into(), mode.into()),
            ("PGPIVOT_POOL_SIZE".into(), "10".into()),
        ],
        ..Default::default()
    }
}

/// psql on the console: rows of `|`-separated fields.
async fn console(p: &Pivot, sql: &str) -> Vec<Vec<String>> {
    let conn = p.admin_conn_string(ADMIN, ADMIN_PASSWORD);
    let out = psql(vec!["-d", &conn, "-c", sql], &[]).await;
    assert!(out.ok, "console `{sql}` failed: {}", out.stderr);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

async fn pool_nodes(p: &Pivot) -> Vec<Vec<String>> {
    let client = p.client().await.unwrap();
    client
        .simple_query("SHOW pool_nodes")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_login_and_show_commands() {
    let c = cluster_with_standby();
    let p = start_pivot(&c, admin_opts("transaction")).await;
    assert!(p.admin_addr.is_some(), "console enabled by the admin user");
    let app = connect(&format!("{} application_name=orders", p.conn_string()))
        .await
        .unwrap();
    app.simple_query("SELECT 1").await.unwrap();

    let help = console(&p, "SHOW HELP").await;
    assert!(help.iter().any(|r| r[0] == "PAUSE"), "{help:?}");
    let nodes = console(&p, "show nodes;").await;
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0][3], "primary");
    assert_eq!(nodes[0][5], "true", "routed primary");
    let version = console(&p, "SHOW VERSION").await;
    assert!(version[0][0].starts_with("pgpivot "), "{version:?}");
    let config = console(&p, "SHOW CONFIG").await;
    let admin_pw = config
        .iter()
        .find(|r| r[0] == "PGPOOL_ADMIN_PASSWORD")
        .expect("the password setting is listed");
    assert_eq!(admin_pw[1], "********");
    assert!(!config.iter().flatten().any(|v| v.contains(ADMIN_PASSWORD)));
    let pools = console(&p, "SHOW POOLS").await;
    assert!(
        pools
            .iter()
            .any(|r| r[0] == "0" && r[1] == "bench" && r[2] == "app"),
        "{pools:?}"
    );
    let clients = console(&p, "SHOW CLIENTS").await;
    assert!(clients.iter().any(|r| r[3] == "orders"), "{clients:?}");
    let servers = console(&p, "SHOW SERVERS").await;
    assert!(!servers.is_empty(), "the pooled connection is listed");
    let stats = console(&p, "SHOW STATS").await;
    let s = stats.iter().find(|r| r[2] == "app").expect("stats row");
    assert!(
        s[3].parse::<u64>().unwrap() >= 1,
        "transactions counted: {s:?}"
    );
    let hc = console(&p, "SHOW pool_health_check_stats").await;
    assert!(
        hc[0][6].parse::<u64>().unwrap() >= 1,
        "probes counted: {hc:?}"
    );
    assert!(console(&p, "SHOW FAILOVERS").await.is_empty());

    // Extended protocol on the console too.
    let admin = connect(&p.admin_conn_string(ADMIN, ADMIN_PASSWORD))
        .await
        .unwrap();
    let rows = admin.query("SHOW NODES", &[]).await.unwrap();
    assert_eq!(rows[1].get::<_, &str>("role"), "standby");
    // Anything else: an error that lists the commands.
    let err = admin.simple_query("SELECT 1").await.unwrap_err();
    let (code, _, _) = db_error(&err);
    assert_eq!(code, "42601");
    assert!(
        err.as_db_error()
            .unwrap()
            .hint()
            .unwrap()
            .contains("SHOW NODES"),
        "{err:?}"
    );
    let err = admin.simple_query("DETACH NODE 9").await.unwrap_err();
    assert_eq!(db_error(&err).0, "55000");

    // Only the admin user, with its password.
    for (user, password) in [("app", "secret"), (ADMIN, "wrong")] {
        let (code, _, _) = connect_err(&p.admin_conn_string(user, password)).await;
        assert_eq!(code, "28P01", "{user}");
    }
    // The console's commands are not on the data port.
    let err = app.simple_query("PAUSE").await.unwrap_err();
    assert_ne!(db_error(&err).0, "");
    assert!(!p.running.as_ref().unwrap().is_paused());
    // KILL CLIENT reaches a client that holds no server connection (transaction mode, idle).
    let id = &clients.iter().find(|r| r[3] == "orders").unwrap()[0];
    console(&p, &format!("KILL CLIENT {id}")).await;
    let err = tokio::time::timeout(Duration::from_secs(5), app.simple_query("SELECT 1"))
        .await
        .expect("answered")
        .unwrap_err();
    assert!(err.is_closed() || db_error(&err).0 == "57P01", "{err:?}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_client_detach_attach_and_set_primary() {
    let c = cluster_with_standby();
    let p = start_pivot(&c, admin_opts("session")).await;
    let victim = connect(&format!("{} application_name=victim", p.conn_string()))
        .await
        .unwrap();
    victim.simple_query("SELECT 1").await.unwrap();
    let clients = console(&p, "SHOW CLIENTS").await;
    let id = &clients.iter().find(|r| r[3] == "victim").unwrap()[0];
    console(&p, &format!("KILL CLIENT {id}")).await;
    let err = tokio::time::timeout(Duration::from_secs(5), victim.simple_query("SELECT 1"))
        .await
        .expect("answered")
        .unwrap_err();
    assert!(err.is_closed() || db_error(&err).0 == "57P01", "{err:?}");

    // Wait for the standby to be probed, then take it out and put it back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pool_nodes(&p).await[1][3] != "up" {
        assert!(tokio::time::Instant::now() < deadline, "standby never up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    console(&p, "DETACH NODE 1").await;
    let nodes = pool_nodes(&p).await;
    assert_eq!(nodes[1][3], "down", "detached: {nodes:?}");
    assert_eq!(nodes[1][4], "up", "pg_status still reports the probe");
    let shown = console(&p, "SHOW NODES").await;
    assert_eq!(shown[1][6], "true", "detached column");
    console(&p, "ATTACH NODE 1").await;
    assert_eq!(pool_nodes(&p).await[1][3], "up");

    // Naming a standby primary does not route writes to it while it is in recovery.
    console(&p, "SET PRIMARY 1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(p.primary(), Some(0));
    console(&p, "SET PRIMARY AUTO").await;
    let client = p.client().await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_nodes_tells_a_sync_standby_from_an_async_one() {
    let c = cluster_with_standby();
    let p = start_pivot(&c, admin_opts("session")).await;
    // replication_state, replication_sync_state: the standby's row only.
    let wait_for = |want: &'static str| {
        let p = &p;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let nodes = pool_nodes(p).await;
                if nodes[1][11] == "streaming" && nodes[1][12] == want {
                    return nodes;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no {want} standby: {nodes:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let nodes = wait_for("async").await;
    assert_eq!(
        (&nodes[0][11][..], &nodes[0][12][..]),
        ("", ""),
        "{nodes:?}"
    );
    c.set_synchronous(0, true).unwrap();
    wait_for("sync").await;
    c.set_synchronous(0, false).unwrap();
    wait_for("async").await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_switchover_with_pause_and_resume_has_no_client_errors() {
    let c = cluster_with_standby();
    pgbench_init(&c, 1).expect("pgbench -i");
    let p = start_pivot(&c, admin_opts("session")).await;
    let port = p.addr.port();
    let bench = tokio::task::spawn_blocking(move || {
        pgbench_app(port, &["-c", "8", "-j", "2", "-T", "10", "-n"])
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let paused = console(&p, "PAUSE").await;
    assert_eq!(paused, [["PAUSE"]], "psql prints the completion tag");
    assert!(p.running.as_ref().unwrap().is_paused());
    // The switchover: stop the old primary cleanly, promote the standby.
    c.stop_fast(0).unwrap();
    c.promote(1).unwrap();
    p.wait_primary(1, Duration::from_secs(15)).await.unwrap();
    console(&p, "RESUME").await;
    let out = bench.await.unwrap().unwrap();
    assert!(
        out.success() && !out.stderr.contains("aborted") && !out.stdout.contains("failed: 1"),
        "pgbench saw errors:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let tx: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next()?.trim().parse().ok())
        .expect("pgbench summary");
    assert!(tx > 0);
    let failovers = console(&p, "SHOW FAILOVERS").await;
    assert_eq!(failovers.len(), 1, "{failovers:?}");
    assert_eq!(failovers[0][1], "0");
    assert_eq!(failovers[0][2], "1");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_new_backend_list_without_dropping_clients() {
    let c = cluster_with_standby();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpivot.toml");
    let one = format!("backend_nodes = \"0:127.0.0.1:{}\"\n", c.port(0));
    std::fs::write(&file, &one).unwrap();
    let mut opts = admin_opts("session");
    // Empty means unset: the file's backend list applies.
    opts.env
        .push(("PGPOOL_BACKEND_NODES".into(), String::new()));
    opts.config_file = Some(file.clone());
    let p = start_pivot(&c, opts).await;
    let client = p.client().await.unwrap();
    let pid = |rows: Vec<tokio_postgres::Row>| rows[0].get::<_, i32>(0);
    let before = pid(client.query("SELECT pg_backend_pid()", &[]).await.unwrap());
    assert_eq!(pool_nodes(&p).await.len(), 1);

    // An invalid file is refused whole.
    std::fs::write(&file, "backend_nodes = \"zero:nowhere\"\n").unwrap();
    let admin = connect(&p.admin_conn_string(ADMIN, ADMIN_PASSWORD))
        .await
        .unwrap();
    let err = admin.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(db_error(&err).0, "55000", "{err:?}");
    assert_eq!(pool_nodes(&p).await.len(), 1);

    // Both nodes, and a listener change that needs a restart.
    let two = format!(
        "backend_nodes = \"0:127.0.0.1:{},1:127.0.0.1:{}\"\n",
        c.port(0),
        c.port(1)
    );
    std::fs::write(&file, two).unwrap();
    admin.simple_query("RELOAD").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let nodes = pool_nodes(&p).await;
        if nodes.len() == 2 && nodes[1][3] == "up" {
            assert_eq!(nodes[1][7], "standby");
            assert_eq!(nodes[0][6], "primary");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{nodes:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = pid(client.query("SELECT pg_backend_pid()", &[]).await.unwrap());
    assert_eq!(before, after, "the client kept its server connection");
    assert_eq!(p.primary(), Some(0));
    p.stop().await;
}
