//! Bodies of the fuzz targets, one module each, shared by the libFuzzer entry points
//! (`fuzz_targets/*.rs`, nightly) and the stable corpus replay (`proxy/tests/fuzz_replay.rs`,
//! which loads this file with `#[path]`). Each `run` asserts invariants, not only "no panic".
//!
//! Modules refer to each other through `super::`, never `crate::`, so they compile in both places.

pub mod admin_command;
pub mod common;
pub mod config_parsers;
pub mod frame_scanner;
pub mod message_views;
pub mod scram_server;
pub mod session_pumps;
pub mod sql_effects;
pub mod startup_packet;

/// A target's body: one fuzz input in, a panic on any broken invariant.
pub type Body = fn(&[u8]);

/// Every target by name (the name of its `fuzz_targets/` file and its `corpus/` folder).
pub const TARGETS: &[(&str, Body)] = &[
    ("admin_command", admin_command::run),
    ("config_parsers", config_parsers::run),
    ("frame_scanner", frame_scanner::run),
    ("message_views", message_views::run),
    ("scram_server", scram_server::run),
    ("session_pumps", session_pumps::run),
    ("sql_effects", sql_effects::run),
    ("startup_packet", startup_packet::run),
];
