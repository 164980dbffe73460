//! Statement effects of SQL text fed in pieces: [`super::sql::effects`] for a query too large
//! to hold, read as it streams to the server (the lexer is the protocol crate's).

use pgpivot_protocol::sql_text::StatementScanner;

use super::sql::{statement_effect, Effect};

/// Effects of SQL text fed in any number of pieces; the same answer however it is split.
#[derive(Default)]
pub struct EffectScanner {
    statements: StatementScanner,
    found: Vec<Effect>,
}

impl EffectScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the next piece of the text.
    pub fn feed(&mut self, text: &[u8]) {
        let found = &mut self.found;
        self.statements.feed(text, &mut |s| note(found, s));
    }

    /// The effects of everything fed, in order of appearance, each once (a session advisory
    /// lock first).
    pub fn finish(self) -> Vec<Effect> {
        let EffectScanner {
            statements,
            mut found,
        } = self;
        let advisory = statements.advisory_lock();
        statements.finish(&mut |s| note(&mut found, s));
        if advisory {
            found.insert(0, Effect::Pin("session advisory lock"));
        }
        found
    }
}

fn note(found: &mut Vec<Effect>, s: pgpivot_protocol::sql_text::StatementSummary<'_>) {
    let head = String::from_utf8_lossy(s.head);
    if let Some(e) = statement_effect(&head, s.with_hold, s.into_temp) {
        if !found.contains(&e) {
            found.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(sql: &str) -> Vec<Effect> {
        let mut s = EffectScanner::new();
        s.feed(sql.as_bytes());
        s.finish()
    }

    #[test]
    fn effects_of_statements_fed_in_pieces() {
        let cases: &[(&str, &[Effect])] = &[
            ("select 1; listen x", &[Effect::Pin("LISTEN")]),
            ("select '; listen x'", &[]),
            (
                "declare c cursor with\n hold for select 1",
                &[Effect::Pin("cursor WITH HOLD")],
            ),
            (
                "select * into temp t from x",
                &[Effect::Pin("temporary table")],
            ),
            (
                "select 'pg_advisory_lock(1)'",
                &[Effect::Pin("session advisory lock")],
            ),
            (
                "DEALLOCATE ALL; discard all",
                &[Effect::DeallocateAll, Effect::DiscardAll],
            ),
            (
                "SET search_path = x",
                &[Effect::Pin("SET of a parameter the server does not report")],
            ),
            ("set time zone 'UTC'", &[]),
            (
                "select 1; set role r; listen a",
                &[Effect::Pin("SET ROLE"), Effect::Pin("LISTEN")],
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(whole(sql), want.to_vec(), "{sql:?}");
            let b = sql.as_bytes();
            for cut in 0..=b.len() {
                let mut s = EffectScanner::new();
                s.feed(&b[..cut]);
                s.feed(&b[cut..]);
                assert_eq!(s.finish(), want.to_vec(), "{sql:?} split at {cut}");
            }
        }
    }
}
