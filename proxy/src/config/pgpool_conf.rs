//! `PGPOOL_USER_CONF_FILE`: a pgpool.conf fragment, as the Bitnami image appends it to the
//! pgpool.conf it generates from the environment — so its keys override the `PGPOOL_*`
//! variables. Keys with a counterpart here set that setting; the others are reported, one line
//! per key, never with their value (`wd_authkey`, `pool_passwd`, … are secrets).
//!
//! Syntax (PostgreSQL's GUC file syntax, which Pgpool-II uses): `key = value` (the `=` may be
//! left out), values bare (`10`, `on`, `/path`) or in single quotes with `''` or `\'` for a
//! quote and `\n`-style escapes, `#` comments, blank lines; a key given twice keeps the last.

use std::path::Path;

use super::settings::{by_key, Setting};
use super::ConfigError;

/// One `key = value` line; the key lowercased (Pgpool's names are case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    pub key: String,
    pub value: String,
}

/// What a pgpool.conf key means here.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Setting(&'static Setting),
    /// No counterpart; the hint says what to use instead, if anything.
    Ignored(Option<&'static str>),
}

/// pgpool.conf key → setting key. Units match: Pgpool's seconds and milliseconds are what the
/// corresponding `PGPOOL_*` variable carries.
const KEYS: &[(&str, &str)] = &[
    ("port", "port"),
    ("num_init_children", "num_init_children"),
    ("max_pool", "max_pool"),
    ("reserved_connections", "reserved_connections"),
    ("client_idle_limit", "client_idle_limit"),
    ("connection_life_time", "connection_life_time"),
    ("child_life_time", "child_life_time"),
    ("child_max_connections", "child_max_connections"),
    ("connection_cache", "enable_connection_cache"),
    ("connect_timeout", "connect_timeout"),
    ("sr_check_user", "sr_check_user"),
    ("sr_check_password", "sr_check_password"),
    ("sr_check_database", "sr_check_database"),
    ("sr_check_period", "sr_check_period"),
    ("health_check_user", "health_check_user"),
    ("health_check_password", "health_check_password"),
    ("health_check_period", "health_check_period"),
    ("health_check_timeout", "health_check_timeout"),
    ("health_check_max_retries", "health_check_max_retries"),
    ("health_check_retry_delay", "health_check_retry_delay"),
    ("load_balance_mode", "enable_load_balancing"),
    (
        "statement_level_load_balance",
        "enable_statement_load_balancing",
    ),
    (
        "disable_load_balance_on_write",
        "disable_load_balance_on_write",
    ),
    ("ssl", "enable_tls"),
    ("ssl_cert", "tls_cert_file"),
    ("ssl_key", "tls_key_file"),
    ("ssl_ca_cert", "tls_ca_file"),
    ("ssl_prefer_server_ciphers", "tls_prefer_server_ciphers"),
    ("enable_pool_hba", "enable_pool_hba"),
    ("pool_passwd", "passwd_file"),
    ("log_connections", "enable_log_connections"),
    ("log_hostname", "enable_log_hostname"),
    ("log_per_node_statement", "enable_log_per_node_statement"),
    ("log_pcp_processes", "enable_log_pcp_processes"),
    ("log_line_prefix", "log_line_prefix"),
    ("client_min_messages", "client_min_messages"),
    ("auto_failback", "auto_failback"),
    (
        "failover_on_backend_shutdown",
        "failover_on_backend_shutdown",
    ),
    ("failover_on_backend_error", "failover_on_backend_error"),
];

/// Keys an operator is likely to carry over, with where their meaning went.
const HINTS: &[(&str, &str)] = &[
    ("listen_addresses", "set PGPIVOT_LISTEN_ADDR"),
    ("socket_dir", "set PGPIVOT_SOCKET_DIR"),
    ("unix_socket_directories", "set PGPIVOT_SOCKET_DIR"),
    (
        "authentication_timeout",
        "set PGPIVOT_AUTHENTICATION_TIMEOUT_MS",
    ),
    ("log_min_messages", "set PGPIVOT_LOG"),
    ("backend_", "backends come from PGPOOL_BACKEND_NODES"),
    ("use_watchdog", "pgpivot instances agree without a watchdog"),
    ("wd_", "pgpivot instances agree without a watchdog"),
    (
        "failover_command",
        "pgpivot follows the primary repmgr promotes",
    ),
    (
        "follow_primary_command",
        "pgpivot follows the primary repmgr promotes",
    ),
    (
        "search_primary_node_timeout",
        "set PGPIVOT_PRIMARY_WAIT_TIMEOUT_MS",
    ),
];

pub fn target(key: &str) -> Target {
    if let Some((_, setting)) = KEYS.iter().find(|(k, _)| *k == key) {
        if let Some(s) = by_key(setting) {
            return Target::Setting(s);
        }
    }
    let hint = HINTS
        .iter()
        .find(|(k, _)| key == *k || (k.ends_with('_') && key.starts_with(k)))
        .map(|(_, h)| *h);
    Target::Ignored(hint)
}

/// Reads and parses the file; `name` is how errors refer to it (`PGPOOL_USER_CONF_FILE (path)`).
pub fn read(path: &Path, name: &str) -> Result<Vec<Entry>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::UserConf {
        file: name.to_string(),
        line: None,
        reason: format!("cannot read the file: {e}"),
    })?;
    parse(&text).map_err(|(line, reason)| ConfigError::UserConf {
        file: name.to_string(),
        line: Some(line),
        reason,
    })
}

