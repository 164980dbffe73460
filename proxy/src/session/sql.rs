//! A light look at client SQL for the few statements pooling must know about: those that bind
//! state to one server connection (the client is then pinned to it rather than silently broken)
//! and the ones that reset prepared statements. Not a parser: first keywords of each statement,
//! quotes and comments skipped.

use super::sql_stream::EffectScanner;

/// Parameters the server reports through ParameterStatus: pgpivot tracks and replays them, so a
/// `SET` of these does not pin.
const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "intervalstyle",
    "timezone",
    "standard_conforming_strings",
    "default_transaction_read_only",
    "time",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// State that lives on this server connection from now on.
    Pin(&'static str),
    DeallocateAll,
    Deallocate(String),
    DiscardAll,
    /// RESET (of one parameter or all) or `SET … TO DEFAULT`: parameters go back to the values
    /// the server connection started with, which in transaction mode are not the client's.
    ResetParams,
}

/// Effects of every statement in `sql` (a Query or a Parse text).
pub fn effects(sql: &[u8]) -> Vec<Effect> {
    if plainly_without_effects(sql) {
        return Vec::new();
    }
    let mut scanner = EffectScanner::new();
    scanner.feed(sql);
    scanner.finish()
}

/// The effect of one statement, from its start (`head`: lowercase, comments and quotes blanked,
/// white space collapsed) and whether `with hold` / ` into temp` occur in it.
pub(super) fn statement_effect(head: &str, with_hold: bool, into_temp: bool) -> Option<Effect> {
    let words: Vec<&str> = head.split_whitespace().take(6).collect();
    let w = |i: usize| words.get(i).copied().unwrap_or("");
    match w(0) {
        "prepare" => Some(Effect::Pin("SQL PREPARE")),
        "listen" => Some(Effect::Pin("LISTEN")),
        "load" => Some(Effect::Pin("LOAD")),
        "declare" if with_hold => Some(Effect::Pin("cursor WITH HOLD")),
        "create" if words.len() > 1 && is_temp(&words[1..]) => Some(Effect::Pin("temporary table")),
        "select" if into_temp => Some(Effect::Pin("temporary table")),
        "set" => set_effect(&words[1..]),
        "deallocate" => {
            let name = if w(1) == "prepare" { w(2) } else { w(1) };
            match name {
                "" => None,
                "all" => Some(Effect::DeallocateAll),
                n => Some(Effect::Deallocate(n.trim_matches('"').to_string())),
            }
        }
        "discard" if w(1) == "all" => Some(Effect::DiscardAll),
        "reset" => Some(Effect::ResetParams),
        _ => None,
    }
}

