//! Sends one UDP datagram from an unconnected socket by a way other than
//! sendto(2), and prints one JSON line: `{"ok":true,"sent":N}` or
//! `{"ok":false,"errno":N}`. Usage: `udp_send sendmmsg|uring ADDR PAYLOAD`.
//! Used to show the sendmsg hooks also see sendmmsg(2) and io_uring's
//! IORING_OP_SENDMSG.
use std::net::SocketAddr;

use interlock_tests::sockaddr::sockaddr;
use io_uring::{opcode, types, IoUring};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(how), Some(addr)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: udp_send sendmmsg|uring ADDR PAYLOAD");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().expect("address");
    let mut payload = args.get(3).cloned().unwrap_or_else(|| "exfil".into()).into_bytes();
    let (domain, mut storage, len) = sockaddr(&addr);
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: a zeroed msghdr is valid; the fields set point at live locals.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut storage as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = len;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let res: i64 = match how.as_str() {
        "sendmmsg" => {
            let mut m = libc::mmsghdr {
                msg_hdr: msg,
                msg_len: 0,
            };
            // SAFETY: one valid mmsghdr.
            let n = unsafe { libc::sendmmsg(fd, &mut m, 1, 0) };
            if n < 0 {
                -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
            } else {
                i64::from(m.msg_len)
            }
        }
        "uring" => {
            let mut ring = IoUring::new(4).expect("io_uring_setup");
            let entry = opcode::SendMsg::new(types::Fd(fd), &msg).build();
            // SAFETY: msg and what it points at outlive the completion waited for below.
            unsafe { ring.submission().push(&entry).expect("submission queue full") };
            ring.submit_and_wait(1).expect("io_uring_enter");
            let res = ring.completion().next().expect("completion").result();
            i64::from(res)
        }
        other => {
            eprintln!("unknown method {other}");
            std::process::exit(2);
        }
    };
    if res < 0 {
        println!("{{\"ok\":false,\"errno\":{}}}", -res);
    } else {
        println!("{{\"ok\":true,\"sent\":{res}}}");
    }
}
