//! Raw setting values and where each came from: defaults, the TOML file, the environment.
//!
//! Bitnami conventions hold here: an empty value means unset (the chart renders
//! `PGPOOL_CHILD_LIFE_TIME=""`), and `NAME_FILE` names a file holding the value (secrets).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::settings::{by_key, Setting, SETTINGS};
use super::ConfigError;

/// Where a value was read from; errors name it so the operator knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(String),
    Env(&'static str),
    EnvFile(&'static str, String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::File(key) => write!(f, "config file key `{key}`"),
            Origin::Env(name) => write!(f, "{name}"),
            Origin::EnvFile(name, path) => write!(f, "{name}_FILE ({path})"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RawValue {
    pub value: String,
    pub origin: Origin,
}

/// The merged raw values, keyed by setting key.
#[derive(Debug, Clone, Default)]
pub struct RawSettings {
    values: BTreeMap<&'static str, RawValue>,
}

impl RawSettings {
    /// Merges defaults, then the file, then the environment.
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
        Ok(raw)
    }

    fn set(&mut self, s: &'static Setting, value: String, origin: Origin) {
        if value.trim().is_empty() {
            // Empty means unset: fall back to the default, if any.
            match s.default {
                Some(d) => self.values.insert(
                    s.key,
                    RawValue {
                        value: d.into(),
                        origin: Origin::Default,
                    },
                ),
                None => self.values.remove(s.key),
            };
        } else {
            self.values.insert(s.key, RawValue { value, origin });
        }
    }

    fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let parsed = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        let map = parsed
            .try_deserialize::<HashMap<String, config::Value>>()
            .map_err(|e| ConfigError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        for (key, value) in map {
            let Some(s) = by_key(&key) else {
                return Err(ConfigError::UnknownKey {
                    path: path.display().to_string(),
                    key,
                });
            };
            let text = value_to_string(value).map_err(|reason| ConfigError::Invalid {
                origin: Origin::File(key.clone()),
                reason,
            })?;
            self.set(s, text, Origin::File(key));
        }
        Ok(())
    }

    fn merge_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        for s in SETTINGS {
            // Empty means unset (the chart renders `NAME=""`): the file's value, if any, stands.
            if let Some(v) = env.get(s.env).filter(|v| !v.trim().is_empty()) {
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
                self.set(s, value, Origin::EnvFile(s.env, path.clone()));
            }
        }
        for name in env.keys() {
            let base = name.strip_suffix("_FILE").unwrap_or(name);
            if name.starts_with("PGPIVOT_") && !SETTINGS.iter().any(|s| s.env == base) {
                return Err(ConfigError::UnknownVariable(name.clone()));
            }
            if name.starts_with("PGPOOL_") && !SETTINGS.iter().any(|s| s.env == base) {
                tracing::warn!(variable = %name, "unknown PGPOOL_ variable ignored");
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

/// TOML scalars become their text; arrays (e.g. a list of backend nodes) are joined with commas.
fn value_to_string(value: config::Value) -> Result<String, String> {
    match value.kind {
        config::ValueKind::Array(items) => {
            let parts: Result<Vec<_>, _> = items.into_iter().map(value_to_string).collect();
            Ok(parts?.join(","))
        }
        config::ValueKind::Table(_) => Err("a table is not allowed here".into()),
        config::ValueKind::Nil => Ok(String::new()),
        _ => value.into_string().map_err(|e| e.to_string()),
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
