//! Fuzz target `sse`: see `gateway::fuzz::sse` for what it feeds and checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzz::sse(data));
