//! Fuzz target `detect`: see `gateway::fuzz::detect` for what it feeds and checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzz::detect(data));