/// The common case, decided without allocating (this runs for every Query and Parse): one
/// statement whose first keyword can neither bind session state nor reset statements, and no
/// advisory-lock call or `INTO` anywhere in it.
fn plainly_without_effects(sql: &[u8]) -> bool {
    let end = sql
        .iter()
        .rposition(|c| !c.is_ascii_whitespace() && *c != b';' && *c != 0)
        .map_or(0, |i| i + 1);
    let body = &sql[..end];
    if body.contains(&b';') || contains_ci(body, b"advisory") {
        return false;
    }
    let start = body
        .iter()
        .position(|c| !c.is_ascii_whitespace() && *c != b'(')
        .unwrap_or(body.len());
    let rest = &body[start..];
    let word_end = rest
        .iter()
        .position(|c| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    let word = &rest[..word_end];
    const PLAIN: &[&[u8]] = &[
        b"select",
        b"insert",
        b"update",
        b"delete",
        b"with",
        b"values",
        b"begin",
        b"start",
        b"commit",
        b"end",
        b"rollback",
        b"abort",
        b"savepoint",
        b"release",
        b"show",
        b"explain",
        b"table",
        b"fetch",
        b"move",
        b"close",
        b"truncate",
        b"lock",
        b"merge",
        b"copy",
    ];
    if !PLAIN.iter().any(|p| word.eq_ignore_ascii_case(p)) {
        return false;
    }
    // `SELECT … INTO TEMP` creates a temporary table.
    let selects = [&b"select"[..], b"with", b"values", b"table"]
        .iter()
        .any(|p| word.eq_ignore_ascii_case(p));
    !(selects && contains_ci(body, b"into"))
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn is_temp(words: &[&str]) -> bool {
    let w: Vec<&str> = words
        .iter()
        .copied()
        .filter(|w| *w != "global" && *w != "local" && *w != "or" && *w != "replace")
        .collect();
    matches!(w.first(), Some(&"temp") | Some(&"temporary"))
}

fn set_effect(words: &[&str]) -> Option<Effect> {
    let mut i = 0;
    match words.first().copied() {
        Some("local") | Some("transaction") | None => return None,
        Some("session") => {
            i = 1;
            match words.get(1).copied() {
                Some("authorization") => return Some(Effect::Pin("SET SESSION AUTHORIZATION")),
                Some("characteristics") => return Some(Effect::Pin("SET SESSION CHARACTERISTICS")),
                _ => {}
            }
        }
        _ => {}
    }
    let name = words.get(i).copied().unwrap_or("");
    let name = name
        .split(['=', ' '])
        .next()
        .unwrap_or("")
        .trim_matches('"');
    if name == "role" {
        return Some(Effect::Pin("SET ROLE"));
    }
    // `SET name TO DEFAULT` / `SET name = DEFAULT`: a reset, not new state.
    let value = words[i..].join(" ");
    let value = value[value.find(name).map_or(0, |p| p + name.len())..]
        .trim_start_matches('"')
        .trim_start();
    let value = value
        .strip_prefix("to ")
        .or_else(|| value.strip_prefix('='))
        .unwrap_or(value)
        .trim();
    if value == "default" {
        return Some(Effect::ResetParams);
    }
    if REPORTED.contains(&name) {
        None
    } else {
        Some(Effect::Pin("SET of a parameter the server does not report"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str) -> Vec<Effect> {
        effects(s.as_bytes())
    }

    #[test]
    fn plain_statements_are_recognised_without_allocating() {
        assert!(plainly_without_effects(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = $1"
        ));
        assert!(plainly_without_effects(b"insert into t values (1);"));
        assert!(plainly_without_effects(b"  BEGIN"));
        assert!(!plainly_without_effects(b"select 1; listen x"));
        assert!(!plainly_without_effects(b"SELECT pg_advisory_lock(1)"));
        assert!(!plainly_without_effects(b"select * into temp t from x"));
        assert!(!plainly_without_effects(b"LISTEN x"));
        assert!(!plainly_without_effects(b"set search_path to x"));
        assert!(!plainly_without_effects(b"DEALLOCATE ALL"));
        assert!(!plainly_without_effects(b"prepare p as select 1"));
        assert!(!plainly_without_effects(b""));
    }

    #[test]
    fn pins() {
        assert_eq!(e("PREPARE p AS SELECT 1"), vec![Effect::Pin("SQL PREPARE")]);
        assert_eq!(e("  listen chan"), vec![Effect::Pin("LISTEN")]);
        assert_eq!(
            e("declare c cursor with hold for select 1"),
            vec![Effect::Pin("cursor WITH HOLD")]
        );
        assert_eq!(
            e("CREATE TEMP TABLE t(a int)"),
            vec![Effect::Pin("temporary table")]
        );
        assert_eq!(
            e("create local temporary table t(a int)"),
            vec![Effect::Pin("temporary table")]
        );
        assert_eq!(
            e("SELECT pg_advisory_lock(1)"),
            vec![Effect::Pin("session advisory lock")]
        );
        assert_eq!(
            e("SET search_path = x"),
            vec![Effect::Pin("SET of a parameter the server does not report")]
        );
        assert_eq!(e("SET ROLE bob"), vec![Effect::Pin("SET ROLE")]);
    }

    #[test]
    fn not_pins() {
        assert!(e("SELECT pg_advisory_xact_lock(1)").is_empty());
        assert!(e("SET LOCAL statement_timeout = 5").is_empty());
        assert!(e("SET application_name = 'x'").is_empty());
        assert!(e("set TimeZone to 'UTC'").is_empty());
        assert!(e("SET TIME ZONE 'UTC'").is_empty());
        assert!(e("select 'prepare listen; create temp table'").is_empty());
        assert!(e("select 1 -- ; listen x").is_empty());
        assert!(e("select $$; prepare x as select 1$$").is_empty());
        assert!(e("CREATE TABLE t(a int)").is_empty());
        assert!(e("select é from t").is_empty());
    }

    #[test]
    fn resets() {
        assert_eq!(e("DEALLOCATE ALL"), vec![Effect::DeallocateAll]);
        assert_eq!(
            e("deallocate prepare s1"),
            vec![Effect::Deallocate("s1".into())]
        );
        assert_eq!(e("DISCARD ALL"), vec![Effect::DiscardAll]);
        for reset in [
            "RESET ALL",
            "reset statement_timeout",
            "SET statement_timeout TO DEFAULT",
            "set session \"statement_timeout\" = default",
            "SET application_name=DEFAULT",
        ] {
            assert_eq!(e(reset), vec![Effect::ResetParams], "{reset}");
        }
        assert_eq!(
            e("SET statement_timeout TO defaults"),
            vec![Effect::Pin("SET of a parameter the server does not report")]
        );
        assert_eq!(e("begin; listen a; commit"), vec![Effect::Pin("LISTEN")]);
    }
}
