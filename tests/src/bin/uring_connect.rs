//! Connects with io_uring (IORING_OP_CONNECT) instead of connect(2), sends a
//! payload and prints one JSON line: `{"ok":true,"received":...}` or
//! `{"ok":false,"errno":N}`. Used to show the connect hook also sees io_uring.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::FromRawFd,
};

use interlock_tests::sockaddr::sockaddr;
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
