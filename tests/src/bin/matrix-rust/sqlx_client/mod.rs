//! The scenario for sqlx: every `query()` is a named statement (`sqlx_s_N`) kept in a
//! per-connection cache, `raw_sql` is a simple-protocol batch, nested `begin` is a savepoint,
//! `PgListener` listens on a connection of its own. sqlx has no cancel request and shows
//! neither ParameterStatus values nor the BackendKeyData pid: no `cancel` step, no
//! `startup.reported.*` or `key_pid` lines.

mod data;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError, PgRow};
use sqlx::{Column, Connection, Row, TypeInfo};

use crate::{out, Scenario, StepFuture, Target};

pub struct Sqlx;

const T: &str = "m_sqlx";

fn options(t: &Target) -> PgConnectOptions {
    PgConnectOptions::new()
        .host(&t.host)
        .port(t.port)
        .username(&t.user)
        .password(&t.password)
        .database(&t.db)
        .application_name("matrix-sqlx")
        .options([("statement_timeout", "12345")])
}

async fn connect(t: &Target) -> anyhow::Result<PgConnection> {
    Ok(PgConnection::connect_with(&options(t)).await?)
}

/// A server error as SQLSTATE and message; an I/O error by its kind only (whether a closed
/// socket reads as a reset or as end of file is the kernel's timing, not the peer's behaviour).
fn sqlx_err(e: &sqlx::Error) -> String {
    match e
        .as_database_error()
        .and_then(|d| d.try_downcast_ref::<PgDatabaseError>())
    {
        Some(db) => format!("{} {}", db.code(), db.message()),
        None if matches!(e, sqlx::Error::Io(_)) => "io error".into(),
        None => format!("{e}"),
    }
}

async fn one(c: &mut PgConnection, sql: &str) -> anyhow::Result<String> {
    let row = sqlx::query(sql).fetch_one(c).await?;
    Ok(cell(&row, 0))
}

fn cell(r: &PgRow, i: usize) -> String {
    match r.columns()[i].type_info().name() {
        "INT4" => shown(r.get::<Option<i32>, _>(i)),
        "INT8" => shown(r.get::<Option<i64>, _>(i)),
        _ => shown(r.get::<Option<String>, _>(i)),
    }
}

fn shown<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "NULL".into(), |v| v.to_string())
}

fn show_rows(rows: &[PgRow]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| (0..r.len()).map(|i| cell(r, i)).collect())
        .collect();
    format!("{rows:?}")
}

async fn startup(t: &Target) -> anyhow::Result<()> {
    let mut c = connect(t).await?;
    for p in [
        "application_name",
        "statement_timeout",
        "client_encoding",
        "DateStyle",
    ] {
        out!(
            format!("startup.show.{p}"),
            "{}",
            one(&mut c, &format!("SHOW {p}")).await?
        );
    }
    sqlx::raw_sql("SET statement_timeout = 999")
        .execute(&mut c)
        .await?;
    out!(
        "startup.after_set",
        "{}",
        one(&mut c, "SHOW statement_timeout").await?
    );
    // DISCARD ALL also drops sqlx's cached statements: later texts must be new ones.
    sqlx::raw_sql("DISCARD ALL").execute(&mut c).await?;
    let st = one(&mut c, "SHOW statement_timeout -- 2").await?;
    out!("startup.after_discard.statement_timeout", "{st}");
    let app = one(&mut c, "SHOW application_name -- 2").await?;
    out!("startup.after_discard.application_name", "{app}");
    let other = PgConnectOptions::new()
        .host(&t.host)
        .port(t.port)
        .username(&t.user)
        .password(&t.password)
        .database(&t.db)
        .application_name("matrix-sqlx-2");
    let mut c = PgConnection::connect_with(&other).await?;
    out!(
        "startup.other.statement_timeout",
        "{}",
        one(&mut c, "SHOW statement_timeout").await?
    );
    out!(
        "startup.other.application_name",
        "{}",
        one(&mut c, "SHOW application_name").await?
    );
    let mut c = connect(t).await?;
    out!(
        "startup.again.statement_timeout",
        "{}",
        one(&mut c, "SHOW statement_timeout").await?
    );
    out!(
        "startup.again.application_name",
        "{}",
        one(&mut c, "SHOW application_name").await?
    );
    Ok(())
}

async fn encoding(t: &Target) -> anyhow::Result<()> {
    let mut c = connect(t).await?;
    let set = sqlx::raw_sql("SET client_encoding TO 'latin1'")
        .execute(&mut c)
        .await;
    out!(
        "encoding.set",
        "{}",
        set.map_or_else(|e| sqlx_err(&e), |_| "accepted".into())
    );
    let text = sqlx::query("SELECT 'é' || chr(255)")
        .fetch_one(&mut c)
        .await;
    let text = text.map(|r| r.try_get::<String, _>(0).map_err(|e| sqlx_err(&e)));
    out!("encoding.text", "{:?}", text.map_err(|e| sqlx_err(&e)));
    Ok(())
}

