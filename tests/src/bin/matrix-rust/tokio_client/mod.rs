//! The scenario for tokio-postgres: every query is a protocol-level prepared statement (unnamed
//! for `query`, named `sN` for `prepare`, closed when the `Statement` is dropped), requests
//! pipeline when several futures are polled together, portals read with a row limit.
//! tokio-postgres shows neither the ParameterStatus values nor the BackendKeyData pid, so the
//! `startup.reported.*` and `key_pid` lines are absent.

mod data;

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Row};

use crate::{out, Scenario, StepFuture, Target};

pub struct TokioPostgres;

const T: &str = "m_tokio";

fn config(t: &Target) -> Config {
    let mut c = Config::new();
    c.host(&t.host)
        .port(t.port)
        .user(&t.user)
        .password(&t.password)
        .dbname(&t.db)
        .connect_timeout(Duration::from_secs(10));
    c
}

/// A client with the startup parameters every step uses; notifications arrive on the receiver.
async fn connect_with(
    c: Config,
) -> anyhow::Result<(Client, mpsc::UnboundedReceiver<AsyncMessage>)> {
    let (client, mut connection) = c.connect(NoTls).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            let _ = tx.send(m);
        }
    });
    Ok((client, rx))
}

async fn connect(t: &Target) -> anyhow::Result<Client> {
    let mut c = config(t);
    c.application_name("matrix-tokio-postgres")
        .options("-c statement_timeout=12345");
    Ok(connect_with(c).await?.0)
}

fn pg_err(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => format!("{e}"),
    }
}

async fn one(c: &Client, sql: &str) -> anyhow::Result<String> {
    let rows = c.simple_query(sql).await?;
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some(r.get(0).unwrap_or("NULL").to_string())
            }
            _ => None,
        })
        .context("no row")
}

fn shown<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "NULL".into(), |v| v.to_string())
}

fn show_rows(rows: &[Row]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match *r.columns()[i].type_() {
                    Type::INT4 => shown(r.get::<_, Option<i32>>(i)),
                    Type::INT8 => shown(r.get::<_, Option<i64>>(i)),
                    _ => shown(r.get::<_, Option<String>>(i)),
                })
                .collect()
        })
        .collect();
    format!("{rows:?}")
}

async fn startup(t: &Target) -> anyhow::Result<()> {
    let c = connect(t).await?;
    for p in [
        "application_name",
        "statement_timeout",
        "client_encoding",
        "DateStyle",
    ] {
        out!(
            format!("startup.show.{p}"),
            "{}",
            one(&c, &format!("SHOW {p}")).await?
        );
    }
    c.batch_execute("SET statement_timeout = 999").await?;
    out!(
        "startup.after_set",
        "{}",
        one(&c, "SHOW statement_timeout").await?
    );
    c.batch_execute("DISCARD ALL").await?;
    out!(
        "startup.after_discard.statement_timeout",
        "{}",
        one(&c, "SHOW statement_timeout").await?
    );
    out!(
        "startup.after_discard.application_name",
        "{}",
        one(&c, "SHOW application_name").await?
    );
    let mut other = config(t);
    other.application_name("matrix-tokio-postgres-2");
    let (c, _) = connect_with(other).await?;
    out!(
        "startup.other.statement_timeout",
        "{}",
        one(&c, "SHOW statement_timeout").await?
    );
    out!(
        "startup.other.application_name",
        "{}",
        one(&c, "SHOW application_name").await?
    );
    let c = connect(t).await?;
    out!(
        "startup.again.statement_timeout",
        "{}",
        one(&c, "SHOW statement_timeout").await?
    );
    out!(
        "startup.again.application_name",
        "{}",
        one(&c, "SHOW application_name").await?
    );
    Ok(())
}

