//! Fuzzing hook, not an API: parsers of peer- or operator-supplied text that are private to
//! their modules, re-exported for the `fuzz/` targets (and their stable corpus replay in
//! `tests/fuzz_replay.rs`). The session pumps are reached through `session::bench_hooks`.

pub use crate::config::pgpool_conf::{parse as parse_user_conf, Entry as UserConfEntry};
