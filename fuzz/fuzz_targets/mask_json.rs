//! Fuzz target `mask_json`: see `gateway::fuzz::mask_json` for what it feeds and checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzz::mask_json(data));
