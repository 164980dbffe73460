//! One pgbench run against a target: the command, a time bound, and what it measured.
//!
//! tps is pgbench's own figure ("without initial connection time"). Latencies come from its
//! per-transaction log (`--log`, one line per transaction with its latency in µs), from which
//! the average and the 99th percentile are computed exactly; `--sampling-rate` below 1 logs a
//! random sample instead (an unbiased estimate, less I/O on a busy machine).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use pgpivot_tests::pg_bin;

use crate::reaper;

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// pgbench's built-in script: `select-only` or `tpcb-like`.
    pub script: String,
    /// `-M`: `simple`, `extended` or `prepared`.
    pub mode: String,
    pub clients: u32,
    pub threads: u32,
    pub seconds: u32,
    /// `--sampling-rate` for the transaction log (1 = every transaction).
    pub sampling_rate: f64,
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub tps: f64,
    pub avg_ms: f64,
    pub p99_ms: f64,
    pub transactions: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok(Measured),
    /// pgbench failed or was stopped; the reason in one line.
    Failed(String),
}

/// Runs pgbench against `port` with its log files in `dir` (emptied afterwards).
pub fn run(
    spec: &Spec,
    port: u16,
    user: &str,
    password: &str,
    db: &str,
    dir: &Path,
) -> anyhow::Result<Outcome> {
    let prefix = dir.join("pgbench_log");
    let mut cmd = Command::new(pg_bin("pgbench"));
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user, "-n"])
        .args(["-b", &spec.script, "-M", &spec.mode])
        .args(["-c", &spec.clients.to_string()])
        .args(["-j", &spec.threads.min(spec.clients).to_string()])
        .args(["-T", &spec.seconds.to_string()])
        .arg("--log")
        .arg(format!("--log-prefix={}", prefix.display()));
    if spec.sampling_rate < 1.0 {
        cmd.arg(format!("--sampling-rate={}", spec.sampling_rate));
    }
    cmd.arg(db)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "30")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    reaper::own_group(&mut cmd);
    // Connecting 500 clients (SCRAM each) takes a while; a target that never lets them in must
    // not hang the whole matrix.
    let bound = Duration::from_secs(spec.seconds as u64 + 60 + spec.clients as u64 / 5);
    let child = cmd.spawn().context("starting pgbench")?;
    let pgid = child.id();
    reaper::watch_group(pgid);
    let out = wait_bounded(child, bound);
    reaper::forget_group(pgid);
    let outcome = match out {
        None => Outcome::Failed(format!("no result within {}s (stopped)", bound.as_secs())),
        Some(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            match parse_summary(&stdout) {
                Some((_, 0, _)) => Outcome::Failed(format!(
                    "no transaction completed in {} s (initial connection time {}){}",
                    spec.seconds,
                    connection_time(&stdout).unwrap_or_else(|| "?".into()),
                    stderr
                        .lines()
                        .find(|l| l.contains("error") || l.contains("FATAL"))
                        .map(|l| format!("; {}", l.trim()))
                        .unwrap_or_default()
                )),
                Some((tps, transactions, failed)) if out.status.success() => {
                    let (avg_ms, p99_ms) = latencies(dir)?;
                    Outcome::Ok(Measured {
                        tps,
                        avg_ms,
                        p99_ms,
                        transactions,
                        failed,
                    })
                }
                _ => Outcome::Failed(first_error(&stderr, &stdout)),
            }
        }
    };
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_name().to_string_lossy().starts_with("pgbench_log") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(outcome)
}

fn wait_bounded(mut child: std::process::Child, bound: Duration) -> Option<std::process::Output> {
    // Read the pipes on threads so a chatty pgbench never blocks on a full pipe.
    let mut so = child.stdout.take()?;
    let mut se = child.stderr.take()?;
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut so, &mut v);
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut se, &mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() < bound => std::thread::sleep(Duration::from_millis(50)),
            _ => break None,
        }
    };
    let Some(status) = status else {
        reaper::signal_group(child.id(), libc::SIGKILL);
        let _ = child.wait();
        let _ = (t1.join(), t2.join());
        return None;
    };
    Some(std::process::Output {
        status,
        stdout: t1.join().unwrap_or_default(),
        stderr: t2.join().unwrap_or_default(),
    })
}