async fn encoding(t: &Target) -> anyhow::Result<()> {
    let c = connect(t).await?;
    c.batch_execute("SET client_encoding TO 'latin1'").await?;
    out!(
        "encoding.show",
        "{}",
        one(&c, "SHOW client_encoding").await?
    );
    // tokio-postgres decodes text as UTF-8 whatever the server says.
    match c.query_one("SELECT 'é' || chr(255)", &[]).await {
        Ok(r) => out!(
            "encoding.text",
            "{:?}",
            r.try_get::<_, String>(0).map_err(|e| e.to_string())
        ),
        Err(e) => out!("encoding.text", "{}", pg_err(&e)),
    }
    c.batch_execute("RESET client_encoding").await?;
    out!(
        "encoding.reset",
        "{}",
        one(&c, "SHOW client_encoding").await?
    );
    Ok(())
}

async fn tx(t: &Target) -> anyhow::Result<()> {
    let mut c = connect(t).await?;
    c.batch_execute(&format!(
        "DROP TABLE IF EXISTS {T}_tx; CREATE TABLE {T}_tx (id int PRIMARY KEY, v text)"
    ))
    .await?;
    let tr = c.transaction().await?;
    let n = tr
        .execute(
            &format!("INSERT INTO {T}_tx VALUES ($1, 'a'), ($2, 'b')"),
            &[&1i32, &2i32],
        )
        .await?;
    out!("tx.insert", "{n}");
    tr.commit().await?;
    let tr = c.transaction().await?;
    tr.execute(
        &format!("INSERT INTO {T}_tx VALUES (10, 'rolled back')"),
        &[],
    )
    .await?;
    tr.rollback().await?;
    let mut tr = c.transaction().await?;
    tr.execute(&format!("INSERT INTO {T}_tx VALUES (3, 'c')"), &[])
        .await?;
    let sp = tr.savepoint("s1").await?;
    sp.execute(&format!("INSERT INTO {T}_tx VALUES (4, 'd')"), &[])
        .await?;
    if let Err(e) = sp
        .execute(&format!("INSERT INTO {T}_tx VALUES ($1, 'dup')"), &[&1i32])
        .await
    {
        let detail = e
            .as_db_error()
            .and_then(|d| d.detail())
            .unwrap_or_default()
            .to_string();
        out!("tx.savepoint_error", "{} {detail}", pg_err(&e));
    }
    sp.rollback().await?;
    tr.execute(&format!("INSERT INTO {T}_tx VALUES (5, 'e')"), &[])
        .await?;
    tr.commit().await?;
    let ids: Vec<i32> = c
        .query(&format!("SELECT id FROM {T}_tx ORDER BY id"), &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    out!("tx.ids", "{ids:?}");
    let tr = c.transaction().await?;
    tr.execute(&format!("UPDATE {T}_tx SET v = 'z'"), &[])
        .await?;
    for (key, q) in [
        ("tx.abort_error", "SELECT 1 / 0"),
        ("tx.aborted_error", "SELECT 1"),
    ] {
        if let Err(e) = tr.query(q, &[]).await {
            out!(key, "{}", pg_err(&e));
        }
    }
    tr.rollback().await?;
    let sql = format!("SELECT string_agg(v, ',' ORDER BY id) FROM {T}_tx");
    out!("tx.after_rollback", "{}", one(&c, &sql).await?);
    Ok(())
}

async fn pipeline(t: &Target) -> anyhow::Result<()> {
    let c = connect(t).await?;
    c.batch_execute(&format!(
        "DROP TABLE IF EXISTS {T}_pipe; CREATE TABLE {T}_pipe (id int PRIMARY KEY)"
    ))
    .await?;
    let ins = c
        .prepare(&format!("INSERT INTO {T}_pipe VALUES ($1)"))
        .await?;
    let dbl = c.prepare("SELECT $1::int8 * 2").await?;
    // All written before the first answer is read; each request has its own Sync.
    let results = futures::future::join_all((0..40i64).map(|i| {
        let (c, ins, dbl) = (&c, &ins, &dbl);
        async move {
            match i {
                10 | 20 => c
                    .execute(ins, &[&1i32])
                    .await
                    .map(|n| format!("insert {n}")),
                15 => c.query_one("SELECT 1 / 0", &[]).await.map(|_| "?".into()),
                _ => c
                    .query_one(dbl, &[&i])
                    .await
                    .map(|r| r.get::<_, i64>(0).to_string()),
            }
        }
    }))
    .await;
    let shown: Vec<String> = results
        .iter()
        .map(|r| r.as_ref().map_or_else(pg_err, String::clone))
        .collect();
    out!("pipeline.results", "{shown:?}");
    // A pipelined explicit transaction: the error aborts it, the rest is refused until ROLLBACK.
    let (a, b, d, e) = tokio::join!(
        c.batch_execute("BEGIN"),
        c.execute(&ins, &[&2i32]),
        c.query_one("SELECT 1 / 0", &[]),
        c.execute(&ins, &[&3i32]),
    );
    out!(
        "pipeline.tx",
        "{:?} {:?} {:?} {:?}",
        a.is_ok(),
        b.map_err(|e| pg_err(&e)),
        d.map(|_| ()).map_err(|e| pg_err(&e)),
        e.map_err(|e| pg_err(&e))
    );
    c.batch_execute("ROLLBACK").await?;
    out!(
        "pipeline.rows",
        "{}",
        one(
            &c,
            &format!("SELECT string_agg(id::text, ',') FROM {T}_pipe")
        )
        .await?
    );
    Ok(())
}

async fn wait_active(t: &Target, marker: &str) -> anyhow::Result<bool> {
    let w = connect(t).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
    );
    while Instant::now() < deadline {
        if one(&w, &sql).await? != "0" {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(false)
}

async fn cancel(t: &Target) -> anyhow::Result<()> {
    let c = connect(t).await?;
    let token = c.cancel_token();
    let start = Instant::now();
    let (r, seen) = tokio::join!(
        c.simple_query("SELECT pg_sleep(30) /* cancel-me */"),
        async {
            let seen = wait_active(t, "cancel-me").await;
            let sent = token.cancel_query(NoTls).await;
            (
                seen.map_err(|e| e.to_string()),
                sent.map_err(|e| e.to_string()),
            )
        }
    );
    out!("cancel.seen_running", "{:?}", seen);
    out!(
        "cancel.result",
        "{}",
        r.map_or_else(|e| pg_err(&e), |_| "not cancelled".into())
    );
    out!(
        "cancel.fast",
        "{}",
        start.elapsed() < Duration::from_secs(10)
    );
    out!("cancel.after", "{}", one(&c, "SELECT 1").await?);
    Ok(())
}

async fn terminate(t: &Target) -> anyhow::Result<()> {
    let c = connect(t).await?;
    let r = c
        .simple_query("SELECT pg_terminate_backend(pg_backend_pid())")
        .await;
    out!(
        "terminate.result",
        "{}",
        r.map_or_else(|e| pg_err(&e), |_| "not terminated".into())
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    out!("terminate.closed", "{}", c.is_closed());
    let next = c.simple_query("SELECT 1").await;
    out!(
        "terminate.next",
        "{}",
        next.map_or_else(|e| pg_err(&e), |_| "ok".into())
    );
    let again = connect(t).await?;
    out!(
        "terminate.reconnect",
        "{}",
        one(&again, "SELECT 'back'").await?
    );
    Ok(())
}

impl Scenario for TokioPostgres {
    fn name(&self) -> &'static str {
        "tokio-postgres"
    }

    fn step<'a>(&'a self, t: &'a Target, step: &str) -> Option<StepFuture<'a>> {
        Some(match step {
            "startup" => Box::pin(startup(t)),
            "encoding" => Box::pin(encoding(t)),
            "tx" => Box::pin(tx(t)),
            "pipeline" => Box::pin(pipeline(t)),
            "cancel" => Box::pin(cancel(t)),
            "large" => Box::pin(data::large(t)),
            "notify" => Box::pin(data::notify(t)),
            "copy" => Box::pin(data::copy(t)),
            "prepared" => Box::pin(data::prepared(t)),
            "cursor" => Box::pin(data::cursor(t)),
            "terminate" => Box::pin(terminate(t)),
            _ => return None,
        })
    }

    fn describe(&self, e: &anyhow::Error) -> String {
        match e.downcast_ref::<tokio_postgres::Error>() {
            Some(pg) => pg_err(pg),
            None => format!("{e:#}"),
        }
    }
}
