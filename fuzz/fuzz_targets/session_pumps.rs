#![no_main]
// The body is shared with the stable corpus replay (proxy/tests/fuzz_replay.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| pgpivot_fuzz::session_pumps::run(data));
