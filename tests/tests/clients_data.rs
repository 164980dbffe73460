//! Bulk data and real tools through pgpivot, compared with what PostgreSQL 15 gives directly:
//! COPY both ways, values of 100 MB and more, bytes that are not UTF-8, large objects (the
//! FunctionCall protocol), and pgbench in every query mode.

use std::ffi::OsString;
use std::io::Cursor;
use std::os::unix::ffi::OsStringExt;

use futures::{SinkExt, StreamExt};
use pgpivot_tests::e2e::{psql, psql_ok, start_cluster, start_pivot};
use pgpivot_tests::{pgbench, PivotOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_round_trip() {
    let c = start_cluster();
    let p = start_pivot(&c, PivotOptions::default()).await;
    let client = p.client().await.expect("connect");
    client
        .batch_execute("CREATE TABLE cp (id int PRIMARY KEY, s text)")
        .await
        .expect("create");
    let data: Vec<u8> = (0..100_000)
        .flat_map(|i| format!("{i}\trow {i} é\n").into_bytes())
        .collect();
    let sink = client.copy_in("COPY cp FROM STDIN").await.expect("copy in");
    futures::pin_mut!(sink);
    for chunk in data.chunks(64 * 1024) {
        sink.send(Cursor::new(chunk.to_vec()))
            .await
            .expect("copy data");
    }
    assert_eq!(sink.finish().await.expect("copy done"), 100_000);
    assert_eq!(c.count_rows(0, "cp").expect("count"), 100_000);
    let stream = client
        .copy_out("COPY (SELECT * FROM cp ORDER BY id) TO STDOUT")
        .await
        .expect("copy out");
    futures::pin_mut!(stream);
    let mut back = Vec::with_capacity(data.len());
    while let Some(chunk) = stream.next().await {
        back.extend_from_slice(&chunk.expect("copy out data"));
    }
    assert!(
        back == data,
        "COPY TO output differs from what COPY FROM sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_of_100_mb_and_more() {
    let c = start_cluster();
    let p = start_pivot(&c, PivotOptions::default()).await;
    let client = p.client().await.expect("connect");
    let row = client
        .query_one("SELECT repeat('x', 100 * 1024 * 1024)", &[])
        .await
        .expect("repeat");
    assert!(
        row.get::<_, &str>(0).as_bytes() == vec![b'x'; 100 << 20],
        "bad 100 MB text"
    );
    // Unlogged and uncompressed: the server's own cost stays small next to the 100 MB transfer.
    client
        .batch_execute(
            "CREATE UNLOGGED TABLE big (b bytea); ALTER TABLE big ALTER b SET STORAGE EXTERNAL",
        )
        .await
        .expect("create");
    let mut blob = (0..=250u8)
        .collect::<Vec<u8>>()
        .repeat((100 << 20) / 251 + 1);
    blob.truncate((100 << 20) + 7);
    client
        .execute("INSERT INTO big VALUES ($1)", &[&blob])
        .await
        .expect("insert 100 MB");
    let row = client
        .query_one("SELECT length(b)::int8, b FROM big", &[])
        .await
        .expect("select");
    assert_eq!(row.get::<_, i64>(0), blob.len() as i64);
    assert!(
        row.get::<_, &[u8]>(1) == &blob[..],
        "100 MB bytea came back different"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_client_bytes_behave_as_directly() {
    let c = start_cluster();
    let p = start_pivot(&c, PivotOptions::default()).await;
    let (via, direct) = (p.conn_string(), c.app_conn_string(0));
    psql_ok(&via, "CREATE TABLE enc (id int, s text)").await;
    let raw = |prefix: &str, suffix: &str| {
        let mut v = prefix.as_bytes().to_vec();
        v.push(0xE9);
        v.extend_from_slice(suffix.as_bytes());
        OsString::from_vec(v)
    };
    let run = |conn: &str, sql: OsString, enc: &'static str| {
        let args = vec![OsString::from("-d"), conn.into(), "-c".into(), sql];
        async move { psql(args, &[("PGCLIENTENCODING", enc)]).await }
    };
    for (id, conn) in [(1, &via), (2, &direct)] {
        let out = run(
            conn,
            raw(&format!("INSERT INTO enc VALUES ({id}, 'caf"), "')"),
            "LATIN1",
        )
        .await;
        assert!(out.ok, "LATIN1 insert: {}", out.stderr);
    }
    let select: OsString = "SELECT s FROM enc ORDER BY id".into();
    let through = run(&via, select.clone(), "LATIN1").await;
    let plain = run(&direct, select, "LATIN1").await;
    assert_eq!(through.stdout, b"caf\xe9\ncaf\xe9\n");
    assert_eq!(through.stdout, plain.stdout);
    let client = p.client().await.expect("connect");
    let rows = client
        .query("SELECT s FROM enc", &[])
        .await
        .expect("select");
    assert!(rows.iter().all(|r| r.get::<_, &str>(0) == "café"));
    // Invalid UTF-8 is the server's error, exactly as without pgpivot.
    let bad = raw("SELECT '", "'");
    let through = run(&via, bad.clone(), "UTF8").await;
    let plain = run(&direct, bad, "UTF8").await;
    assert!(
        !through.ok && through.stderr.contains("invalid byte sequence"),
        "{}",
        through.stderr
    );
    assert_eq!(through.stderr, plain.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_via_function_call() {
    let c = start_cluster();
    let p = start_pivot(&c, PivotOptions::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("in.bin"), dir.path().join("out.bin"));
    let data: Vec<u8> = (0..3_000_001u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let out = psql_ok(&p.conn_string(), &format!("\\lo_import {}", src.display())).await;
    let oid: u32 = out
        .trim()
        .strip_prefix("lo_import ")
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("unexpected \\lo_import output {out:?}"));
    let size = c
        .psql(0, &format!("SELECT length(lo_get({oid}))"))
        .expect("lo_get");
    assert_eq!(size, data.len().to_string());
    psql_ok(
        &p.conn_string(),
        &format!("\\lo_export {oid} {}", dst.display()),
    )
    .await;
    assert!(
        std::fs::read(&dst).unwrap() == data,
        "exported file differs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_in_every_query_mode() {
    let c = start_cluster();
    let p = start_pivot(&c, PivotOptions::default()).await;
    // Initialised directly on the primary; pgbench is blocking, so off the runtime pgpivot uses.
    let primary = c.port(0).to_string();
    let init: Vec<String> = ["-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", &primary]
        .into_iter()
        .chain(["-U", "app", "bench"])
        .map(String::from)
        .collect();
    let out = tokio::task::spawn_blocking(move || pgbench("secret", init))
        .await
        .unwrap()
        .expect("pgbench -i");
    assert!(out.success(), "pgbench -i: {}", out.stderr);
    let port = p.addr.port().to_string();
    for mode in ["simple", "extended", "prepared"] {
        for select_only in [true, false] {
            let mut args = vec!["-M", mode, "-c", "4", "-j", "2", "-t", "200"];
            args.extend(["-h", "127.0.0.1", "-p", &port, "-U", "app", "bench"]);
            if select_only {
                args.push("-S");
            }
            let args: Vec<String> = args.into_iter().map(String::from).collect();
            let out = tokio::task::spawn_blocking(move || pgbench("secret", args))
                .await
                .unwrap()
                .expect("pgbench");
            let what = format!("pgbench -M {mode} select_only={select_only}");
            assert!(out.success(), "{what}: {}\n{}", out.stdout, out.stderr);
            assert!(
                out.stdout
                    .contains("number of transactions actually processed: 800/800"),
                "{what}: {}",
                out.stdout
            );
            assert!(
                out.stdout.contains("number of failed transactions: 0 "),
                "{what}: {}",
                out.stdout
            );
        }
    }
}
