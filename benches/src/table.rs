//! The pgbench matrix's results: every round of every target in every cell, reduced to one
//! markdown table (medians, and ratios paired within each round).

use std::fmt::Write;

use crate::pgbench::{Measured, Outcome};
use crate::targets::Kind;

/// One cell of the matrix: a pgbench script, protocol mode and client count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub script: String,
    pub mode: String,
    pub clients: u32,
}

/// Results of one target in one cell.
#[derive(Debug, Clone, Default)]
pub struct Runs {
    /// Per round (index = round - 1): None when the round has not run it.
    pub rounds: Vec<Option<Outcome>>,
    /// Why the target does not run in this cell at all.
    pub not_applicable: Option<String>,
}

#[derive(Debug, Default)]
pub struct Results {
    pub rows: Vec<(Cell, Vec<(Kind, Runs)>)>,
}

pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn ok(o: &Option<Outcome>) -> Option<&Measured> {
    match o {
        Some(Outcome::Ok(m)) => Some(m),
        _ => None,
    }
}

impl Runs {
    fn measured(&self) -> Vec<&Measured> {
        self.rounds.iter().filter_map(ok).collect()
    }

    fn failures(&self) -> Vec<&str> {
        self.rounds
            .iter()
            .filter_map(|o| match o {
                Some(Outcome::Failed(why)) => Some(why.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Median over rounds of this target's tps divided by `other`'s tps in the same round.
fn paired_ratio(a: &Runs, b: &Runs) -> Option<f64> {
    let mut r: Vec<f64> = a
        .rounds
        .iter()
        .zip(&b.rounds)
        .filter_map(|(x, y)| Some(ok(x)?.tps / ok(y)?.tps))
        .collect();
    median(&mut r)
}

fn fmt_tps(v: f64) -> String {
    format!("{v:.0}")
}

fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v < 10.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.1}")
    }
}

impl Results {
    /// The markdown table.
    pub fn render(&self, rounds: u32) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "| script | -M | clients | target | tps | tps min–max | avg ms | p99 ms | ÷ direct | ÷ pgpivot | note |"
        );
        let _ = writeln!(s, "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|");
        for (cell, targets) in &self.rows {
            let find = |k: Kind| targets.iter().find(|(t, _)| *t == k).map(|(_, r)| r);
            for (kind, runs) in targets {
                let lead = format!(
                    "| {} | {} | {} | {} |",
                    cell.script,
                    cell.mode,
                    cell.clients,
                    kind.name()
                );
                if let Some(why) = &runs.not_applicable {
                    let _ = writeln!(s, "{lead} n/a | | | | | | {why} |");
                    continue;
                }
                let ms = runs.measured();
                let fails = runs.failures();
                if ms.is_empty() {
                    let why = fails.first().copied().unwrap_or("not run");
                    let _ = writeln!(s, "{lead} failed | | | | | | {} |", why.replace('|', "/"));
                    continue;
                }
                let mut tps: Vec<f64> = ms.iter().map(|m| m.tps).collect();
                let mut avg: Vec<f64> = ms.iter().map(|m| m.avg_ms).collect();
                let mut p99: Vec<f64> = ms.iter().map(|m| m.p99_ms).collect();
                let lo = tps.iter().cloned().fold(f64::INFINITY, f64::min);
                let hi = tps.iter().cloned().fold(0.0, f64::max);
                let range = if ms.len() > 1 {
                    format!("{}–{}", fmt_tps(lo), fmt_tps(hi))
                } else {
                    String::new()
                };
                let vs_direct = match (kind, find(Kind::Direct)) {
                    (Kind::Direct, _) | (_, None) => String::new(),
                    (_, Some(d)) => paired_ratio(runs, d)
                        .map(|r| format!("{r:.2}"))
                        .unwrap_or_default(),
                };
                let vs_pivot = kind
                    .pivot_peer()
                    .and_then(find)
                    .and_then(|p| paired_ratio(runs, p))
                    .map(|r| format!("{r:.2}"))
                    .unwrap_or_default();
                let mut note = Vec::new();
                if !fails.is_empty() {
                    note.push(format!(
                        "{} of {rounds} rounds failed: {}",
                        fails.len(),
                        fails[0].replace('|', "/")
                    ));
                }
                let failed_tx: u64 = ms.iter().map(|m| m.failed).sum();
                if failed_tx > 0 {
                    note.push(format!("{failed_tx} failed transactions"));
                }
                let _ = writeln!(
                    s,
                    "{lead} {} | {range} | {} | {} | {vs_direct} | {vs_pivot} | {} |",
                    fmt_tps(median(&mut tps).unwrap_or(f64::NAN)),
                    fmt_ms(median(&mut avg).unwrap_or(f64::NAN)),
                    fmt_ms(median(&mut p99).unwrap_or(f64::NAN)),
                    note.join("; ")
                );
            }
        }
        s
    }

