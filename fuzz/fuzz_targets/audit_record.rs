//! Fuzz target `audit_record`: see `gateway::fuzz::audit_record` for what it feeds and checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzz::audit_record(data));
