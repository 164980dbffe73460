//! The binary's command line without a database (the end-to-end tests in `tests/` use the
//! binary too; this test also makes `cargo test` build it).

use std::process::Command;

#[test]
fn version_and_missing_configuration() {
    let bin = env!("CARGO_BIN_EXE_pgpivot");
    let out = Command::new(bin).arg("--version").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("pgpivot"));

    let out = Command::new(bin)
        .arg("--check")
        .env_clear()
        .output()
        .expect("run");
    assert!(!out.status.success(), "no backend list must be an error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("PGPOOL_BACKEND_NODES"));
}
