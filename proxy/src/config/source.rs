//! Raw setting values and where each came from: defaults, the TOML file, the environment.
//!
//! Bitnami conventions hold here: an empty value means unset (the chart renders
//! `PGPOOL_CHILD_LIFE_TIME=""`), and `NAME_FILE` names a file holding the value (secrets).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::names::{classify, Name};
use super::notice::{Level, Notice};
use super::pgpool_conf::{self, Target};
use super::settings::{by_key, Setting, SETTINGS};
use super::{toml_file, ConfigError};

/// Where a value was read from; errors name it so the operator knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(String),
    Env(&'static str),
    EnvFile(&'static str, String),
    /// A key of the `PGPOOL_USER_CONF_FILE` file.
    UserConf {
        path: String,
        line: usize,
        key: String,
    },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::File(key) => write!(f, "config file key `{key}`"),
            Origin::Env(name) => write!(f, "{name}"),
            Origin::EnvFile(name, path) => write!(f, "{name}_FILE ({path})"),
            Origin::UserConf { path, line, key } => {
                write!(f, "PGPOOL_USER_CONF_FILE ({path}) line {line} `{key}`")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct RawValue {
    pub value: String,
    pub origin: Origin,
}

/// The merged raw values, keyed by setting key, and what loading them wants to say.
#[derive(Clone, Default)]
pub struct RawSettings {
    values: BTreeMap<&'static str, RawValue>,
    pub notices: Vec<Notice>,
}

/// Secrets masked: a `{:?}` of a configuration must not leak a password into a log.
impl std::fmt::Debug for RawSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.values {
            if by_key(k).is_some_and(|s| s.secret) {
                m.entry(k, &format_args!("******** ({})", v.origin));
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

impl RawSettings {
    /// Merges defaults, then the TOML file, then the environment, then `PGPOOL_USER_CONF_FILE`
    /// (the Bitnami image appends it to the pgpool.conf generated from the environment).
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut raw = RawSettings::default();
        for s in SETTINGS {
            if let Some(d) = s.default {
                raw.set(s, d.to_string(), Origin::Default);
            }
        }
        if let Some(path) = file {
            raw.merge_file(path)?;
        }
        raw.merge_env(env)?;
        raw.merge_user_conf()?;
        Ok(raw)
    }

    /// Empty means unset: the earlier value (file, default) stands. The chart renders unset
    /// variables as `NAME=""`, and an empty `NAME_FILE` is the same mistake.
    fn set(&mut self, s: &'static Setting, value: String, origin: Origin) {
        if !value.trim().is_empty() {
            self.values.insert(s.key, RawValue { value, origin });
        }
    }

    fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        for (key, value) in toml_file::read(path)? {
            let Some(s) = by_key(&key) else {
                return Err(ConfigError::UnknownKey {
                    path: path.display().to_string(),
                    key,
                });
            };
            self.set(s, value, Origin::File(key));
        }
        Ok(())
    }

    fn merge_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        for s in SETTINGS {
            if let Some(v) = env.get(s.env) {
                self.set(s, v.clone(), Origin::Env(s.env));
            }
            // Bitnami: NAME_FILE wins over NAME.
            let file_var = format!("{}_FILE", s.env);
            if let Some(path) = env.get(&file_var).filter(|p| !p.trim().is_empty()) {
                let content = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
                    origin: Origin::EnvFile(s.env, path.clone()),
                    reason: format!("cannot read the file: {e}"),
                })?;
                let value = content.trim_end_matches(['\n', '\r']).to_string();
                if value.trim().is_empty() {
                    self.notices.push(Notice::new(
                        Level::Warn,
                        format!("{file_var} ({path}) is empty: treated as unset"),
                    ));
                }
                self.set(s, value, Origin::EnvFile(s.env, path.clone()));
            }
        }
        // Generic, so it yields to PGPIVOT_LOG and to the file's `log`.
        if let Some(v) = env.get("RUST_LOG") {
            if self.get("log").is_none_or(|l| l.origin == Origin::Default) {
                if let Some(s) = by_key("log") {
                    self.set(s, v.clone(), Origin::Env("RUST_LOG"));
                }
            }
        }
        let mut names: Vec<_> = env.iter().collect();
        names.sort();
        for (name, value) in names {
            if !(name.starts_with("PGPIVOT_") || name.starts_with("PGPOOL_")) {
                continue;
            }
            match classify(name, value) {
                Name::Known | Name::FileOf(_) => {}
                Name::ServiceLink => self.notices.push(Notice::new(
                    Level::Debug,
                    format!("{name} ignored (a Kubernetes service link)"),
                )),
                Name::Unknown if name.starts_with("PGPIVOT_") => {
                    return Err(ConfigError::UnknownVariable(name.clone()))
                }
                Name::Unknown => self.notices.push(Notice::new(
                    Level::Warn,
                    format!("unknown PGPOOL_ variable {name} ignored"),
                )),
            }
        }
        Ok(())
    }

    /// Applies the keys of `PGPOOL_USER_CONF_FILE` that mean something here; one warning per
    /// other key (by name only: their values may be secrets).
    fn merge_user_conf(&mut self) -> Result<(), ConfigError> {
        let Some(path) = self.get("user_conf_file").map(|v| v.value.clone()) else {
            return Ok(());
        };
        let name = format!("PGPOOL_USER_CONF_FILE ({path})");
        for entry in pgpool_conf::read(Path::new(&path), &name)? {
            match pgpool_conf::target(&entry.key) {
                Target::Setting(s) => {
                    let origin = Origin::UserConf {
                        path: path.clone(),
                        line: entry.line,
                        key: entry.key,
                    };
                    self.set(s, entry.value, origin);
                }
                Target::Ignored(hint) => self.notices.push(Notice::new(
                    Level::Warn,
                    format!(
                        "{name} line {}: `{}` has no effect in pgpivot{}",
                        entry.line,
                        entry.key,
                        hint.map(|h| format!(" ({h})")).unwrap_or_default()
                    ),
                )),
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.values.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &RawValue)> {
        self.values.iter().map(|(k, v)| (*k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_file_and_an_empty_variable_leaves_the_file_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "port = 6000\nbackend_nodes = [\"0:a:1\", \"1:b:2\"]\nsr_check_user = \"fileuser\"\n",
        )
        .unwrap();
        let raw = RawSettings::load(
            Some(&path),
            &env(&[("PGPOOL_PORT_NUMBER", "7000"), ("PGPOOL_SR_CHECK_USER", "")]),
        )
        .unwrap();
        assert_eq!(raw.get("port").unwrap().value, "7000");
        assert_eq!(raw.get("backend_nodes").unwrap().value, "0:a:1,1:b:2");
        // The chart renders unset variables as `NAME=""`; that must not erase the file's value.
        assert_eq!(raw.get("sr_check_user").unwrap().value, "fileuser");
        let raw = RawSettings::load(None, &env(&[("PGPOOL_SR_CHECK_USER", " ")])).unwrap();
        assert!(raw.get("sr_check_user").is_none());
    }

    #[test]
    fn file_variants_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("pw");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let raw = RawSettings::load(
            None,
            &env(&[
                ("PGPOOL_POSTGRES_PASSWORD", "ignored"),
                ("PGPOOL_POSTGRES_PASSWORD_FILE", secret.to_str().unwrap()),
            ]),
        )
        .unwrap();
        assert_eq!(raw.get("postgres_password").unwrap().value, "s3cret");
        let err = RawSettings::load(
            None,
            &env(&[("PGPOOL_SR_CHECK_PASSWORD_FILE", "/nonexistent/pw")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("PGPOOL_SR_CHECK_PASSWORD_FILE"));
    }

    #[test]
    fn unknown_names_fail_fast() {
        let err = RawSettings::load(None, &env(&[("PGPIVOT_LISTEN_ADRR", "x")])).unwrap_err();
        assert!(err.to_string().contains("PGPIVOT_LISTEN_ADRR"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "bogus = 1\n").unwrap();
        let err = RawSettings::load(Some(&path), &HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("bogus"));
    }
}
