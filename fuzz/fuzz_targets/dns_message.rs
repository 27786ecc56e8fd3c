//! Fuzz target `dns_message`: see `gateway::fuzz::dns_message` for what it feeds and checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzz::dns_message(data));
