//! A tiny `--flag value` parser shared by the benchmark programs (no dependency for four bins).

use anyhow::{bail, Context};

pub struct Args {
    it: std::iter::Peekable<std::vec::IntoIter<String>>,
}

impl Args {
    pub fn from_env() -> Args {
        Args {
            it: std::env::args()
                .skip(1)
                .collect::<Vec<_>>()
                .into_iter()
                .peekable(),
        }
    }

    /// The next flag (`--name`, or `--name=value`, whose value is then returned by `value`).
    pub fn next_flag(&mut self) -> Option<String> {
        let a = self.it.next()?;
        if let Some((k, v)) = a.split_once('=') {
            if k.starts_with("--") {
                // Put the value back in front.
                let rest: Vec<String> = std::iter::once(v.to_string())
                    .chain(self.it.by_ref())
                    .collect();
                self.it = rest.into_iter().peekable();
                return Some(k.to_string());
            }
        }
        Some(a)
    }

    pub fn value(&mut self, flag: &str) -> anyhow::Result<String> {
        self.it
            .next()
            .with_context(|| format!("{flag} needs a value"))
    }

    pub fn parse<T: std::str::FromStr>(&mut self, flag: &str) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let v = self.value(flag)?;
        v.parse().map_err(|e| anyhow::anyhow!("{flag} {v}: {e}"))
    }

    /// A comma-separated list of numbers.
    pub fn list<T: std::str::FromStr>(&mut self, flag: &str) -> anyhow::Result<Vec<T>>
    where
        T::Err: std::fmt::Display,
    {
        let v = self.value(flag)?;
        let mut out = Vec::new();
        for p in v.split(',').filter(|p| !p.is_empty()) {
            out.push(
                p.trim()
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{flag} {p}: {e}"))?,
            );
        }
        if out.is_empty() {
            bail!("{flag} needs at least one value");
        }
        Ok(out)
    }

    /// A comma-separated list of words, each one of `allowed`.
    pub fn words(&mut self, flag: &str, allowed: &[&str]) -> anyhow::Result<Vec<String>> {
        let v = self.value(flag)?;
        let mut out = Vec::new();
        for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if !allowed.contains(&p) {
                bail!("{flag}: unknown {p} (one of {})", allowed.join(", "));
            }
            if !out.iter().any(|o: &String| o == p) {
                out.push(p.to_string());
            }
        }
        if out.is_empty() {
            bail!("{flag} needs at least one value");
        }
        Ok(out)
    }
}
