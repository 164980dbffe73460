//! Replays the checked-in fuzz corpus on stable: every target's body (the same code the
//! libFuzzer entry points in `fuzz/fuzz_targets/` run) over every file in `fuzz/corpus/<target>/`,
//! seeds and regression inputs alike. Fuzzing itself needs nightly: see README, "Fuzzing".

use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/lib.rs"]
mod fuzz;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn replay(target: &str) {
    let (_, body) = fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no target {target}"));
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{}: too few inputs", dir.display());
    for file in files {
        let data = std::fs::read(&file).expect("corpus file");
        let run = std::panic::catch_unwind(|| body(&data));
        assert!(run.is_ok(), "{target} failed on {}", file.display());
    }
}

#[test]
fn every_target_has_an_entry_point_and_a_corpus() {
    let entries = fuzz_dir().join("fuzz_targets");
    for (name, _) in fuzz::TARGETS {
        let entry = entries.join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&entry).expect("fuzz_targets/<name>.rs");
        assert!(
            text.contains(&format!("pgpivot_fuzz::{name}::run")),
            "{} runs another body",
            entry.display()
        );
    }
    let count = std::fs::read_dir(&entries).expect("fuzz_targets").count();
    assert_eq!(count, fuzz::TARGETS.len(), "a target missing from TARGETS");
}

#[test]
fn startup_packet() {
    replay("startup_packet");
}

#[test]
fn frame_scanner() {
    replay("frame_scanner");
}

#[test]
fn message_views() {
    replay("message_views");
}

#[test]
fn scram_server() {
    replay("scram_server");
}

#[test]
fn admin_command() {
    replay("admin_command");
}

#[test]
fn config_parsers() {
    replay("config_parsers");
}

#[test]
fn sql_effects() {
    replay("sql_effects");
}

#[test]
fn session_pumps() {
    replay("session_pumps");
}
