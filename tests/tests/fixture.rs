//! Tests of the PostgreSQL cluster fixture itself: every end-to-end test of
//! pgpivot relies on these behaviours (replication, crash, promotion,
//! split brain, rejoin, auth, cleanup), so they are checked against real
//! servers here first.

use pgpivot_tests::{pgbench, AuthMethod, Cluster, ClusterOptions};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

fn start(opts: ClusterOptions) -> Cluster {
    let t = Instant::now();
    let c = Cluster::start(opts).unwrap_or_else(|e| panic!("cluster start failed: {e:#}"));
    eprintln!(
        "cluster with {} nodes started in {:?}",
        c.nodes.len(),
        t.elapsed()
    );
    c
}

fn sql(c: &Cluster, i: usize, q: &str) -> String {
    c.psql(i, q)
        .unwrap_or_else(|e| panic!("psql on node{i} `{q}` failed: {e:#}"))
}

fn ok<T>(what: &str, r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{what} failed: {e:#}"))
}

/// Connects with tokio-postgres as a real client would (TCP + password
/// auth) and returns `SELECT current_user`.
fn client_query(conn: &str) -> Result<String, tokio_postgres::Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let row = client.query_one("SELECT current_user::text", &[]).await?;
        Ok(row.get(0))
    })
}

#[test]
fn replication_and_connection_details() {
    let c = start(ClusterOptions::default());
    sql(&c, 0, "INSERT INTO pgpivot_probe (id) VALUES (1)");
    ok("wait_caught_up", c.wait_caught_up(1));
    assert_eq!(ok("count", c.count_rows(1, "pgpivot_probe")), 1);
    assert_eq!(
        sql(&c, 1, "SELECT node FROM pgpivot_probe WHERE id = 1"),
        "node0"
    );
    assert!(
        !ok("recovery", c.is_in_recovery(0)),
        "node0 must be primary"
    );
    assert!(
        ok("recovery", c.is_in_recovery(1)),
        "node1 must be a standby"
    );
    assert_eq!(ok("upstream", c.upstream_of(1)), 0);
    assert_eq!(c.primaries(), vec![0]);
    assert_eq!(sql(&c, 1, "SHOW cluster_name"), "node1");
    assert_eq!(sql(&c, 0, "SHOW listen_addresses"), "127.0.0.1");
    assert_eq!(
        c.backend_nodes_env(),
        format!("0:127.0.0.1:{},1:127.0.0.1:{},", c.port(0), c.port(1))
    );
    // The app user (SCRAM over TCP) owns the probe table and can write.
    assert_eq!(
        client_query(&c.app_conn_string(0)).expect("app login"),
        "app"
    );
    assert_eq!(
        sql(
            &c,
            0,
            "SELECT tableowner FROM pg_tables WHERE tablename = 'pgpivot_probe'"
        ),
        "app"
    );
    assert_eq!(
        client_query(&c.check_conn_string(1)).expect("checker login"),
        "checker"
    );
    let bad = c
        .app_conn_string(0)
        .replace("password=secret", "password=wrong");
    assert!(
        client_query(&bad).is_err(),
        "a wrong password must be rejected"
    );
}

#[test]
fn failover_promotion_and_rejoin() {
    let c = start(ClusterOptions::default());
    sql(&c, 0, "INSERT INTO pgpivot_probe (id) VALUES (1)");
    ok("wait_caught_up", c.wait_caught_up(1));
    let old_tli = ok("timeline", c.timeline(0));
    assert_eq!(ok("timeline", c.timeline(1)), old_tli);

    ok("kill9", c.kill9(0));
    assert!(!c.node(0).is_running());
    ok("promote", c.promote(1));
    assert!(
        !ok("recovery", c.is_in_recovery(1)),
        "node1 must be primary after promote"
    );
    sql(&c, 1, "INSERT INTO pgpivot_probe (id) VALUES (2)");
    assert_eq!(
        sql(&c, 1, "SELECT node FROM pgpivot_probe WHERE id = 2"),
        "node1"
    );
    assert!(
        ok("timeline", c.timeline(1)) > old_tli,
        "promotion must switch timeline"
    );

    // The dead primary comes back as a standby of the new primary.
    ok("restart_as_standby_of", c.restart_as_standby_of(0, 1));
    assert!(
        ok("recovery", c.is_in_recovery(0)),
        "rejoined node0 must be in recovery"
    );
    assert_eq!(ok("upstream", c.upstream_of(0)), 1);
    sql(&c, 1, "INSERT INTO pgpivot_probe (id) VALUES (3)");
    ok("wait_caught_up", c.wait_caught_up(0));
    assert_eq!(ok("count", c.count_rows(0, "pgpivot_probe")), 3);
    assert_eq!(c.port(0), c.nodes[0].port, "rejoined node keeps its port");
}

#[test]
fn split_brain_after_old_primary_restarts() {
    let c = start(ClusterOptions::default());
    let tli = ok("timeline", c.timeline(0));
    // Postmaster-only SIGKILL leaves orphans; start_node waits them out.
    ok("kill9", c.kill9(0));
    ok("promote", c.promote(1));
    ok("start_node", c.start_node(0));
    let mut primaries = c.primaries();
    primaries.sort();
    assert_eq!(primaries, vec![0, 1], "both nodes claim to be primary");
    assert_eq!(
        ok("timeline", c.timeline(0)),
        tli,
        "old primary stays on its timeline"
    );
    assert!(ok("timeline", c.timeline(1)) > tli);
}

