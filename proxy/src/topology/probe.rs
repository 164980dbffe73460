//! One role probe: a fresh, timed-out connection as the check user, one query.
//!
//! A fresh connection each time (not a kept one) is deliberate: after `kill -9` of the postmaster
//! an already-open session can keep answering from an orphaned backend, while a new connection is
//! refused at once — which is exactly the signal we want.

use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use super::node::{parse_lsn, ProbeOutcome};
use crate::config::CheckSettings;

/// Recovery flag, timeline and WAL position in one round trip. For a primary the timeline is the
/// first 8 hex digits of the current WAL file name; for a standby the WAL receiver's timeline.
/// A standby also reports its WAL receiver's status (`streaming`, ...) and how far its replay is
/// behind in time: 0 when it has replayed all it received, else the age of the last replayed
/// transaction (the usual measure; an idle primary sends nothing to be behind on).
/// Last, for `SHOW pool_nodes`' `replication_sync_state`: a standby's WAL receiver name (its
/// `application_name`, else the fallback libpq got: `cluster_name` or `walreceiver`), and a
/// primary's WAL senders as `name TAB sync_state` lines.
const PROBE_SQL: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() \
          THEN (SELECT received_tli FROM pg_stat_wal_receiver)::int8 \
          ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8 END, \
     (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text, \
     CASE WHEN pg_is_in_recovery() THEN (SELECT status FROM pg_stat_wal_receiver) END, \
     CASE WHEN pg_is_in_recovery() THEN \
          CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
               ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END END, \
     CASE WHEN pg_is_in_recovery() THEN \
          (SELECT coalesce(substring(conninfo FROM '(?:^| )application_name=([^ ]+)'), \
                           substring(conninfo FROM 'fallback_application_name=([^ ]+)'), \
                           'walreceiver') FROM pg_stat_wal_receiver) \
          ELSE (SELECT string_agg(application_name || E'\\t' || sync_state, E'\\n') \
                FROM pg_stat_replication) END";

pub async fn probe(host: &str, port: u16, check: &CheckSettings) -> ProbeOutcome {
    let started = Instant::now();
    match tokio::time::timeout(check.timeout, run(host, port, check)).await {
        Err(_) => ProbeOutcome::Timeout,
        Ok(Err(outcome)) => outcome,
        Ok(Ok(answer)) => ProbeOutcome::Ok {
            in_recovery: answer.in_recovery,
            timeline: answer.timeline,
            lsn: answer.lsn,
            receiver: answer.receiver,
            replay_lag: answer.replay_lag,
            wal_name: answer.wal_name,
            senders: answer.senders,
            latency: started.elapsed(),
        },
    }
}

/// The probe query's row.
struct Answer {
    in_recovery: bool,
    timeline: Option<u32>,
    lsn: Option<u64>,
    receiver: Option<String>,
    replay_lag: Option<f64>,
    wal_name: Option<String>,
    senders: Vec<(String, String)>,
}

async fn run(host: &str, port: u16, check: &CheckSettings) -> Result<Answer, ProbeOutcome> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(host)
        .port(port)
        .user(&check.user)
        .dbname(&check.database)
        .application_name("pgpivot-monitor")
        .connect_timeout(check.timeout);
    if let Some(pw) = &check.password {
        cfg.password(pw);
    }
    let (client, conn) = cfg.connect(NoTls).await.map_err(classify)?;
    // The connection is driven inside this future, not on a task of its own: when the caller's
    // timeout drops the probe mid-query (a hung server), the socket goes with it and nothing is
    // left behind waiting for an answer.
    let mut conn = std::pin::pin!(conn);
    let result = {
        let mut query = std::pin::pin!(client.simple_query(PROBE_SQL));
        tokio::select! {
        r = &mut query => r.map_err(classify),
        ended = &mut conn => {
            // A server that ends the session says why first (57P01 when someone terminates the
            // probe's backend): the query holds that answer, which must not be read as a
            // refused connection (down at once).
            match tokio::time::timeout(Duration::from_millis(100), &mut query).await {
                Ok(Err(e)) if e.as_db_error().is_some() => Err(classify(e)),
                _ => Err(match ended {
                    Err(e) => classify(e),
                    Ok(()) => ProbeOutcome::Refused("connection closed during the probe".into()),
                }),
            }
        }
        }
    };
    drop(client);
    // Without a client the connection says goodbye (Terminate) and ends; bound it anyway.
    let _ = tokio::time::timeout(Duration::from_millis(200), conn).await;
    let rows = result?;
    for msg in rows {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = msg {
            let in_recovery = match row.get(0) {
                Some("t") => true,
                Some("f") => false,
                other => {
                    return Err(ProbeOutcome::Error(format!(
                        "unexpected pg_is_in_recovery() answer {other:?}"
                    )))
                }
            };
            return Ok(Answer {
                in_recovery,
                timeline: row.get(1).and_then(|s| s.parse::<u32>().ok()),
                lsn: row.get(2).and_then(parse_lsn),
                receiver: row.get(3).map(str::to_string),
                replay_lag: row.get(4).and_then(|s| s.parse::<f64>().ok()),
                wal_name: row.get(5).filter(|_| in_recovery).map(str::to_string),
                senders: if in_recovery {
                    Vec::new()
                } else {
                    parse_senders(row.get(5).unwrap_or(""))
                },
            });
        }
    }
    Err(ProbeOutcome::Error("probe query returned no row".into()))
}

/// `name TAB sync_state` lines (names may hold spaces, not tabs or newlines).
fn parse_senders(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.rsplit_once('\t'))
        .map(|(name, state)| (name.to_string(), state.to_string()))
        .collect()
}

/// Sorts errors into "the node is gone or says so" (down at once) and everything else (counts
/// toward the retry budget).
fn classify(e: tokio_postgres::Error) -> ProbeOutcome {
    if let Some(db) = e.as_db_error() {
        return classify_server_error(db.code().code(), db.message());
    }
    let text = e.to_string();
    let io_kind = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(|io| io.kind());
    match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused)
        | Some(std::io::ErrorKind::ConnectionReset)
        | Some(std::io::ErrorKind::ConnectionAborted)
        | Some(std::io::ErrorKind::UnexpectedEof)
        | Some(std::io::ErrorKind::BrokenPipe) => ProbeOutcome::Refused(text),
        Some(std::io::ErrorKind::TimedOut) => ProbeOutcome::Timeout,
        _ if text.contains("timed out") => ProbeOutcome::Timeout,
        _ if text.contains("closed") => ProbeOutcome::Refused(text),
        _ => ProbeOutcome::Error(text),
    }
}

/// An error the server sent. Only "I take no connections" takes the node down at once:
/// `57P03` (starting up, shutting down, not accepting connections) and `57P02` (crash of another
/// server process). `57P01` is what any terminated session gets (`pg_terminate_backend` sweeps
/// too), so it counts toward the budget; a real shutdown answers the next probe with `57P03` or a
/// refused connection. `53300` too many clients, `28xxx` the check user's login and a failing
/// probe query say nothing certain about the node and count toward the budget.
fn classify_server_error(code: &str, message: &str) -> ProbeOutcome {
    let text = format!("{code}: {message}");
    match code {
        "57P02" | "57P03" => ProbeOutcome::Unavailable(text),
        _ => ProbeOutcome::Error(text),
    }
}

#[cfg(test)]
mod tests;
