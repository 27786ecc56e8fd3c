//! Fuzz target `pg_backend`: see `gateway::fuzz::pg_backend` for what it feeds and checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzz::pg_backend(data));
