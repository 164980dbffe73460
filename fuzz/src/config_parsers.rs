//! `config_parsers`: the `PGPOOL_BACKEND_NODES` parser and the `PGPOOL_USER_CONF_FILE`
//! (pgpool.conf) parser on arbitrary text. The input is split at the first NUL: nodes, then
//! the conf file (both whole inputs are also tried as the other).
//!
//! Invariants: an accepted node list is non-empty, sorted, with unique ids up to 127, real
//! ports, finite non-negative weights and at most one ALWAYS_PRIMARY, and printed back in the
//! documented form it parses to the same nodes. An accepted conf file has unique lowercase keys
//! in line order and printed back (values quoted and escaped) parses to the same entries; a
//! syntax error names a line that exists and never quotes the value.

use pgpivot::config::{parse_backend_nodes, split_list, BackendNode, NodeFlag};
use pgpivot::fuzz_hooks::{parse_user_conf, UserConfEntry};

use super::common::Input;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let nodes = String::from_utf8_lossy(input.until(0)).into_owned();
    let conf = String::from_utf8_lossy(input.rest()).into_owned();
    backend_nodes(&nodes);
    backend_nodes(&conf);
    user_conf(&conf);
    user_conf(&nodes);
}

fn backend_nodes(text: &str) {
    for item in split_list(text) {
        assert!(!item.is_empty() && item.trim() == item);
        assert!(!item.contains([',', ';', ' ', '\t', '\n']));
    }
    let Ok(nodes) = parse_backend_nodes(text) else {
        return;
    };
    assert!(!nodes.is_empty());
    assert!(
        nodes.windows(2).all(|w| w[0].id < w[1].id),
        "sorted, unique"
    );
    for n in &nodes {
        assert!(n.id <= 127 && n.port > 0 && !n.host.is_empty());
        assert!(n.weight.is_finite() && n.weight >= 0.0);
        assert!(n.data_dir.as_ref().is_none_or(|d| !d.is_empty()));
    }
    let primaries = nodes.iter().filter(|n| n.flag == NodeFlag::AlwaysPrimary);
    assert!(primaries.count() <= 1);
    let printed: Vec<String> = nodes.iter().map(print_node).collect();
    let printed = printed.join(",");
    assert_eq!(
        parse_backend_nodes(&printed).as_ref(),
        Ok(&nodes),
        "{text:?} printed as {printed:?}"
    );
}

fn print_node(n: &BackendNode) -> String {
    let host = if n.host.contains(':') || n.host.starts_with('[') {
        format!("[{}]", n.host)
    } else {
        n.host.clone()
    };
    let dir = n.data_dir.as_deref().unwrap_or("");
    format!(
        "{}:{host}:{}:{}:{dir}:{}",
        n.id,
        n.port,
        n.weight,
        n.flag.as_str()
    )
}

fn user_conf(text: &str) {
    let lines = text.lines().count();
    let entries = match parse_user_conf(text) {
        Ok(entries) => entries,
        Err((line, reason)) => {
            assert!((1..=lines).contains(&line), "line {line} of {lines}");
            assert!(
                is_plain_reason(&reason),
                "reason quotes the text: {reason:?}"
            );
            return;
        }
    };
    for (i, e) in entries.iter().enumerate() {
        assert!((1..=lines).contains(&e.line));
        assert!(!e.key.is_empty() && e.key == e.key.to_ascii_lowercase());
        assert!(entries[..i]
            .iter()
            .all(|p| p.key != e.key && p.line < e.line));
    }
    let printed: String = entries
        .iter()
        .map(|e| format!("{} = '{}'\n", e.key, quote(&e.value)))
        .collect();
    let again = parse_user_conf(&printed).unwrap_or_else(|e| panic!("{printed:?}: {e:?}"));
    let pairs = |v: &[UserConfEntry]| -> Vec<(String, String)> {
        v.iter().map(|e| (e.key.clone(), e.value.clone())).collect()
    };
    assert_eq!(
        pairs(&again),
        pairs(&entries),
        "{text:?} printed as {printed:?}"
    );
}

/// The parser's error texts: a fixed sentence, at most naming the key (never the value).
fn is_plain_reason(reason: &str) -> bool {
    if reason == "expected a parameter name" {
        return true;
    }
    let Some((key, what)) = reason.strip_prefix('`').and_then(|r| r.split_once("`: ")) else {
        return false;
    };
    let key_ok = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    let fixed = [
        "unterminated quoted value",
        "missing value",
        "unexpected text after the value",
    ];
    key_ok && fixed.contains(&what)
}

/// A value as a single-quoted pgpool.conf string: quotes doubled, backslashes and control
/// characters escaped (three octal digits, so a following digit is not taken in).
fn quote(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() && (c as u32) < 0o777 => {
                out.push_str(&format!("\\{:03o}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}
