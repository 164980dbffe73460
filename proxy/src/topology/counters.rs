//! Statements sent to each node and errors it returned, by kind (`SHOW pool_backend_stats`,
//! and `select_cnt` in `SHOW pool_nodes`). Plain atomics: counted on the forwarding path.

use std::sync::atomic::{AtomicU64, Ordering};

use pgpivot_admin::StatementCounts;

/// What a statement does, from its first keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Ddl,
    Other,
}

#[derive(Default)]
pub struct NodeCounters {
    select: AtomicU64,
    insert: AtomicU64,
    update: AtomicU64,
    delete: AtomicU64,
    ddl: AtomicU64,
    other: AtomicU64,
    panic: AtomicU64,
    fatal: AtomicU64,
    error: AtomicU64,
}

impl NodeCounters {
    pub fn statement(&self, kind: StatementKind) {
        let c = match kind {
            StatementKind::Select => &self.select,
            StatementKind::Insert => &self.insert,
            StatementKind::Update => &self.update,
            StatementKind::Delete => &self.delete,
            StatementKind::Ddl => &self.ddl,
            StatementKind::Other => &self.other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// An ErrorResponse from the node, by severity.
    pub fn error(&self, severity: &str) {
        let c = match severity {
            "PANIC" => &self.panic,
            "FATAL" => &self.fatal,
            _ => &self.error,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatementCounts {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatementCounts {
            select: l(&self.select),
            insert: l(&self.insert),
            update: l(&self.update),
            delete: l(&self.delete),
            ddl: l(&self.ddl),
            other: l(&self.other),
            panic: l(&self.panic),
            fatal: l(&self.fatal),
            error: l(&self.error),
        }
    }
}

/// Classifies a statement by its first keyword (comments and whitespace skipped, no
/// allocation: this runs for every Query and Parse).
pub fn classify(sql: &[u8]) -> StatementKind {
    let mut t = sql;
    loop {
        while let [c, rest @ ..] = t {
            if c.is_ascii_whitespace() || *c == b'(' {
                t = rest;
            } else {
                break;
            }
        }
        if t.starts_with(b"--") {
            t = t
                .iter()
                .position(|&c| c == b'\n')
                .map_or(&[][..], |i| &t[i + 1..]);
        } else if t.starts_with(b"/*") {
            t = t
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(&[][..], |i| &t[i + 2..]);
        } else {
            break;
        }
    }
    let end = t
        .iter()
        .position(|c| !c.is_ascii_alphabetic())
        .unwrap_or(t.len());
    let word = &t[..end];
    let is = |w: &str| word.eq_ignore_ascii_case(w.as_bytes());
    if is("select") || is("with") || is("values") || is("table") {
        StatementKind::Select
    } else if is("insert") || is("copy") {
        StatementKind::Insert
    } else if is("update") || is("merge") {
        StatementKind::Update
    } else if is("delete") || is("truncate") {
        StatementKind::Delete
    } else if is("create")
        || is("alter")
        || is("drop")
        || is("comment")
        || is("grant")
        || is("revoke")
    {
        StatementKind::Ddl
    } else {
        StatementKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_keyword_decides() {
        assert_eq!(classify(b"  SELECT 1"), StatementKind::Select);
        assert_eq!(
            classify(b"-- hi\n/* x */ insert into t values (1)"),
            StatementKind::Insert
        );
        assert_eq!(
            classify(b"(select 1) union (select 2)"),
            StatementKind::Select
        );
        assert_eq!(classify(b"UPDATE t SET a = 1"), StatementKind::Update);
        assert_eq!(classify(b"delete from t"), StatementKind::Delete);
        assert_eq!(classify(b"CREATE TABLE t (a int)"), StatementKind::Ddl);
        assert_eq!(classify(b"BEGIN"), StatementKind::Other);
        assert_eq!(classify(b""), StatementKind::Other);
        assert_eq!(classify(b"/* unterminated"), StatementKind::Other);
    }
}
