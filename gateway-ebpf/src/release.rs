//! cgroup/sock_release: forgets the record of an agent's socket when the
//! socket goes away. TCP records are dropped at close by `sockops`; UDP
//! sockets (a resolver opens one per lookup) have no such moment, and their
//! records would otherwise crowd the LRU map until live ones are evicted.
//!
//! FAILS OPEN, harmlessly: it only deletes, and the kernel ignores a
//! sock_release program's verdict (it always lets the socket go).
use aya_ebpf::{helpers::generated::bpf_get_socket_cookie, macros::cgroup_sock, programs::SockContext};

use crate::{maps::SOCKETS, ALLOW};

#[cgroup_sock(sock_release)]
pub fn interlock_sock_release(ctx: SockContext) -> i32 {
    // SAFETY: the context is a valid socket for this hook.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
    // Most sockets have no record; a failed delete is the common case.
    let _ = SOCKETS.remove(&cookie);
    ALLOW
}
