//! Statements in SQL text fed in pieces, for the few decisions a proxy takes on a query's text
//! (does it bind state to its server connection?) without holding the text: a query far larger
//! than a session's buffers is read as it streams through, with bounded state.
//!
//! Not a parser. It splits on top-level semicolons, skipping quotes, dollar quotes and comments
//! (each becomes one space), lowercases, and keeps of each statement only its start (its first
//! words) and whether two phrases occur in it (`with hold`, ` into temp`). Calls of the session
//! advisory-lock functions are looked for in the raw text, quotes and comments included: a
//! false positive costs a pinned connection, a miss a broken session.

/// Normalized bytes kept of each statement's start: its first six words, in practice.
const HEAD: usize = 256;
/// Longest dollar-quote tag followed (`$` + identifier + `$`); a longer run of tag characters
/// after `$` is taken as plain text.
const TAG_MAX: usize = 66;

/// `_advisory_lock` in the raw text: `pg_advisory_lock`, `pg_try_advisory_lock` and their
/// `_shared` forms (the transaction-scoped `_xact_` ones do not match).
const ADVISORY: &[u8] = b"_advisory_lock";
const WITH_HOLD: &[u8] = b"with hold";
const INTO_TEMP: &[u8] = b" into temp";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Normal,
    /// Inside `'…'` or `"…"`: ends at the next same quote.
    Quote(u8),
    /// After `-`: a second one starts a line comment.
    Dash,
    LineComment,
    /// After `/`: `*` starts a block comment.
    Slash,
    /// Inside `/* … */` (not nested); `star`: the last byte was `*`.
    BlockComment {
        star: bool,
    },
    /// `$` and tag characters so far (in `tag`).
    DollarOpen,
    /// Inside a dollar quote; `matched` bytes of the closing tag seen.
    Dollar {
        matched: usize,
    },
}

/// The statement being read: its start and the phrases seen so far.
struct Statement {
    head: [u8; HEAD],
    head_len: usize,
    /// The last normalized byte was a space (runs of white space count as one).
    space: bool,
    /// The last normalized bytes, newest in the low byte.
    recent: u128,
    with_hold: bool,
    into_temp: bool,
}

impl Statement {
    fn new() -> Self {
        Statement {
            head: [0; HEAD],
            head_len: 0,
            // Leading white space is dropped.
            space: true,
            recent: 0,
            with_hold: false,
            into_temp: false,
        }
    }

    #[inline]
    fn push(&mut self, b: u8) {
        let b = if b.is_ascii_whitespace() {
            if self.space {
                return;
            }
            self.space = true;
            b' '
        } else {
            self.space = false;
            b.to_ascii_lowercase()
        };
        self.recent = (self.recent << 8) | u128::from(b);
        if self.head_len < HEAD {
            self.head[self.head_len] = b;
            self.head_len += 1;
        }
        match b {
            b'd' => self.with_hold |= ends_with(self.recent, WITH_HOLD),
            b'p' => self.into_temp |= ends_with(self.recent, INTO_TEMP),
            _ => {}
        }
    }

    fn summary(&self) -> StatementSummary<'_> {
        StatementSummary {
            head: &self.head[..self.head_len],
            with_hold: self.with_hold,
            into_temp: self.into_temp,
        }
    }
}

/// Whether the last `pat.len()` bytes shifted into `recent` are `pat` (at most 16 bytes).
#[inline]
fn ends_with(recent: u128, pat: &[u8]) -> bool {
    let mut want = 0u128;
    for &b in pat {
        want = (want << 8) | u128::from(b);
    }
    let mask = if pat.len() >= 16 {
        u128::MAX
    } else {
        (1u128 << (8 * pat.len())) - 1
    };
    recent & mask == want
}

/// What the lexer kept of one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementSummary<'a> {
    /// The statement's start: lowercase, comments and quoted text each one space, white space
    /// collapsed, leading white space dropped; at most 256 bytes (its first words).
    pub head: &'a [u8],
    /// `with hold` occurs in it (outside quotes and comments).
    pub with_hold: bool,
    /// ` into temp` occurs in it (outside quotes and comments).
    pub into_temp: bool,
}

/// SQL text fed in any number of pieces, split into statements; each statement's summary is
/// handed to the caller when its end is read. The same summaries however the text is split.
pub struct StatementScanner {
    lex: Lex,
    tag: [u8; TAG_MAX],
    tag_len: usize,
    stmt: Statement,
    /// The last raw bytes, lowercased, for the advisory-lock search.
    raw: u128,
    advisory: bool,
}

