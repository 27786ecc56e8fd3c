//! sock_ops: when a redirected socket is established, publish its record under
//! the address the proxy sees as its accepted peer; when it closes, drop both
//! entries so nothing leaks.
//!
//! FAILS OPEN here, CLOSED overall: if the record cannot be published, the
//! proxy finds none and refuses the connection.
use aya_ebpf::{
    bindings::{BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_TCP_CLOSE},
    helpers::generated::bpf_get_socket_cookie,
    macros::sock_ops,
    programs::SockOpsContext,
};
use aya_log_ebpf::warn;
use gateway_common::{ConnRecord, HandoffKey, FAMILY_V4, FAMILY_V6};

use crate::{
    connect::mapped_marker,
    maps::{HANDOFF, SOCKETS},
};

const AF_INET: u32 = 2;

#[sock_ops]
pub fn interlock_handoff(ctx: SockOpsContext) -> u32 {
    try_handoff(&ctx);
    0
}

fn try_handoff(ctx: &SockOpsContext) {
    let op = ctx.op();
    if op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_STATE_CB {
        return;
    }
    // SAFETY: helper valid in sock_ops programs with their own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    // SAFETY: LRU values stay valid for the duration of the program; copied out.
    let Some(record) = (unsafe { SOCKETS.get(&cookie) }).copied() else {
        return;
    };
    let key = handoff_key(ctx, &record);
    if op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        if let Err(e) = HANDOFF.insert(&key, &record, 0) {
            // Said aloud: the proxy then finds the socket's own record by
            // its cookie, or refuses the connection ("no kernel record").
            warn!(ctx, "hand-off record not published (error {}); port {}", e, key.port);
        }
        // Ask for state callbacks so the close below cleans up.
        let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    } else if ctx.arg(1) == BPF_TCP_CLOSE {
        // Only this socket's own hand-off entry. The key is the local address
        // and port alone, and a port can already carry a newer connection to
        // another destination while this one is still closing (ports are
        // shared across destinations): removing by key alone deleted that
        // connection's record before the proxy took it, and it was refused.
        // SAFETY: LRU values stay valid for the duration of the program; read at once.
        let ours = unsafe { HANDOFF.get(&key) }.is_some_and(|r| r.socket_cookie == cookie);
        if ours {
            let _ = HANDOFF.remove(&key);
        }
        let _ = SOCKETS.remove(&cookie);
    }
}

/// The agent socket's local address, normalised the way the proxy sees it:
/// an IPv4-mapped IPv6 address becomes plain IPv4.
fn handoff_key(ctx: &SockOpsContext, record: &ConnRecord) -> HandoffKey {
    let mut key = HandoffKey {
        netns_cookie: record.netns_cookie,
        addr: [0; 16],
        port: ctx.local_port() as u16,
        family: FAMILY_V4,
        _pad: 0,
    };
    if ctx.family() == AF_INET {
        key.addr[..4].copy_from_slice(&ctx.local_ip4().to_ne_bytes());
        return key;
    }
    let words = ctx.local_ip6();
    if words[0] == 0 && words[1] == 0 && words[2] == mapped_marker() {
        key.addr[..4].copy_from_slice(&words[3].to_ne_bytes());
    } else {
        key.family = FAMILY_V6;
        for (i, w) in words.iter().enumerate() {
            key.addr[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
    }
    key
}