#[test]
fn synchronous_commit_waits_for_the_standby() {
    let c = start(ClusterOptions {
        synchronous: true,
        ..Default::default()
    });
    assert_eq!(
        sql(&c, 0, "SELECT sync_state FROM pg_stat_replication"),
        "sync",
        "the standby must be synchronous"
    );
    sql(&c, 0, "INSERT INTO pgpivot_probe (id) VALUES (1)");
    assert_eq!(
        sql(&c, 1, "SHOW synchronous_standby_names"),
        "",
        "standbys stay async"
    );

    // A frozen standby blocks commits on the primary until it thaws.
    ok("sigstop", c.sigstop(1));
    let (tx, rx) = mpsc::channel();
    thread::scope(|s| {
        s.spawn(|| {
            let r = c.psql(0, "INSERT INTO pgpivot_probe (id) VALUES (2)");
            let _ = tx.send(r);
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(1500)).is_err(),
            "commit returned although the sync standby is stopped"
        );
        ok("sigcont", c.sigcont(1));
        let r = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("commit did not finish after SIGCONT");
        ok("insert after sigcont", r);
    });
    ok("wait_caught_up", c.wait_caught_up(1));
    assert_eq!(ok("count", c.count_rows(1, "pgpivot_probe")), 2);
}

#[test]
fn stop_start_kill_all_and_md5_pgbench() {
    let c = start(ClusterOptions {
        standbys: 2,
        auth_method: AuthMethod::Md5,
        ..Default::default()
    });
    assert_eq!(sql(&c, 0, "SHOW password_encryption"), "md5");
    assert!(sql(
        &c,
        0,
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'"
    )
    .starts_with("md5"));
    ok("wait_streaming", c.wait_streaming(0, 2));

    ok("stop_fast", c.stop_fast(2));
    assert!(!c.node(2).is_running());
    ok("start_node", c.start_node(2));
    ok("stop_immediate", c.stop_immediate(1));
    ok("start_node", c.start_node(1));
    ok("kill9_all", c.kill9_all(2));
    ok("start_node", c.start_node(2));
    ok("wait_streaming", c.wait_streaming(0, 2));

    let port = c.port(0).to_string();
    let base = ["-h", "127.0.0.1", "-p", &port, "-U", "app", "bench"];
    let init = ok(
        "pgbench -i",
        pgbench("secret", ["-i", "-s", "1", "-q"].iter().chain(&base)),
    );
    assert!(init.success(), "pgbench -i failed: {}", init.stderr);
    let run = ok(
        "pgbench",
        pgbench("secret", ["-t", "20", "-c", "2"].iter().chain(&base)),
    );
    assert!(run.success(), "pgbench run failed: {}", run.stderr);
    assert!(
        run.stdout.contains("tps"),
        "unexpected pgbench output: {}",
        run.stdout
    );
    for standby in [1, 2] {
        ok("wait_caught_up", c.wait_caught_up(standby));
        assert_eq!(ok("count", c.count_rows(standby, "pgbench_branches")), 1);
    }
}

#[test]
fn trust_auth_without_standbys() {
    let c = start(ClusterOptions {
        standbys: 0,
        auth_method: AuthMethod::Trust,
        ..Default::default()
    });
    assert_eq!(c.nodes.len(), 1);
    let conn = c
        .app_conn_string(0)
        .replace("password=secret", "password=anything");
    assert_eq!(client_query(&conn).expect("trust login"), "app");
}

/// Helper run in a child process by `guardian_cleans_up_after_sigkill`.
#[test]
#[ignore = "helper for guardian_cleans_up_after_sigkill"]
fn helper_start_cluster_and_hang() {
    if std::env::var_os("PGPIVOT_FIXTURE_HELPER").is_none() {
        return;
    }
    let c = start(ClusterOptions::default());
    println!("ROOT={}", c.root().display());
    thread::sleep(Duration::from_secs(120));
}

#[test]
fn guardian_cleans_up_after_sigkill() {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "helper_start_cluster_and_hang",
            "--ignored",
            "--nocapture",
        ])
        .env("PGPIVOT_FIXTURE_HELPER", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning helper test process");
    let stdout = child.stdout.take().expect("piped stdout");
    let root = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("ROOT=").map(PathBuf::from))
        .expect("helper did not report its cluster dir");
    assert!(root.exists());
    child.kill().expect("SIGKILL helper");
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(20);
    while root.exists() {
        assert!(
            Instant::now() < deadline,
            "guardian did not remove {}",
            root.display()
        );
        thread::sleep(Duration::from_millis(50));
    }
    // No process may still work inside the removed directory.
    let leftovers: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| {
            let cwd = std::fs::read_link(e.ok()?.path().join("cwd")).ok()?;
            cwd.starts_with(&root).then(|| cwd.display().to_string())
        })
        .collect();
    assert!(leftovers.is_empty(), "processes left behind: {leftovers:?}");
}

#[test]
fn second_standby_follows_the_promoted_one() {
    let c = start(ClusterOptions {
        standbys: 2,
        ..Default::default()
    });
    sql(&c, 0, "INSERT INTO pgpivot_probe (id) VALUES (1)");
    ok("wait_caught_up", c.wait_caught_up(1));
    ok("wait_caught_up", c.wait_caught_up(2));
    ok("kill9_all", c.kill9_all(0));
    ok("promote", c.promote(1));
    ok("follow", c.follow(2, 1));
    assert_eq!(ok("upstream", c.upstream_of(2)), 1);
    sql(&c, 1, "INSERT INTO pgpivot_probe (id) VALUES (2)");
    ok("wait_caught_up", c.wait_caught_up(2));
    assert_eq!(ok("count", c.count_rows(2, "pgpivot_probe")), 2);
    assert_eq!(ok("timeline", c.timeline(2)), ok("timeline", c.timeline(1)));
}
