//! The data-heavy steps of the sqlx scenario: large values, notifications, COPY, prepared
//! statements, cursors.
use std::time::Duration;

use futures::StreamExt;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{Connection, Row};

use super::{connect, one, options, show_rows, sqlx_err, T};
use crate::{copy_rows, large_param, out, Target};

pub(super) async fn large(t: &Target) -> anyhow::Result<()> {
    let mut c = connect(t).await?;
    let rows = sqlx::query("SELECT g, repeat('x', g % 100) FROM generate_series(1, 100000) g")
        .fetch_all(&mut c)
        .await?;
    let sum: i64 = rows.iter().map(|r| i64::from(r.get::<i32, _>(0))).sum();
    let len: usize = rows.iter().map(|r| r.get::<&str, _>(1).len()).sum();
    out!("large.rows", "{} {sum} {len}", rows.len());
    let big: String = sqlx::query_scalar("SELECT repeat('y', 300000) || 'end'")
        .fetch_one(&mut c)
        .await?;
    out!("large.value", "{} {}", big.len(), &big[big.len() - 3..]);
    let (param, md5) = large_param();
    let server: String = sqlx::query_scalar("SELECT md5($1::text)")
        .bind(&param)
        .fetch_one(&mut c)
        .await?;
    out!("large.param_md5_match", "{}", server == md5);
    out!("large.after", "{}", one(&mut c, "SELECT 'ok'").await?);
    Ok(())
}

pub(super) async fn notify(t: &Target) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options(t))
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    let mut other = connect(t).await?;
    listener.listen("matrix_chan").await?;
    let own: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut listener)
        .await?;
    let other_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut other)
        .await?;
    sqlx::query("NOTIFY matrix_chan, 'self-1'")
        .execute(&mut listener)
        .await?;
    sqlx::query("SELECT pg_notify('matrix_chan', 'other-1')")
        .execute(&mut other)
        .await?;
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(5), listener.recv()).await {
            Ok(Ok(n)) => {
                let pid = n.process_id() as i32;
                let who = if pid == own {
                    "pid=own"
                } else if pid == other_pid {
                    "pid=other"
                } else {
                    "pid=?"
                };
                out!("notify.got", "{} {} {who}", n.channel(), n.payload());
            }
            Ok(Err(e)) => out!("notify.got", "{}", sqlx_err(&e)),
            Err(_) => out!("notify.got", "nothing within 5 s"),
        }
    }
    listener.unlisten_all().await?;
    sqlx::query("NOTIFY matrix_chan, 'after-unlisten'")
        .execute(&mut other)
        .await?;
    let late = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await;
    out!("notify.after_unlisten", "{}", late.is_ok());
    Ok(())
}

pub(super) async fn copy(t: &Target) -> anyhow::Result<()> {
    let mut c = connect(t).await?;
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS {T}_copy; CREATE TABLE {T}_copy (id int, s text)"
    ))
    .execute(&mut c)
    .await?;
    let mut sink = c.copy_in_raw(&format!("COPY {T}_copy FROM STDIN")).await?;
    for chunk in copy_rows().as_bytes().chunks(7000) {
        sink.send(chunk).await?;
    }
    out!("copy.in", "{}", sink.finish().await?);
    let mut h = md5::Context::new();
    {
        let mut stream = c
            .copy_out_raw(&format!(
                "COPY (SELECT * FROM {T}_copy ORDER BY id) TO STDOUT"
            ))
            .await?;
        while let Some(b) = stream.next().await {
            h.consume(b?);
        }
    }
    out!("copy.out", "{:x}", h.finalize());
    let bad = async {
        let mut sink = c.copy_in_raw(&format!("COPY {T}_copy FROM STDIN")).await?;
        sink.send(&b"1\tok\nx\tbad\n"[..]).await?;
        sink.finish().await
    };
    out!(
        "copy.bad",
        "{}",
        bad.await
            .map_or_else(|e| sqlx_err(&e), |n| format!("accepted {n}"))
    );
    out!(
        "copy.count",
        "{}",
        one(&mut c, &format!("SELECT count(*) FROM {T}_copy")).await?
    );
    Ok(())
}

pub(super) async fn prepared(t: &Target) -> anyhow::Result<()> {
    let mut c = connect(t).await?;
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS {T}_prep; CREATE TABLE {T}_prep (id int, v text)"
    ))
    .execute(&mut c)
    .await?;
    for i in 0..20 {
        sqlx::query(&format!("INSERT INTO {T}_prep VALUES ($1, $2)"))
            .bind(i)
            .bind(format!("v{i}"))
            .execute(&mut c)
            .await?;
    }
    let q = format!("SELECT * FROM {T}_prep WHERE id < $1 ORDER BY id");
    let plan: [(&str, i32, Option<String>); 7] = [
        ("prepared.first", 3, None),
        (
            "prepared.after_alter.0",
            2,
            Some(format!("ALTER TABLE {T}_prep ADD COLUMN w int DEFAULT 7")),
        ),
        ("prepared.after_alter.1", 2, None),
        (
            "prepared.after_drop",
            2,
            Some(format!("DROP TABLE {T}_prep")),
        ),
        (
            "prepared.recreated",
            5,
            Some(format!(
                "CREATE TABLE {T}_prep (id int, v text); INSERT INTO {T}_prep VALUES (1, 'again')"
            )),
        ),
        (
            "prepared.after_deallocate",
            5,
            Some("DEALLOCATE ALL".into()),
        ),
        ("prepared.after_deallocate_again", 5, None),
    ];
    for (key, n, before) in plan {
        if let Some(sql) = before {
            sqlx::raw_sql(&sql).execute(&mut c).await?;
        }
        let r = sqlx::query(&q).bind(n).fetch_all(&mut c).await;
        out!(
            key,
            "{}",
            r.map_or_else(|e| sqlx_err(&e), |r| show_rows(&r))
        );
    }
    for i in 0..300 {
        // More than the statement cache holds (100): evicted statements are closed.
        sqlx::query(&format!("SELECT $1::int + {i}"))
            .bind(i)
            .fetch_one(&mut c)
            .await?;
    }
    let sql = "SELECT count(*) FROM pg_prepared_statements";
    out!("prepared.server_side", "{}", one(&mut c, sql).await?);
    Ok(())
}

pub(super) async fn cursor(t: &Target) -> anyhow::Result<()> {
    let mut c = connect(t).await?;
    let mut tr = c.begin().await?;
    sqlx::raw_sql("DECLARE matrix_cur CURSOR FOR SELECT g FROM generate_series(1, 1000) g")
        .execute(&mut *tr)
        .await?;
    let mut sizes = Vec::new();
    loop {
        let rows = sqlx::query("FETCH 300 FROM matrix_cur")
            .fetch_all(&mut *tr)
            .await?;
        if rows.is_empty() {
            break;
        }
        sizes.push(rows.len());
    }
    out!("cursor.chunks", "{sizes:?}");
    tr.commit().await?;
    // Streaming reads every row through one Execute; count them as they come.
    let mut stream = sqlx::query("SELECT g FROM generate_series(1, 2500) g").fetch(&mut c);
    let mut total = 0i64;
    while let Some(r) = stream.next().await {
        total += i64::from(r?.get::<i32, _>(0));
    }
    drop(stream);
    out!("cursor.streamed", "{total}");
    out!(
        "cursor.after",
        "{}",
        one(&mut c, "SELECT count(*) FROM pg_cursors").await?
    );
    Ok(())
}
