//! The optional TOML file (`--config`, `PGPIVOT_CONFIG`): flat `key = value`, keys are the
//! settings' names.
//!
//! A syntax error is reported by line and column only: the offending line may be
//! `postgres_password = "…` with an unclosed quote, and must not reach a log.

use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::source::Origin;
use super::ConfigError;

/// The file's `(key, value as text)` pairs, keys lowercased, in file order.
pub fn read(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let table = DeTable::parse(&text).map_err(|e| ConfigError::File {
        path: shown.clone(),
        reason: syntax_error(&text, &e),
    })?;
    let mut out = Vec::new();
    for (key, value) in table.into_inner() {
        let key = key.into_inner().to_ascii_lowercase();
        let value = to_text(value.into_inner()).map_err(|reason| ConfigError::Invalid {
            origin: Origin::File(key.clone()),
            reason,
        })?;
        out.push((key, value));
    }
    Ok(out)
}

/// `TOML syntax error at line L, column C: <what>` — the parser's description, not the text.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return format!("TOML syntax error: {}", e.message());
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit_once('\n')
        .map_or(before, |(_, last)| last)
        .chars()
        .count()
        + 1;
    format!(
        "TOML syntax error at line {line}, column {column}: {}",
        e.message()
    )
}

/// TOML scalars become their text; arrays (e.g. a list of backend nodes) are joined with commas.
fn to_text(value: DeValue<'_>) -> Result<String, String> {
    Ok(match value {
        DeValue::String(s) => s.into_owned(),
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
            .map_err(|_| "integer out of range".to_string())?
            .to_string(),
        DeValue::Float(f) => f.as_str().to_string(),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(d) => d.to_string(),
        DeValue::Array(items) => {
            let parts: Result<Vec<_>, _> =
                items.into_iter().map(|v| to_text(v.into_inner())).collect();
            parts?.join(",")
        }
        DeValue::Table(_) => return Err("a table is not allowed here".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_str(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).unwrap();
        read(&path)
    }

    #[test]
    fn scalars_arrays_and_keys() {
        let got = read_str(
            "Port = 6000\nbackend_nodes = [\"0:a:1\", \"1:b:2\"]\nsocket_trust = false\nx = 0x10\n",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("port".to_string(), "6000".to_string()),
                ("backend_nodes".into(), "0:a:1,1:b:2".into()),
                ("socket_trust".into(), "false".into()),
                ("x".into(), "16".into()),
            ]
        );
        let err = read_str("t = { a = 1 }\n").unwrap_err().to_string();
        assert!(err.contains("`t`") && err.contains("table"), "{err}");
    }

    #[test]
    fn syntax_errors_give_the_place_not_the_text() {
        for (text, line) in [
            ("port = 1\npostgres_password = \"S3cr3tToml\n", 2),
            ("postgres_password = S3cr3tToml\n", 1),
            ("postgres_password = 'S3cr3tToml' junk\n", 1),
            ("port = 1\nport = 2 # S3cr3tToml\n", 2),
        ] {
            let err = read_str(text).unwrap_err().to_string();
            assert!(!err.contains("S3cr3tToml"), "{err}");
            assert!(err.contains(&format!("line {line}, column")), "{err}");
            assert!(err.contains("p.toml"), "{err}");
        }
    }
}
