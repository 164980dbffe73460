//! A client's startup parameters as PostgreSQL reads them. GUC names are case-insensitive (the
//! reported ones keep the server's spelling, the others are lowercased), the last of a repeated
//! name wins, and `client_encoding` names an encoding by any of its aliases (`utf-8`,
//! `unicode`, `win1252`, ...). Clients, server connections and greetings are compared in this
//! normal form, so two spellings of the same startup packet share everything.

use std::collections::BTreeMap;

use pgpivot_protocol::startup::StartupMessage;

use crate::pool::server::is_settable;

/// The parameters PostgreSQL 15 reports to clients (GUC_REPORT), as it spells them, in the
/// order of its greeting.
pub const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "default_transaction_read_only",
    "in_hot_standby",
    "integer_datetimes",
    "IntervalStyle",
    "is_superuser",
    "server_encoding",
    "server_version",
    "session_authorization",
    "standard_conforming_strings",
    "TimeZone",
];

/// Startup keys PostgreSQL reads by exact name (not GUCs); `User` is a GUC (and an unknown one).
const EXACT_KEYS: &[&str] = &["user", "database", "options", "replication"];

pub fn is_reported(name: &str) -> bool {
    REPORTED.contains(&name)
}

/// A GUC name as pgpivot keeps it: a reported one as the server spells it, another lowercased
/// (unless that would turn it into one of the keys PostgreSQL reads by exact name).
pub fn normal_name(name: &str) -> String {
    if let Some(r) = REPORTED.iter().find(|r| r.eq_ignore_ascii_case(name)) {
        return r.to_string();
    }
    let lower = name.to_ascii_lowercase();
    if EXACT_KEYS.contains(&lower.as_str()) || pgpivot_protocol::startup::is_protocol_option(&lower)
    {
        return name.to_string();
    }
    lower
}

/// The startup packet in normal form: the keys PostgreSQL reads by exact name and protocol
/// options as given, in order; then the GUCs sorted by name, each once (its last value), with a
/// `client_encoding` PostgreSQL recognizes spelled as it reports it.
pub fn normalize(startup: &StartupMessage) -> StartupMessage {
    let mut gucs = BTreeMap::new();
    let mut params = Vec::new();
    for (k, v) in &startup.params {
        if EXACT_KEYS.contains(&k.as_str()) || pgpivot_protocol::startup::is_protocol_option(k) {
            params.push((k.clone(), v.clone()));
            continue;
        }
        let name = normal_name(k);
        let value = match name.as_str() {
            "client_encoding" => canonical_encoding(v).map_or_else(|| v.clone(), str::to_string),
            _ => v.clone(),
        };
        gucs.insert(name, value);
    }
    params.extend(gucs);
    StartupMessage {
        major: startup.major,
        minor: startup.minor,
        params,
    }
}

/// A normalized startup packet without the GUCs a client can SET: what a transaction-mode
/// server connection is opened with, so that every connection of a pool starts (and returns to,
/// after RESET ALL) the server's own defaults.
pub fn bare(normal: &StartupMessage) -> StartupMessage {
    StartupMessage {
        major: normal.major,
        minor: normal.minor,
        params: normal
            .params
            .iter()
            .filter(|(k, _)| !is_settable(k))
            .cloned()
            .collect(),
    }
}