    /// Every round of every run, tab-separated, for a closer look.
    pub fn raw_tsv(&self) -> String {
        let mut s =
            String::from("script\tmode\tclients\ttarget\tround\ttps\tavg_ms\tp99_ms\ttransactions\tfailed_tx\tstatus\n");
        for (cell, targets) in &self.rows {
            for (kind, runs) in targets {
                let lead = format!(
                    "{}\t{}\t{}\t{}",
                    cell.script,
                    cell.mode,
                    cell.clients,
                    kind.name()
                );
                if let Some(why) = &runs.not_applicable {
                    let _ = writeln!(s, "{lead}\t\t\t\t\t\t\tn/a: {why}");
                    continue;
                }
                for (i, o) in runs.rounds.iter().enumerate() {
                    match o {
                        Some(Outcome::Ok(m)) => {
                            let _ = writeln!(
                                s,
                                "{lead}\t{}\t{:.1}\t{:.4}\t{:.4}\t{}\t{}\tok",
                                i + 1,
                                m.tps,
                                m.avg_ms,
                                m.p99_ms,
                                m.transactions,
                                m.failed
                            );
                        }
                        Some(Outcome::Failed(why)) => {
                            let _ = writeln!(s, "{lead}\t{}\t\t\t\t\t\tfailed: {why}", i + 1);
                        }
                        None => {}
                    }
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(tps: f64) -> Option<Outcome> {
        Some(Outcome::Ok(Measured {
            tps,
            avg_ms: 1.0,
            p99_ms: 2.0,
            transactions: 10,
            failed: 0,
        }))
    }

    #[test]
    fn ratios_are_paired_by_round() {
        let cell = Cell {
            script: "select-only".into(),
            mode: "simple".into(),
            clients: 10,
        };
        let direct = Runs {
            rounds: vec![m(100.0), m(200.0), m(100.0)],
            not_applicable: None,
        };
        let bouncer = Runs {
            rounds: vec![m(50.0), m(100.0), Some(Outcome::Failed("boom".into()))],
            not_applicable: None,
        };
        let pivot = Runs {
            rounds: vec![m(60.0), m(100.0), m(70.0)],
            not_applicable: None,
        };
        let pool = Runs {
            rounds: vec![None, None, None],
            not_applicable: Some("too many clients".into()),
        };
        let r = Results {
            rows: vec![(
                cell,
                vec![
                    (Kind::Direct, direct),
                    (Kind::PgBouncer, bouncer),
                    (Kind::Pgpool, pool),
                    (Kind::PivotTransaction, pivot),
                ],
            )],
        };
        let t = r.render(3);
        // PgBouncer: rounds 1 and 2 pair with direct (0.5, 0.5) and pgpivot-tx (0.833, 1.0).
        assert!(t.contains("| pgbouncer | 75 | 50–100 | 1.000 | 2.000 | 0.50 | 0.92 | 1 of 3 rounds failed: boom |"), "{t}");
        assert!(t.contains("| pgpool | n/a |"), "{t}");
        assert!(
            t.contains("| pgpivot-tx | 70 | 60–100 | 1.000 | 2.000 | 0.60 |  |"),
            "{t}"
        );
        assert!(r.raw_tsv().contains("failed: boom"));
    }
}
