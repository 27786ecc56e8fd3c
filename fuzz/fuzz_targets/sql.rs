//! Fuzz target `sql`: see `gateway::fuzz::sql` for what it feeds and checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzz::sql(data));