impl Default for StatementScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl StatementScanner {
    pub fn new() -> Self {
        StatementScanner {
            lex: Lex::Normal,
            tag: [0; TAG_MAX],
            tag_len: 0,
            stmt: Statement::new(),
            raw: 0,
            advisory: false,
        }
    }

    /// Reads the next piece of the text; `on_statement` gets each statement that ends in it.
    /// (A `dyn` callback: the lexer is compiled here, optimized, not in every caller.)
    pub fn feed(&mut self, text: &[u8], on_statement: &mut dyn FnMut(StatementSummary<'_>)) {
        for &b in text {
            let lower = b.to_ascii_lowercase();
            self.raw = (self.raw << 8) | u128::from(lower);
            if lower == b'k' && ends_with(self.raw, ADVISORY) {
                self.advisory = true;
            }
            self.byte(b, on_statement);
        }
    }

    /// The end of the text: the last statement (if any text is left) goes to `on_statement`.
    pub fn finish(mut self, on_statement: &mut dyn FnMut(StatementSummary<'_>)) {
        match self.lex {
            Lex::Dash => self.stmt.push(b'-'),
            Lex::Slash => self.stmt.push(b'/'),
            Lex::DollarOpen => self.flush_tag(),
            _ => {}
        }
        self.end_statement(on_statement);
    }

    /// A call of a session advisory-lock function appears anywhere in what was fed (quotes and
    /// comments included).
    pub fn advisory_lock(&self) -> bool {
        self.advisory
    }

    #[inline]
    fn byte(&mut self, b: u8, on_statement: &mut dyn FnMut(StatementSummary<'_>)) {
        match self.lex {
            Lex::Normal => self.normal(b, on_statement),
            Lex::Quote(q) => {
                if b == q {
                    self.lex = Lex::Normal;
                }
            }
            Lex::Dash => {
                if b == b'-' {
                    self.lex = Lex::LineComment;
                    self.stmt.push(b' ');
                } else {
                    self.lex = Lex::Normal;
                    self.stmt.push(b'-');
                    self.normal(b, on_statement);
                }
            }
            Lex::LineComment => {
                if b == b'\n' {
                    self.lex = Lex::Normal;
                    self.normal(b, on_statement);
                }
            }
            Lex::Slash => {
                if b == b'*' {
                    self.lex = Lex::BlockComment { star: false };
                    self.stmt.push(b' ');
                } else {
                    self.lex = Lex::Normal;
                    self.stmt.push(b'/');
                    self.normal(b, on_statement);
                }
            }
            Lex::BlockComment { star } => {
                if star && b == b'/' {
                    self.lex = Lex::Normal;
                } else {
                    self.lex = Lex::BlockComment { star: b == b'*' };
                }
            }
            Lex::DollarOpen => {
                if b == b'$' && self.tag_len < TAG_MAX {
                    self.tag[self.tag_len] = b'$';
                    self.tag_len += 1;
                    self.lex = Lex::Dollar { matched: 0 };
                    self.stmt.push(b' ');
                } else if (b.is_ascii_alphanumeric() || b == b'_') && self.tag_len < TAG_MAX - 1 {
                    self.tag[self.tag_len] = b.to_ascii_lowercase();
                    self.tag_len += 1;
                } else {
                    // Not a dollar quote: `$` and what followed it are plain text.
                    self.flush_tag();
                    self.lex = Lex::Normal;
                    self.normal(b, on_statement);
                }
            }
            Lex::Dollar { matched } => {
                let b = b.to_ascii_lowercase();
                let matched = if b == self.tag[matched] {
                    matched + 1
                } else {
                    // The tag holds `$` only at its ends: a new match can start only here.
                    usize::from(b == b'$')
                };
                self.lex = if matched == self.tag_len {
                    Lex::Normal
                } else {
                    Lex::Dollar { matched }
                };
            }
        }
    }

    #[inline]
    fn normal(&mut self, b: u8, on_statement: &mut dyn FnMut(StatementSummary<'_>)) {
        match b {
            b'\'' | b'"' => {
                self.lex = Lex::Quote(b);
                self.stmt.push(b' ');
            }
            b'-' => self.lex = Lex::Dash,
            b'/' => self.lex = Lex::Slash,
            b'$' => {
                self.tag[0] = b'$';
                self.tag_len = 1;
                self.lex = Lex::DollarOpen;
            }
            b';' => self.end_statement(on_statement),
            _ => self.stmt.push(b),
        }
    }

    /// A `$` that did not open a dollar quote, and the tag characters after it, as plain text.
    fn flush_tag(&mut self) {
        for i in 0..self.tag_len {
            let b = self.tag[i];
            self.stmt.push(b);
        }
        self.tag_len = 0;
    }

    fn end_statement(&mut self, on_statement: &mut dyn FnMut(StatementSummary<'_>)) {
        if self.stmt.head_len > 0 {
            on_statement(self.stmt.summary());
        }
        self.stmt = Statement::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Owned = (Vec<(String, bool, bool)>, bool);

    fn run(pieces: &[&[u8]]) -> Owned {
        let mut out = Vec::new();
        let mut keep = |s: StatementSummary<'_>| {
            out.push((
                String::from_utf8_lossy(s.head).into_owned(),
                s.with_hold,
                s.into_temp,
            ))
        };
        let mut sc = StatementScanner::new();
        for p in pieces {
            sc.feed(p, &mut keep);
        }
        let advisory = sc.advisory_lock();
        sc.finish(&mut keep);
        (out, advisory)
    }

    /// Split at every point and byte by byte: the same statements as fed whole.
    fn same_in_pieces(sql: &str) -> Owned {
        let b = sql.as_bytes();
        let expected = run(&[b]);
        for cut in 0..=b.len() {
            assert_eq!(
                run(&[&b[..cut], &b[cut..]]),
                expected,
                "split at {cut}: {sql:?}"
            );
        }
        let bytes: Vec<&[u8]> = b.chunks(1).collect();
        assert_eq!(run(&bytes), expected, "byte by byte: {sql:?}");
        expected
    }

    fn heads(sql: &str) -> Vec<String> {
        // (A blanked quote or comment at the end leaves a trailing space.)
        same_in_pieces(sql)
            .0
            .into_iter()
            .map(|s| s.0.trim_end().to_string())
            .collect()
    }

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        assert_eq!(heads("select 1; LISTEN  x"), ["select 1", "listen x"]);
        assert_eq!(heads("select '; listen x'"), ["select"]);
        assert_eq!(
            heads("select \"a;b\"; set role r"),
            ["select", "set role r"]
        );
        assert_eq!(
            heads("select $a$ ; x $a$; prepare p"),
            ["select", "prepare p"]
        );
        assert_eq!(heads("select $$ $a$ ; x $$"), ["select"]);
        assert_eq!(heads("select $1; listen y"), ["select $1", "listen y"]);
        assert_eq!(heads("select 1 -- ; x\n; load 'x'"), ["select 1", "load"]);
        assert_eq!(
            heads("select 1 /* ; x */ ; select 2"),
            ["select 1", "select 2"]
        );
        assert_eq!(heads("select 1 /*/ ; x */"), ["select 1"]);
        assert_eq!(heads("select a - b / c; x"), ["select a - b / c", "x"]);
        assert_eq!(heads(" ; ;\n"), Vec::<String>::new());
        assert_eq!(heads("select $A$;$a$; y"), ["select", "y"]);
    }

    #[test]
    fn phrases_and_advisory_locks() {
        let (s, _) = same_in_pieces("declare c cursor with\n  hold for select 1");
        assert!(s[0].1 && !s[0].2);
        let (s, _) = same_in_pieces("select * into  temp t from x");
        assert!(s[0].2);
        let (s, _) = same_in_pieces("select 'with hold', ' into temp'");
        assert!(!s[0].1 && !s[0].2);
        assert!(same_in_pieces("select 'pg_advisory_lock(1)'").1);
        assert!(same_in_pieces("SELECT PG_TRY_ADVISORY_LOCK_SHARED(1)").1);
        assert!(!same_in_pieces("select pg_advisory_xact_lock(1)").1);
    }

    #[test]
    fn a_statement_after_a_huge_one_is_still_seen() {
        let mut x = vec![b'x'; 1000];
        x.extend_from_slice(b"'); /* ");
        let semis = [b';'; 5000];
        let mut pieces: Vec<&[u8]> = vec![b"insert into t values ('"];
        for _ in 0..1000 {
            pieces.push(&x[..1000]);
        }
        pieces.push(&x[1000..]);
        pieces.push(&semis);
        pieces.push(b" */ set search_path = a");
        let (s, _) = run(&pieces);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].0, "set search_path = a");
    }

    #[test]
    fn an_overlong_dollar_tag_is_plain_text() {
        let tag = "a".repeat(100);
        let sql = format!("select ${tag}$; listen x; ${tag}$");
        assert_eq!(heads(&sql).len(), 3);
        assert_eq!(heads(&sql)[1], "listen x");
    }

    #[test]
    fn heads_are_bounded() {
        let long = format!("select {}", "y".repeat(10_000));
        let (s, _) = run(&[long.as_bytes()]);
        assert_eq!(s[0].0.len(), HEAD);
    }
}
