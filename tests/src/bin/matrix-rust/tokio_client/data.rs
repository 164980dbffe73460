//! The data-heavy steps of the tokio-postgres scenario: large values, notifications, COPY,
//! prepared statements, portals.
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio_postgres::{AsyncMessage, Row};

use super::{config, connect, connect_with, one, pg_err, show_rows, T};
use crate::{copy_rows, large_param, out, Target};

pub(super) async fn large(t: &Target) -> anyhow::Result<()> {
    let c = connect(t).await?;
    let rows = c
        .query(
            "SELECT g, repeat('x', g % 100) FROM generate_series(1, 100000) g",
            &[],
        )
        .await?;
    let sum: i64 = rows.iter().map(|r| i64::from(r.get::<_, i32>(0))).sum();
    let len: usize = rows.iter().map(|r| r.get::<_, &str>(1).len()).sum();
    out!("large.rows", "{} {sum} {len}", rows.len());
    let big: String = c
        .query_one("SELECT repeat('y', 300000) || 'end'", &[])
        .await?
        .get(0);
    out!("large.value", "{} {}", big.len(), &big[big.len() - 3..]);
    let (param, md5) = large_param();
    let server: String = c.query_one("SELECT md5($1::text)", &[&param]).await?.get(0);
    out!("large.param_md5_match", "{}", server == md5);
    out!("large.after", "{}", one(&c, "SELECT 'ok'").await?);
    Ok(())
}

pub(super) async fn notify(t: &Target) -> anyhow::Result<()> {
    let mut cfg = config(t);
    cfg.application_name("matrix-tokio-postgres")
        .options("-c statement_timeout=12345");
    let (c, mut messages) = connect_with(cfg).await?;
    let other = connect(t).await?;
    c.batch_execute("LISTEN matrix_chan").await?;
    let own: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
    let other_pid: i32 = other
        .query_one("SELECT pg_backend_pid()", &[])
        .await?
        .get(0);
    c.batch_execute("NOTIFY matrix_chan, 'self-1'").await?;
    other
        .batch_execute("SELECT pg_notify('matrix_chan', 'other-1')")
        .await?;
    for _ in 0..2 {
        let m = tokio::time::timeout(Duration::from_secs(5), messages.recv()).await;
        match m {
            Ok(Some(AsyncMessage::Notification(n))) => {
                let pid = n.process_id();
                let who = if pid == own {
                    "pid=own"
                } else if pid == other_pid {
                    "pid=other"
                } else {
                    "pid=?"
                };
                out!("notify.got", "{} {} {who}", n.channel(), n.payload());
            }
            other => out!("notify.got", "{other:?}"),
        }
    }
    c.batch_execute("UNLISTEN *").await?;
    other
        .batch_execute("NOTIFY matrix_chan, 'after-unlisten'")
        .await?;
    let late = tokio::time::timeout(Duration::from_millis(500), messages.recv()).await;
    out!("notify.after_unlisten", "{}", late.is_ok());
    Ok(())
}

pub(super) async fn copy(t: &Target) -> anyhow::Result<()> {
    let c = connect(t).await?;
    c.batch_execute(&format!(
        "DROP TABLE IF EXISTS {T}_copy; CREATE TABLE {T}_copy (id int, s text)"
    ))
    .await?;
    let sink = c
        .copy_in::<_, Bytes>(&format!("COPY {T}_copy FROM STDIN"))
        .await?;
    futures::pin_mut!(sink);
    for chunk in copy_rows().as_bytes().chunks(7000) {
        sink.send(Bytes::copy_from_slice(chunk)).await?;
    }
    out!("copy.in", "{}", sink.finish().await?);
    let stream = c
        .copy_out(&format!(
            "COPY (SELECT * FROM {T}_copy ORDER BY id) TO STDOUT"
        ))
        .await?;
    futures::pin_mut!(stream);
    let mut h = md5::Context::new();
    while let Some(b) = stream.next().await {
        h.consume(b?);
    }
    out!("copy.out", "{:x}", h.finalize());
    let bad = async {
        let sink = c
            .copy_in::<_, Bytes>(&format!("COPY {T}_copy FROM STDIN"))
            .await?;
        futures::pin_mut!(sink);
        sink.send(Bytes::from_static(b"1\tok\nx\tbad\n")).await?;
        sink.finish().await
    };
    out!(
        "copy.bad",
        "{}",
        bad.await
            .map_or_else(|e| pg_err(&e), |n| format!("accepted {n}"))
    );
    out!(
        "copy.count",
        "{}",
        one(&c, &format!("SELECT count(*) FROM {T}_copy")).await?
    );
    Ok(())
}

