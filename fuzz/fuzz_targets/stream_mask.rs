//! Fuzz target `stream_mask`: see `gateway::fuzz::stream_mask` for what it feeds and checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzz::stream_mask(data));
