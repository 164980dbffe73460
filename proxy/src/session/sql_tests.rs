//! Unit tests of the SQL look.
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
    assert_eq!(e("CREATE TABLE t(a int)"), vec![Effect::SchemaChange]);
    assert!(e("select é from t").is_empty());
}

fn named(name: &str, span: Range<usize>) -> Reset {
    Reset::Statement {
        name: name.as_bytes().to_vec(),
        span,
    }
}

#[test]
fn deallocate_forms_and_spans() {
    let r = |s: &str| resets(s.as_bytes());
    assert_eq!(r("DEALLOCATE s1"), [named("s1", 0..13)]);
    assert_eq!(r("deallocate prepare S1;"), [named("s1", 0..21)]);
    assert_eq!(r("DEALLOCATE \"Mixed\"\"q\""), [named("Mixed\"q", 0..21)]);
    assert_eq!(r("DEALLOCATE prepare"), [named("prepare", 0..18)]);
    assert_eq!(r("DEALLOCATE PREPARE \"all\""), [named("all", 0..24)]);
    assert_eq!(r("DEALLOCATE ALL"), [Reset::All]);
    assert_eq!(r("deallocate prepare all"), [Reset::All]);
    assert_eq!(r("DISCARD ALL"), [Reset::All]);
    assert_eq!(
        r("SELECT 1; DEALLOCATE a; /* x; */ DEALLOCATE b -- c\n; DISCARD ALL"),
        [named("a", 10..22), named("b", 33..45), Reset::All]
    );
    // Quotes, dollar quotes and comments hide what is inside them.
    for hidden in [
        "SELECT 'x; DEALLOCATE a'",
        "SELECT E'\\'; DEALLOCATE a'",
        "SELECT $f$; DEALLOCATE a $f$",
        "SELECT 1 /* /* nested */ ; DEALLOCATE a */",
        "SELECT \"x; DEALLOCATE a\"",
        "-- DEALLOCATE a",
    ] {
        assert_eq!(r(hidden), [], "{hidden}");
    }
    assert_eq!(r("SELECT $1; DEALLOCATE a"), [named("a", 11..23)]);
    // Not well formed: the server reports it.
    for bad in [
        "DEALLOCATE",
        "DEALLOCATE a b",
        "DEALLOCATE a(1)",
        "DISCARD",
        "DISCARD PLANS",
    ] {
        assert_eq!(r(bad), [], "{bad}");
    }
    assert_eq!(r("SELECT 1"), []);
}

#[test]
fn arbitrary_text_never_panics() {
    let pieces = [
        "'",
        "\"",
        "$",
        "$a$",
        "--",
        "/*",
        "*/",
        ";",
        "e'\\",
        "DEALLOCATE",
        " x",
        "\n",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20_000 {
        let mut s = String::new();
        for _ in 0..(seed % 9) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            s.push_str(pieces[(seed % pieces.len() as u64) as usize]);
        }
        for reset in resets(s.as_bytes()) {
            if let Reset::Statement { span, .. } = reset {
                assert!(span.end <= s.len());
            }
        }
    }
}

#[test]
fn reset_effects() {
    assert_eq!(e("DEALLOCATE ALL"), vec![Effect::DeallocateAll]);
    assert_eq!(
        e("deallocate prepare s1"),
        vec![Effect::Deallocate("s1".into())]
    );
    assert_eq!(e("DISCARD ALL"), vec![Effect::DiscardAll]);
    assert_eq!(e("begin; listen a; commit"), vec![Effect::Pin("LISTEN")]);
}

#[test]
fn parameter_resets() {
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
}

#[test]
fn schema_changes() {
    for ddl in [
        "ALTER TABLE t ADD COLUMN c int",
        "drop table t",
        "create table t(a int)",
    ] {
        assert_eq!(e(ddl), vec![Effect::SchemaChange], "{ddl}");
    }
    assert_eq!(
        e("create temp table t(a int)"),
        vec![Effect::Pin("temporary table")]
    );
}