async fn tx(t: &Target) -> anyhow::Result<()> {
    let mut c = connect(t).await?;
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS {T}_tx; CREATE TABLE {T}_tx (id int PRIMARY KEY, v text)"
    ))
    .execute(&mut c)
    .await?;
    let mut tr = c.begin().await?;
    let sql = format!("INSERT INTO {T}_tx VALUES ($1, 'a'), ($2, 'b')");
    let n = sqlx::query(&sql).bind(1).bind(2).execute(&mut *tr).await?;
    out!("tx.insert", "{}", n.rows_affected());
    tr.commit().await?;
    let mut tr = c.begin().await?;
    sqlx::query(&format!("INSERT INTO {T}_tx VALUES (10, 'rolled back')"))
        .execute(&mut *tr)
        .await?;
    tr.rollback().await?;
    let mut tr = c.begin().await?;
    sqlx::query(&format!("INSERT INTO {T}_tx VALUES (3, 'c')"))
        .execute(&mut *tr)
        .await?;
    {
        let mut sp = tr.begin().await?; // a savepoint
        sqlx::query(&format!("INSERT INTO {T}_tx VALUES (4, 'd')"))
            .execute(&mut *sp)
            .await?;
        let dup = sqlx::query(&format!("INSERT INTO {T}_tx VALUES ($1, 'dup')"))
            .bind(1)
            .execute(&mut *sp)
            .await;
        if let Err(e) = dup {
            let detail = e
                .as_database_error()
                .and_then(|d| d.try_downcast_ref::<PgDatabaseError>())
                .and_then(|d| d.detail())
                .unwrap_or_default()
                .to_string();
            out!("tx.savepoint_error", "{} {detail}", sqlx_err(&e));
        }
        sp.rollback().await?;
    }
    sqlx::query(&format!("INSERT INTO {T}_tx VALUES (5, 'e')"))
        .execute(&mut *tr)
        .await?;
    tr.commit().await?;
    let ids: Vec<i32> = sqlx::query_scalar(&format!("SELECT id FROM {T}_tx ORDER BY id"))
        .fetch_all(&mut c)
        .await?;
    out!("tx.ids", "{ids:?}");
    let mut tr = c.begin().await?;
    sqlx::query(&format!("UPDATE {T}_tx SET v = 'z'"))
        .execute(&mut *tr)
        .await?;
    for (key, q) in [
        ("tx.abort_error", "SELECT 1 / 0"),
        ("tx.aborted_error", "SELECT 1"),
    ] {
        if let Err(e) = sqlx::query(q).execute(&mut *tr).await {
            out!(key, "{}", sqlx_err(&e));
        }
    }
    tr.rollback().await?;
    let sql = format!("SELECT string_agg(v, ',' ORDER BY id) FROM {T}_tx");
    out!("tx.after_rollback", "{}", one(&mut c, &sql).await?);
    Ok(())
}

async fn pipeline(t: &Target) -> anyhow::Result<()> {
    let mut c = connect(t).await?;
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS {T}_pipe; CREATE TABLE {T}_pipe (id int PRIMARY KEY)"
    ))
    .execute(&mut c)
    .await?;
    // One simple-protocol batch; the error ends it (an implicit transaction: nothing stays).
    let batch = format!(
        "INSERT INTO {T}_pipe VALUES (1); INSERT INTO {T}_pipe VALUES (1); INSERT INTO {T}_pipe VALUES (2)"
    );
    let r = sqlx::raw_sql(&batch).execute(&mut c).await;
    out!(
        "pipeline.batch",
        "{}",
        r.map_or_else(|e| sqlx_err(&e), |r| format!("ok {}", r.rows_affected()))
    );
    let ok = format!("INSERT INTO {T}_pipe VALUES (1); INSERT INTO {T}_pipe VALUES (2); SELECT 3");
    let rows = sqlx::raw_sql(&ok).fetch_all(&mut c).await?;
    out!("pipeline.batch_ok", "{}", show_rows(&rows));
    let ids: Vec<i32> = sqlx::query_scalar(&format!("SELECT id FROM {T}_pipe ORDER BY id"))
        .fetch_all(&mut c)
        .await?;
    out!("pipeline.rows", "{ids:?}");
    Ok(())
}

async fn cancel(t: &Target) -> anyhow::Result<()> {
    // No cancel request in sqlx: the server cancels on statement_timeout.
    let mut c = connect(t).await?;
    sqlx::raw_sql("SET statement_timeout = 100")
        .execute(&mut c)
        .await?;
    let r = sqlx::query("SELECT pg_sleep(5)").execute(&mut c).await;
    out!(
        "cancel.timeout",
        "{}",
        r.map_or_else(|e| sqlx_err(&e), |_| "not cancelled".into())
    );
    sqlx::raw_sql("RESET statement_timeout")
        .execute(&mut c)
        .await?;
    out!("cancel.after", "{}", one(&mut c, "SELECT 1").await?);
    Ok(())
}

async fn terminate(t: &Target) -> anyhow::Result<()> {
    let mut c = connect(t).await?;
    let r = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
        .execute(&mut c)
        .await;
    out!(
        "terminate.result",
        "{}",
        r.map_or_else(|e| sqlx_err(&e), |_| "not terminated".into())
    );
    let next = c.ping().await;
    out!(
        "terminate.next",
        "{}",
        next.map_or_else(|e| sqlx_err(&e), |_| "ok".into())
    );
    let mut again = connect(t).await?;
    out!(
        "terminate.reconnect",
        "{}",
        one(&mut again, "SELECT 'back'").await?
    );
    Ok(())
}

impl Scenario for Sqlx {
    fn name(&self) -> &'static str {
        "sqlx"
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
        match e.downcast_ref::<sqlx::Error>() {
            Some(s) => sqlx_err(s),
            None => format!("{e:#}"),
        }
    }
}
