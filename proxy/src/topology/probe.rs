//! One role probe: a fresh, timed-out connection as the check user, one query.
//!
//! A fresh connection each time (not a kept one) is deliberate: after `kill -9` of the postmaster
//! an already-open session can keep answering from an orphaned backend, while a new connection is
//! refused at once — which is exactly the signal we want.

use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
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
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = client.simple_query(PROBE_SQL).await.map_err(classify);
    drop(client);
    // The connection ends once the client is gone; bound it anyway.
    let _ = tokio::time::timeout(Duration::from_millis(200), driver).await;
    let rows = result?;
    for msg in rows {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = msg {
            let in_recovery = match row.get(0) {
                Some("t") => true,
                Some("f") => false,
                other => {
                    return Err(ProbeOutcome::Failed(format!(
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
    Err(ProbeOutcome::Failed("probe query returned no row".into()))
}

/// `name TAB sync_state` lines (names may hold spaces, not tabs or newlines).
fn parse_senders(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.rsplit_once('\t'))
        .map(|(name, state)| (name.to_string(), state.to_string()))
        .collect()
}

/// Sorts errors into "gone" (down now), "unusable" (down now) and ambiguous I/O.
fn classify(e: tokio_postgres::Error) -> ProbeOutcome {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let msg = format!("{}: {}", code.code(), db.message());
        return ProbeOutcome::Failed(msg);
    }
    if e.code() == Some(&SqlState::CANNOT_CONNECT_NOW) {
        return ProbeOutcome::Failed(e.to_string());
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
        _ => ProbeOutcome::Failed(text),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_senders;

    #[test]
    fn wal_senders_are_read_line_by_line_and_names_may_hold_spaces() {
        assert_eq!(
            parse_senders("node1\tsync\nmy standby\tasync"),
            [
                ("node1".to_string(), "sync".to_string()),
                ("my standby".to_string(), "async".to_string())
            ]
        );
        assert!(parse_senders("").is_empty());
        assert!(parse_senders("no state here").is_empty());
    }
}