/// (tps, transactions processed, failed transactions) from pgbench's summary.
pub fn parse_summary(out: &str) -> Option<(f64, u64, u64)> {
    let mut tps = None;
    let mut done = None;
    let mut failed = 0;
    for l in out.lines() {
        if let Some(rest) = l.strip_prefix("tps = ") {
            // "tps = 1234.5 (without initial connection time)"
            tps = rest.split_whitespace().next().and_then(|v| v.parse().ok());
        } else if let Some(rest) = l.strip_prefix("number of transactions actually processed: ") {
            done = rest.split(['/', ' ']).next().and_then(|v| v.parse().ok());
        } else if let Some(rest) = l.strip_prefix("number of failed transactions: ") {
            failed = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    Some((tps?, done?, failed))
}

/// "initial connection time = 1234.5 ms" from the summary.
fn connection_time(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix("initial connection time = "))
        .map(|v| v.trim().to_string())
}

fn first_error(stderr: &str, stdout: &str) -> String {
    let wanted = |l: &&str| {
        let l = l.to_ascii_lowercase();
        l.contains("error") || l.contains("fatal") || l.contains("abort")
    };
    let line = stderr
        .lines()
        .find(wanted)
        .or_else(|| stdout.lines().find(wanted))
        .or_else(|| stderr.lines().next())
        .unwrap_or("pgbench failed without a message");
    let mut s = line.trim().to_string();
    if s.len() > 160 {
        s.truncate(160);
        s.push('…');
    }
    s
}

/// Average and 99th percentile latency (ms) over every logged transaction in `dir`.
pub fn latencies(dir: &Path) -> anyhow::Result<(f64, f64)> {
    let mut us: Vec<u32> = Vec::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        if !e.file_name().to_string_lossy().starts_with("pgbench_log") {
            continue;
        }
        let text = std::fs::read_to_string(e.path())?;
        us.extend(parse_log(&text));
    }
    Ok(avg_p99_ms(&mut us))
}

/// Latencies (µs) of the successful transactions in a per-transaction log. Each line is
/// `client_id transaction_no time script_no time_epoch time_us [...]`, `time` being the
/// latency in µs, or `failed` / `skipped` for those.
pub fn parse_log(text: &str) -> impl Iterator<Item = u32> + '_ {
    text.lines()
        .filter_map(|l| l.split_ascii_whitespace().nth(2)?.parse::<u32>().ok())
}

/// (average, 99th percentile) in ms; the percentile is the nearest-rank value.
pub fn avg_p99_ms(us: &mut [u32]) -> (f64, f64) {
    if us.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let avg = us.iter().map(|&v| v as f64).sum::<f64>() / us.len() as f64 / 1000.0;
    let rank = ((us.len() as f64) * 0.99).ceil() as usize;
    let idx = rank.clamp(1, us.len()) - 1;
    let (_, p99, _) = us.select_nth_unstable(idx);
    (avg, *p99 as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_pgbench_15() {
        let out = "transaction type: <builtin: select only>\n\
                   number of transactions actually processed: 123456\n\
                   number of failed transactions: 2 (0.002%)\n\
                   latency average = 0.180 ms\n\
                   initial connection time = 12.3 ms\n\
                   tps = 55555.123456 (without initial connection time)\n";
        assert_eq!(parse_summary(out), Some((55555.123456, 123456, 2)));
        assert_eq!(parse_summary("pgbench: error: connection refused"), None);
    }

    #[test]
    fn log_lines_and_percentile() {
        let log = "0 1 100 0 1700000000 1\n0 2 failed 0 1700000000 2\n1 1 300 0 1700000000 3\n";
        let mut v: Vec<u32> = parse_log(log).collect();
        assert_eq!(v, vec![100, 300]);
        let (avg, p99) = avg_p99_ms(&mut v);
        assert!((avg - 0.2).abs() < 1e-9);
        assert!((p99 - 0.3).abs() < 1e-9);
        let mut many: Vec<u32> = (1..=1000).collect();
        let (_, p99) = avg_p99_ms(&mut many);
        assert!((p99 - 0.990).abs() < 1e-9, "{p99}");
    }
}
