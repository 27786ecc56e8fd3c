//! Fuzz target `pg_frontend`: see `gateway::fuzz::pg_frontend` for what it feeds and checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzz::pg_frontend(data));