pub(super) async fn prepared(t: &Target) -> anyhow::Result<()> {
    let c = connect(t).await?;
    c.batch_execute(&format!(
        "DROP TABLE IF EXISTS {T}_prep; CREATE TABLE {T}_prep (id int, v text)"
    ))
    .await?;
    let ins = c
        .prepare(&format!("INSERT INTO {T}_prep VALUES ($1, $2)"))
        .await?;
    for i in 0..20i32 {
        c.execute(&ins, &[&i, &format!("v{i}")]).await?;
    }
    let q = format!("SELECT * FROM {T}_prep WHERE id < $1 ORDER BY id");
    let st = c.prepare(&q).await?;
    let show = |r: Result<Vec<Row>, tokio_postgres::Error>| {
        r.map_or_else(|e| pg_err(&e), |r| show_rows(&r))
    };
    out!("prepared.first", "{}", show(c.query(&st, &[&3i32]).await));
    c.batch_execute(&format!("ALTER TABLE {T}_prep ADD COLUMN w int DEFAULT 7"))
        .await?;
    out!(
        "prepared.after_alter.0",
        "{}",
        show(c.query(&st, &[&2i32]).await)
    );
    let st = c.prepare(&q).await?;
    out!(
        "prepared.after_alter.1",
        "{}",
        show(c.query(&st, &[&2i32]).await)
    );
    c.batch_execute(&format!("DROP TABLE {T}_prep")).await?;
    out!(
        "prepared.after_drop",
        "{}",
        show(c.query(&st, &[&2i32]).await)
    );
    c.batch_execute(&format!(
        "CREATE TABLE {T}_prep (id int, v text); INSERT INTO {T}_prep VALUES (1, 'again')"
    ))
    .await?;
    let st = c.prepare(&q).await?;
    out!(
        "prepared.recreated",
        "{}",
        show(c.query(&st, &[&5i32]).await)
    );
    c.batch_execute("DEALLOCATE ALL").await?;
    out!(
        "prepared.after_deallocate",
        "{}",
        show(c.query(&st, &[&5i32]).await)
    );
    for i in 0..300i32 {
        // Each statement is closed (Close message) when dropped.
        let s = c.prepare(&format!("SELECT $1::int + {i}")).await?;
        c.query_one(&s, &[&i]).await?;
    }
    out!(
        "prepared.server_side",
        "{}",
        one(&c, "SELECT count(*) FROM pg_prepared_statements").await?
    );
    Ok(())
}

pub(super) async fn cursor(t: &Target) -> anyhow::Result<()> {
    let mut c = connect(t).await?;
    let tr = c.transaction().await?;
    let portal = tr
        .bind("SELECT g FROM generate_series(1, 1000) g", &[])
        .await?;
    let mut sizes = Vec::new();
    loop {
        let rows = tr.query_portal(&portal, 300).await?;
        if rows.is_empty() {
            break;
        }
        sizes.push(rows.len());
    }
    out!("cursor.chunks", "{sizes:?}");
    drop(portal);
    tr.commit().await?;
    out!(
        "cursor.after",
        "{}",
        one(&c, "SELECT count(*) FROM pg_cursors").await?
    );
    Ok(())
}
