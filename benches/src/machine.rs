//! What a result was measured on: date, cores, CPU, kernel, and the versions of everything
//! compared, for the header of every report.

use std::process::Command;

use pgpivot_tests::pg_bin;

fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines().next().map(|l| l.trim().to_string())
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// `2026-11-27 10:31 UTC`.
pub fn now_utc() -> String {
    first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default()
}

/// The git revision pgpivot was built from (`-dirty` with uncommitted changes).
pub fn pgpivot_rev() -> String {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let rev = first_line("git", &["-C", src, "rev-parse", "--short=10", "HEAD"])
        .filter(|r| !r.contains("fatal"))
        .unwrap_or_else(|| "unknown".into());
    let dirty = Command::new("git")
        .args(["-C", src, "status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    format!("{rev}{}", if dirty { "-dirty" } else { "" })
}

pub fn postgres_version() -> String {
    first_line(&pg_bin("postgres").to_string_lossy(), &["--version"])
        .map(|l| l.replace("postgres (PostgreSQL) ", "PostgreSQL "))
        .unwrap_or_else(|| "PostgreSQL ?".into())
}

pub fn pgbouncer_version() -> String {
    first_line(crate::targets::pgbouncer::BINARY, &["--version"])
        .unwrap_or_else(|| "PgBouncer (not installed)".into())
}

pub fn pgpool_version() -> String {
    first_line(crate::targets::pgpool::BINARY, &["--version"])
        .map(|l| l.replace("pgpool-II version", "Pgpool-II"))
        .unwrap_or_else(|| "Pgpool-II (not installed)".into())
}

/// The header lines every report starts with.
pub fn header() -> Vec<String> {
    let kernel = first_line("uname", &["-r"]).unwrap_or_default();
    vec![
        format!(
            "{} on {} cores ({}), Linux {}",
            now_utc(),
            cores(),
            cpu_model(),
            kernel
        ),
        format!(
            "{}; {}; {}; pgpivot {}",
            postgres_version(),
            pgbouncer_version(),
            pgpool_version(),
            pgpivot_rev()
        ),
    ]
}
