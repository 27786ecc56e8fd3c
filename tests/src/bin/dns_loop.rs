//! A bounded resolver loop: asks SERVER (ip:port) for NAME... in turn over
//! UDP, one query outstanding, COUNT queries in all (each waits at most 2 s),
//! and prints one JSON line with the latency percentiles in microseconds:
//! `{"count":N,"timeouts":N,"refused":N,"p50_us":..,"p99_us":..,"qps":..}`.
//! A NAME `*.zone` asks a name never asked before each time
//! (`q<i>-<pid>.zone`), so no cache on the way can answer it.
//! Run in an agent cgroup, it measures the path through the gateway.
use std::{
    net::{SocketAddr, UdpSocket},
    str::FromStr,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RecordType},
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: dns_loop SERVER COUNT NAME...");
        std::process::exit(2);
    }
    let server: SocketAddr = args[1].parse().expect("server ip:port");
    let count: usize = args[2].parse().expect("count");
    let pid = std::process::id();
    let name_of = |i: usize| -> Name {
        let n = &args[3 + i % (args.len() - 3)];
        match n.strip_prefix("*.") {
            Some(zone) => Name::from_str(&format!("q{i}-{pid}.{zone}")).expect("name"),
            None => Name::from_str(n).expect("name"),
        }
    };
    let bind = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = UdpSocket::bind(bind).expect("bind");
    socket.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let (mut rtts, mut timeouts, mut refused) = (Vec::with_capacity(count), 0usize, 0usize);
    let mut buf = [0u8; 4096];
    let began = Instant::now();
    for i in 0..count {
        let id = (i % 65_536) as u16;
        let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(name_of(i), RecordType::A));
        let bytes = msg.to_vec().expect("query");
        let sent = Instant::now();
        socket.send_to(&bytes, server).expect("send");
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, _)) => match Message::from_vec(&buf[..n]) {
                    Ok(reply) if reply.metadata.id == id => {
                        rtts.push(sent.elapsed().as_secs_f64() * 1e6);
                        if reply.metadata.response_code != ResponseCode::NoError {
                            refused += 1;
                        }
                        break;
                    }
                    // A late answer to an earlier query: keep waiting.
                    _ => continue,
                },
                Err(_) => {
                    timeouts += 1;
                    break;
                }
            }
        }
    }
    let secs = began.elapsed().as_secs_f64();
    rtts.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        rtts.get(((rtts.len() as f64 * p) as usize).min(rtts.len().saturating_sub(1)))
            .copied()
    };
    println!(
        "{}",
        serde_json::json!({
            "count": rtts.len(), "timeouts": timeouts, "refused": refused,
            "p50_us": pct(0.5), "p99_us": pct(0.99), "qps": rtts.len() as f64 / secs,
        })
    );
}