/// The GUCs of a normalized startup packet a client can SET, sorted by name.
pub fn settable(normal: &StartupMessage) -> impl Iterator<Item = (&str, &str)> {
    normal
        .params
        .iter()
        .filter(|(k, _)| is_settable(k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
}

/// Whether the startup packet names a parameter only the server can judge at login: one
/// clients cannot set (`server_version`, ...), which PostgreSQL refuses.
pub fn needs_server(normal: &StartupMessage) -> bool {
    normal.params.iter().any(|(k, _)| {
        !is_settable(k)
            && !EXACT_KEYS.contains(&k.as_str())
            && !pgpivot_protocol::startup::is_protocol_option(k)
    })
}

/// How many distinct startup packets keep a greeting.
const MAX_GREETINGS: usize = 10_000;

/// (user, database, options, settable GUCs in normal form).
type GreetingKey = (String, String, String, Vec<(String, String)>);

/// The parameters a server reported to a login, by startup packet in normal form: a later
/// client with the same packet can be greeted exactly, without a server connection (a
/// transaction-mode login, or a session-mode one while no server connection can be had at
/// once). Also proves the packet's values valid: the server accepted them.
#[derive(Default)]
pub struct Greetings(dashmap::DashMap<GreetingKey, super::params::ClientParams>);

impl Greetings {
    fn key(normal: &StartupMessage) -> GreetingKey {
        (
            normal.user().to_string(),
            normal.database().to_string(),
            normal.get("options").unwrap_or("").to_string(),
            settable(normal)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    pub fn get(&self, normal: &StartupMessage) -> Option<super::params::ClientParams> {
        self.0.get(&Self::key(normal)).map(|p| p.clone())
    }

    pub fn remember(&self, normal: &StartupMessage, params: &super::params::ClientParams) {
        let key = Self::key(normal);
        if self.0.len() < MAX_GREETINGS || self.0.contains_key(&key) {
            self.0.insert(key, params.clone());
        }
    }
}

/// PostgreSQL's name for an encoding given by any of its aliases (`pg_char_to_encoding`:
/// case-insensitive, everything but letters and digits ignored), or `None` for a name it would
/// refuse. Exactly `UNICODE` stays as it is: PostgreSQL keeps it for old JDBC drivers.
pub fn canonical_encoding(name: &str) -> Option<&'static str> {
    if name == "UNICODE" {
        return Some("UNICODE");
    }
    let key: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    ENCODINGS
        .binary_search_by(|(alias, _)| alias.cmp(&key.as_str()))
        .ok()
        .map(|i| ENCODINGS[i].1)
}

/// PostgreSQL's encoding aliases (src/common/encnames.c), sorted, with the name it reports.
const ENCODINGS: &[(&str, &str)] = &[
    ("abc", "WIN1258"),
    ("alt", "WIN866"),
    ("big5", "BIG5"),
    ("euccn", "EUC_CN"),
    ("eucjis2004", "EUC_JIS_2004"),
    ("eucjp", "EUC_JP"),
    ("euckr", "EUC_KR"),
    ("euctw", "EUC_TW"),
    ("gb18030", "GB18030"),
    ("gbk", "GBK"),
    ("iso88591", "LATIN1"),
    ("iso885910", "LATIN6"),
    ("iso885913", "LATIN7"),
    ("iso885914", "LATIN8"),
    ("iso885915", "LATIN9"),
    ("iso885916", "LATIN10"),
    ("iso88592", "LATIN2"),
    ("iso88593", "LATIN3"),
    ("iso88594", "LATIN4"),
    ("iso88595", "ISO_8859_5"),
    ("iso88596", "ISO_8859_6"),
    ("iso88597", "ISO_8859_7"),
    ("iso88598", "ISO_8859_8"),
    ("iso88599", "LATIN5"),
    ("johab", "JOHAB"),
    ("koi8", "KOI8R"),
    ("koi8r", "KOI8R"),
    ("koi8u", "KOI8U"),
    ("latin1", "LATIN1"),
    ("latin10", "LATIN10"),
    ("latin2", "LATIN2"),
    ("latin3", "LATIN3"),
    ("latin4", "LATIN4"),
    ("latin5", "LATIN5"),
    ("latin6", "LATIN6"),
    ("latin7", "LATIN7"),
    ("latin8", "LATIN8"),
    ("latin9", "LATIN9"),
    ("mskanji", "SJIS"),
    ("muleinternal", "MULE_INTERNAL"),
    ("shiftjis", "SJIS"),
    ("shiftjis2004", "SHIFT_JIS_2004"),
    ("sjis", "SJIS"),
    ("sqlascii", "SQL_ASCII"),
    ("tcvn", "WIN1258"),
    ("tcvn5712", "WIN1258"),
    ("uhc", "UHC"),
    ("unicode", "UTF8"),
    ("utf8", "UTF8"),
    ("vscii", "WIN1258"),
    ("win", "WIN1251"),
    ("win1250", "WIN1250"),
    ("win1251", "WIN1251"),
    ("win1252", "WIN1252"),
    ("win1253", "WIN1253"),
    ("win1254", "WIN1254"),
    ("win1255", "WIN1255"),
    ("win1256", "WIN1256"),
    ("win1257", "WIN1257"),
    ("win1258", "WIN1258"),
    ("win866", "WIN866"),
    ("win874", "WIN874"),
    ("win932", "SJIS"),
    ("win936", "GBK"),
    ("win949", "UHC"),
    ("win950", "BIG5"),
    ("windows1250", "WIN1250"),
    ("windows1251", "WIN1251"),
    ("windows1252", "WIN1252"),
    ("windows1253", "WIN1253"),
    ("windows1254", "WIN1254"),
    ("windows1255", "WIN1255"),
    ("windows1256", "WIN1256"),
    ("windows1257", "WIN1257"),
    ("windows1258", "WIN1258"),
    ("windows866", "WIN866"),
    ("windows874", "WIN874"),
    ("windows932", "SJIS"),
    ("windows936", "GBK"),
    ("windows949", "UHC"),
    ("windows950", "BIG5"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(params: &[(&str, &str)]) -> StartupMessage {
        StartupMessage {
            major: 3,
            minor: 0,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn encodings_by_any_alias() {
        assert!(ENCODINGS.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
        for (given, want) in [
            ("utf-8", "UTF8"),
            ("UTF8", "UTF8"),
            ("Unicode", "UTF8"),
            ("UNICODE", "UNICODE"),
            ("euc-jp", "EUC_JP"),
            ("ISO_8859-1", "LATIN1"),
            ("latin1", "LATIN1"),
            ("Win-1252", "WIN1252"),
            ("SQL_ASCII", "SQL_ASCII"),
            ("shift_jis_2004", "SHIFT_JIS_2004"),
        ] {
            assert_eq!(canonical_encoding(given), Some(want), "{given}");
        }
        for bad in ["", "auto", "utf-16", "klingon"] {
            assert_eq!(canonical_encoding(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_values_and_order() {
        let n = normalize(&startup(&[
            ("user", "app"),
            ("TIMEZONE", "UTC"),
            ("datestyle", "german"),
            ("Statement_Timeout", "5s"),
            ("client_encoding", "unicode"),
            ("database", "db"),
            ("statement_timeout", "6s"),
            ("User", "x"),
            ("_pq_.opt", "on"),
        ]));
        assert_eq!(
            n.params,
            [
                ("user", "app"),
                ("database", "db"),
                ("_pq_.opt", "on"),
                ("DateStyle", "german"),
                ("TimeZone", "UTC"),
                ("User", "x"),
                ("client_encoding", "UTF8"),
                ("statement_timeout", "6s"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let keys: Vec<&str> = settable(&n).map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "DateStyle",
                "TimeZone",
                "User",
                "client_encoding",
                "statement_timeout"
            ]
        );
        let b = bare(&n);
        assert_eq!(b.user(), "app");
        assert_eq!(b.database(), "db");
        assert_eq!(settable(&b).count(), 0);
        // An encoding PostgreSQL does not know is left for it to refuse.
        let n = normalize(&startup(&[("user", "u"), ("client_encoding", "auto")]));
        assert_eq!(n.get("client_encoding"), Some("auto"));
    }
}
