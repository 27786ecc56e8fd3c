//! Fuzz target `http_path`: see `gateway::fuzz::http_path` for what it feeds and checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzz::http_path(data));
