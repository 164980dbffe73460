//! `sql_effects`: the statement classification pooling relies on (`proxy/src/session/sql.rs`:
//! which statements pin a client to its server connection, which reset prepared statements) on
//! arbitrary SQL text from a Query or Parse.
//!
//! Invariants: no effect is reported twice; a Deallocate names a statement; the allocation-free
//! fast path agrees with the full scan (a second, effect-free statement forces the full scan and
//! must change nothing); ASCII case and a trailing `;` change nothing.

use pgpivot::session::sql::{effects, Effect};

pub fn run(sql: &[u8]) {
    let found = effects(sql);
    for (i, e) in found.iter().enumerate() {
        assert!(!found[..i].contains(e), "{e:?} twice");
        if let Effect::Deallocate(name) = e {
            assert!(!name.is_empty() || sql.contains(&b'"'));
        }
    }
    let with = |suffix: &[u8]| effects(&[sql, suffix].concat());
    assert_eq!(with(b";"), found, "a trailing ;");
    assert_eq!(
        with(b"; select 1"),
        found,
        "fast path against the full scan"
    );
    assert_eq!(effects(&sql.to_ascii_uppercase()), found, "upper case");
    assert_eq!(effects(&sql.to_ascii_lowercase()), found, "lower case");
}
