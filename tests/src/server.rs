//! Fake upstream hosts on 127.x and ::1: echo for raw bytes, a minimal HTTP
//! reply for `GET`. They record the peers they saw, to tell a redirected
//! connection (peer = the gateway) from a passed one (peer = the client).
use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    thread,
};

/// A running fake upstream.
pub struct Upstream {
    /// Address it listens on.
    pub addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
}

/// Body of the HTTP reply.
pub const HTTP_BODY: &str = "hello from upstream\n";

impl Upstream {
    /// Listens on `ip` (any free port).
    pub fn start(ip: &str) -> Self {
        Self::start_with(ip, serve)
    }

    /// Listens on `ip:port` (a well-known port a test needs, such as 53).
    pub fn start_on(ip: &str, port: u16) -> Self {
        Self::start_at(ip, port, serve)
    }

    /// A server that reads until EOF and only then answers `got N bytes`:
    /// it can only answer if the agent's half-close reached it.
    pub fn start_counting(ip: &str) -> Self {
        Self::start_with(ip, |mut s: TcpStream| {
            let mut all = Vec::new();
            if s.read_to_end(&mut all).is_ok() {
                let _ = s.write_all(format!("got {} bytes", all.len()).as_bytes());
            }
            let _ = s.shutdown(Shutdown::Write);
        })
    }

    fn start_with(ip: &str, handler: fn(TcpStream)) -> Self {
        Self::start_at(ip, 0, handler)
    }

    fn start_at(ip: &str, port: u16, handler: fn(TcpStream)) -> Self {
        let addr: SocketAddr = format!(
            "{}:{port}",
            if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip.to_owned()
            }
        )
        .parse()
        .unwrap();
        assert!(addr.ip().is_loopback(), "test upstreams must be on loopback");
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = peers.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Ok(peer) = stream.peer_addr() {
                    seen.lock().unwrap().push(peer);
                }
                thread::spawn(move || handler(stream));
            }
        });
        Self { addr, peers }
    }

    /// `ip:port` as events show it.
    pub fn dst(&self) -> String {
        self.addr.to_string()
    }

    /// Peers seen so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

/// Reads from `s` into `head` until it holds a whole HTTP head (the blank
/// line); false when the peer closed or failed first.
pub fn read_head(s: &mut TcpStream, head: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

fn serve(mut s: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut first = Vec::new();
    // Look at the first bytes to pick HTTP or echo.
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = s.write_all(&first);
                let _ = s.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => first.extend_from_slice(&buf[..n]),
        }
        if first.len() >= 4 {
            break;
        }
    }
    if first.starts_with(b"GET ") {
        if !read_head(&mut s, &mut first) {
            return;
        }
        // The request line as it arrived, so a test can tell what went upstream.
        let line = String::from_utf8_lossy(first.split(|b| *b == b'\r').next().unwrap_or_default()).into_owned();
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Request-Line: {line}\r\nConnection: close\r\n\r\n{HTTP_BODY}",
            HTTP_BODY.len()
        );
        let _ = s.write_all(reply.as_bytes());
        let _ = s.shutdown(Shutdown::Write);
        return;
    }
    if s.write_all(&first).is_err() {
        return;
    }
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = s.shutdown(Shutdown::Write);
}
