//! Connects with io_uring (IORING_OP_CONNECT) instead of connect(2), sends a
//! payload and prints one JSON line: `{"ok":true,"received":...}` or
//! `{"ok":false,"errno":N}`. Used to show the connect hook also sees io_uring.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::FromRawFd,
};

use io_uring::{opcode, types, IoUring};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr: SocketAddr = args
        .get(1)
        .expect("usage: uring_connect ADDR PAYLOAD")
        .parse()
        .expect("address");
    let payload = args.get(2).cloned().unwrap_or_else(|| "ping".into());
    let (domain, storage, len) = sockaddr(&addr);
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    let mut ring = IoUring::new(4).expect("io_uring_setup");
    let entry = opcode::Connect::new(types::Fd(fd), (&storage as *const libc::sockaddr_storage).cast(), len).build();
    // SAFETY: the sockaddr outlives the submission (we wait for completion below).
    unsafe { ring.submission().push(&entry).expect("submission queue full") };
    ring.submit_and_wait(1).expect("io_uring_enter");
    let res = ring.completion().next().expect("completion").result();
    if res < 0 {
        println!("{{\"ok\":false,\"errno\":{}}}", -res);
        return;
    }
    // SAFETY: fd is a connected socket we own.
    let mut stream = unsafe { TcpStream::from_raw_fd(fd) };
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(payload.as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = String::new();
    stream.read_to_string(&mut got).unwrap();
    println!(
        "{}",
        serde_json::json!({"ok": true, "received": got, "pid": std::process::id()})
    );
}

fn sockaddr(addr: &SocketAddr) -> (i32, libc::sockaddr_storage, u32) {
    // SAFETY: zeroed sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (libc::AF_INET, storage, std::mem::size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (
                libc::AF_INET6,
                storage,
                std::mem::size_of::<libc::sockaddr_in6>() as u32,
            )
        }
    }
}
