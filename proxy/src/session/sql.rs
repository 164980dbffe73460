//! A light look at client SQL for the few statements pooling must know about: those that bind
//! state to one server connection (the client is then pinned to it rather than silently broken)
//! and the ones that drop prepared statements ([`resets`]). Not a parser: first keywords of each
//! statement, quotes and comments skipped.

use std::ops::Range;

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
    /// `CREATE`, `ALTER` or `DROP` of something lasting: plans of other statements may no longer
    /// fit (see `prepared::plans_invalidated`).
    SchemaChange,
}

/// A statement that drops protocol-level prepared statements as well as SQL-level ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reset {
    /// `DEALLOCATE [PREPARE] ALL` or `DISCARD ALL`.
    All,
    /// `DEALLOCATE [PREPARE] name`.
    Statement {
        /// The name as the server resolves it: quoted as written, unquoted folded to lower case.
        name: Vec<u8>,
        /// The whole statement in the text, `DEALLOCATE` through the name.
        span: Range<usize>,
    },
}

/// Every statement of `sql` (a Query or a Parse text) that drops prepared statements, in order.
/// Only well-formed ones: anything after the name makes it a syntax error the server reports.
pub fn resets(sql: &[u8]) -> Vec<Reset> {
    if plainly_without_effects(sql) {
        return Vec::new();
    }
    statement_spans(sql)
        .into_iter()
        .filter_map(|span| reset_in(sql, span))
        .collect()
}

fn reset_in(sql: &[u8], span: Range<usize>) -> Option<Reset> {
    let end = span.end;
    let (first, at) = token(sql, span.start, end)?;
    let is =
        |t: &Token, kw: &str| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case(kw.as_bytes()));
    let alone = |after: usize| token(sql, after, end).is_none();
    if is(&first, "discard") {
        let (second, r) = token(sql, at.end, end)?;
        return (is(&second, "all") && alone(r.end)).then_some(Reset::All);
    }
    if !is(&first, "deallocate") {
        return None;
    }
    let (mut name, mut r) = token(sql, at.end, end)?;
    if is(&name, "prepare") {
        if let Some(next) = token(sql, r.end, end) {
            (name, r) = next;
        }
    }
    if !alone(r.end) {
        return None;
    }
    if is(&name, "all") {
        return Some(Reset::All);
    }
    let name = match name {
        Token::Word(w) => w.to_ascii_lowercase(),
        Token::Quoted(q) if !q.is_empty() => q,
        _ => return None,
    };
    Some(Reset::Statement {
        name,
        span: at.start..r.end,
    })
}

enum Token<'a> {
    /// An unquoted identifier or keyword.
    Word(&'a [u8]),
    /// A quoted identifier, `""` unescaped.
    Quoted(Vec<u8>),
    /// Anything else (one byte, or a whole quoted string).
    Other,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The next token in `sql[i..end]` after white space and comments, and where it lies.
fn token(sql: &[u8], mut i: usize, end: usize) -> Option<(Token<'_>, Range<usize>)> {
    loop {
        while i < end && sql[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= end {
            return None;
        }
        let skipped = skip(sql, i).min(end);
        match sql[i] {
            b'-' | b'/' if skipped > i + 1 => i = skipped,
            b'"' => {
                let Some(close) = quoted_end(sql, i, b'"', false).filter(|&c| c <= end) else {
                    return Some((Token::Other, i..end));
                };
                let mut name = Vec::with_capacity(close - i);
                let mut inner = sql[i + 1..close - 1].iter();
                while let Some(&b) = inner.next() {
                    name.push(b);
                    if b == b'"' {
                        inner.next(); // `""` stands for one `"`
                    }
                }
                return Some((Token::Quoted(name), i..close));
            }
            b if is_ident(b) && !b.is_ascii_digit() && b != b'$' => {
                let stop = sql[i..end]
                    .iter()
                    .position(|&b| !is_ident(b))
                    .map_or(end, |p| i + p);
                return Some((Token::Word(&sql[i..stop]), i..stop));
            }
            _ => return Some((Token::Other, i..skipped)),
        }
    }
}

/// Byte ranges of the top-level statements of `sql`, split at `;` outside quotes, dollar quotes
/// and comments (each without its `;`).
fn statement_spans(sql: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < sql.len() {
        if sql[i] == b';' {
            out.push(start..i);
            start = i + 1;
            i += 1;
        } else {
            i = skip(sql, i);
        }
    }
    out.push(start..sql.len());
    out
}

/// Past the quoted string, quoted identifier, dollar-quoted string or comment that starts at
/// `i` (the end of `sql` if it is not closed); `i + 1` when none starts there.
fn skip(sql: &[u8], i: usize) -> usize {
    let after_ident = i > 0 && is_ident(sql[i - 1]);
    match (sql[i], sql.get(i + 1)) {
        (b'\'', _) => {
            // E'...' takes backslash escapes.
            let escapes = after_ident
                && matches!(sql[i - 1], b'e' | b'E')
                && (i < 2 || !is_ident(sql[i - 2]));
            quoted_end(sql, i, b'\'', escapes).unwrap_or(sql.len())
        }
        (b'"', _) => quoted_end(sql, i, b'"', false).unwrap_or(sql.len()),
        (b'-', Some(b'-')) => sql[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(sql.len(), |p| i + p + 1),
        (b'/', Some(b'*')) => {
            // Block comments nest.
            let (mut depth, mut j) = (1, i + 2);
            while j < sql.len() && depth > 0 {
                match (sql[j], sql.get(j + 1)) {
                    (b'/', Some(b'*')) => (depth, j) = (depth + 1, j + 2),
                    (b'*', Some(b'/')) => (depth, j) = (depth - 1, j + 2),
                    _ => j += 1,
                }
            }
            j.min(sql.len())
        }
        (b'$', _) if !after_ident => {
            let tag_len = sql[i + 1..].iter().position(|&b| !is_ident(b) || b == b'$');
            match tag_len.map(|n| i + 1 + n) {
                Some(close) if sql[close] == b'$' && !sql[i + 1].is_ascii_digit() => {
                    let tag = &sql[i..=close];
                    sql[close + 1..]
                        .windows(tag.len())
                        .position(|w| w == tag)
                        .map_or(sql.len(), |p| close + 1 + p + tag.len())
                }
                _ => i + 1,
            }
        }
        _ => i + 1,
    }
}

/// Past the closing quote of the quoted text that starts at `i`; `None` if it is not closed.
fn quoted_end(sql: &[u8], i: usize, quote: u8, escapes: bool) -> Option<usize> {
    let mut j = i + 1;
    while j < sql.len() {
        match sql[j] {
            b'\\' if escapes => j += 2,
            q if q == quote && sql.get(j + 1) == Some(&quote) => j += 2,
            q if q == quote => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
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
        "create" | "alter" | "drop" => Some(Effect::SchemaChange),
        _ => None,
    }
}

/// No statement in `sql` pins or drops anything, decided without allocating (the common case).
pub fn is_plain(sql: &[u8]) -> bool {
    plainly_without_effects(sql)
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
#[path = "sql_tests.rs"]
mod tests;