/// Parses the whole text; a syntax error is `(line, what is wrong)`, never quoting the line.
pub fn parse(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let mut out: Vec<Entry> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let Some((key, value)) = parse_line(line).map_err(|e| (n, e))? else {
            continue;
        };
        out.retain(|e| e.key != key);
        out.push(Entry {
            line: n,
            key,
            value,
        });
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<Option<(String, String)>, String> {
    let rest = line.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    let key_len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(rest.len());
    let key = &rest[..key_len];
    if key.is_empty() || key.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return Err("expected a parameter name".into());
    }
    let mut rest = rest[key_len..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    let (value, after) = if let Some(quoted) = rest.strip_prefix('\'') {
        unquote(quoted).ok_or(format!("`{key}`: unterminated quoted value"))?
    } else {
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '#' || c == '\'' || c == '=')
            .unwrap_or(rest.len());
        if end == 0 {
            return Err(format!("`{key}`: missing value"));
        }
        (rest[..end].to_string(), &rest[end..])
    };
    let after = after.trim_start();
    if !(after.is_empty() || after.starts_with('#')) {
        return Err(format!("`{key}`: unexpected text after the value"));
    }
    Ok(Some((key.to_ascii_lowercase(), value)))
}

/// The body of a single-quoted value up to its closing quote, unescaped, and what follows it.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' => {
                if let Some((_, '\'')) = chars.peek() {
                    chars.next();
                    out.push('\'');
                } else {
                    return Some((out, &s[i + 1..]));
                }
            }
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    '0'..='7' => {
                        let mut code = e.to_digit(8)?;
                        for _ in 0..2 {
                            match chars.peek().and_then(|(_, d)| d.to_digit(8)) {
                                Some(d) => {
                                    code = code * 8 + d;
                                    chars.next();
                                }
                                None => break,
                            }
                        }
                        out.push(char::from_u32(code)?);
                    }
                    other => out.push(other),
                }
            }
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> (String, String) {
        let e = parse(line).unwrap();
        assert_eq!(e.len(), 1, "{line}");
        (e[0].key.clone(), e[0].value.clone())
    }

    #[test]
    fn values_bare_and_quoted() {
        assert_eq!(one("port = 5433"), ("port".into(), "5433".into()));
        assert_eq!(one("  Port=5433 # comment"), ("port".into(), "5433".into()));
        assert_eq!(
            one("load_balance_mode off"),
            ("load_balance_mode".into(), "off".into())
        );
        assert_eq!(
            one("ssl_cert = /etc/x.pem"),
            ("ssl_cert".into(), "/etc/x.pem".into())
        );
        assert_eq!(
            one("connect_timeout = -1"),
            ("connect_timeout".into(), "-1".into())
        );
        assert_eq!(
            one("sr_check_password = 'it''s # not a comment'  # but this is"),
            ("sr_check_password".into(), "it's # not a comment".into())
        );
        assert_eq!(
            one(r"x = 'a\'b\\c\td\101'"),
            ("x".into(), "a'b\\c\tdA".into())
        );
        assert_eq!(one("x = ''"), ("x".into(), String::new()));
    }

    #[test]
    fn comments_blank_lines_and_the_last_duplicate_wins() {
        let e = parse("# header\n\n  \nport = 1\nnum_init_children = 4\nPORT = '2'\n").unwrap();
        assert_eq!(
            e,
            vec![
                Entry {
                    line: 5,
                    key: "num_init_children".into(),
                    value: "4".into()
                },
                Entry {
                    line: 6,
                    key: "port".into(),
                    value: "2".into()
                },
            ]
        );
    }

    #[test]
    fn syntax_errors_name_the_line_without_its_text() {
        for (text, line) in [
            ("port = 1\nsr_check_password = 'S3cr3tConf\n", 2),
            ("sr_check_password = S3cr3tConf junk\n", 1),
            ("sr_check_password = 'S3cr3tConf' junk\n", 1),
            ("port =\n", 1),
            ("= S3cr3tConf\n", 1),
            ("9port = 1\n", 1),
            ("x = 'S3cr3tConf\\", 1),
        ] {
            let (n, reason) = parse(text).unwrap_err();
            assert_eq!(n, line, "{text:?}: {reason}");
            assert!(!reason.contains("S3cr3tConf"), "{reason}");
        }
    }

    #[test]
    fn keys_map_to_settings_or_say_what_instead() {
        let Target::Setting(s) = target("num_init_children") else {
            panic!()
        };
        assert_eq!(s.env, "PGPOOL_NUM_INIT_CHILDREN");
        let Target::Setting(s) = target("load_balance_mode") else {
            panic!()
        };
        assert_eq!(s.env, "PGPOOL_ENABLE_LOAD_BALANCING");
        for (key, _) in KEYS {
            assert!(
                matches!(target(key), Target::Setting(_)),
                "{key} maps nowhere"
            );
        }
        assert!(matches!(
            target("backend_hostname0"),
            Target::Ignored(Some("backends come from PGPOOL_BACKEND_NODES"))
        ));
        assert!(matches!(
            target("memory_cache_enabled"),
            Target::Ignored(None)
        ));
    }
}
