//! Interlock's kernel programs.
//!
//! Each hook lives in its own module and says at its top whether it fails open
//! or closed. The hooks know nothing about protocols: they pick agent
//! processes, apply the redirect rules and leave a record the proxy can find.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(not(target_arch = "bpf"), allow(dead_code, unused_imports))]

mod connect;
mod dns_handoff;
mod getpeername;
mod maps;
mod process;
mod record;
mod release;
mod revoke;
mod rules;
mod select;
mod socket;
mod sockops;
mod udp;

/// Return value that lets a sock_addr call proceed.
pub(crate) const ALLOW: i32 = 1;
/// Return value that fails a connect()/sendmsg() with EPERM.
pub(crate) const DENY: i32 = 0;

/// Collapses a hook's result to exactly ALLOW or DENY. The verifier demands a
/// return value it can prove is 0 or 1, and a value reloaded from a spilled
/// `Result` has lost that range, so both arms return constants.
#[inline(always)]
pub(crate) fn verdict_of(result: Result<i32, ()>) -> i32 {
    match result {
        Ok(ALLOW) => ALLOW,
        _ => DENY,
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never taken.
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
