use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::*;
use crate::proxy::counted::Counted;

/// A loopback TCP pair: (client, server).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

/// Serves `server` with a handler that answers "ok" after `delay`; returns
/// the stats and the serving task.
fn serve(
    server: TcpStream,
    park_after: Duration,
    delay: Duration,
) -> (Arc<RelayStats>, tokio::task::JoinHandle<Result<Ended, String>>) {
    let stats = Arc::new(RelayStats::default());
    let state = Arc::new(ParkState::default());
    let svc = {
        let state = state.clone();
        service_fn(move |_req| {
            let exchange = state.begin();
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                let body = Full::new(Bytes::from_static(b"ok"))
                    .map_err(|never| match never {})
                    .boxed();
                Ok::<_, Infallible>(tracked(Response::new(body), exchange))
            })
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(2));
    let h1 = H1 {
        builder,
        service: svc,
        park_after,
        header_timeout: Duration::from_secs(2),
        state,
        stats: stats.clone(),
    };
    let io = Counted::new(server, stats.clone());
    (stats, tokio::spawn(serve_h1(io, Bytes::new(), h1)))
}

/// Sends one request and reads its whole response (the body is "ok").
async fn exchange(client: &mut TcpStream) -> String {
    client.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    read_until(client, |got| got.ends_with(b"\r\n\r\nok")).await
}

/// Reads until `done` says the bytes so far are complete (5 s at most).
async fn read_until(client: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !done(&got) {
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("response in time")
            .unwrap();
        assert!(n > 0, "closed mid-response: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

#[tokio::test]
async fn reads_come_from_ahead_first_and_a_parking_shutdown_leaves_the_stream_open() {
    let (mut client, server) = pair().await;
    let state = Arc::new(ParkState::default());
    let mut stream = Parkable::new(server, Bytes::from_static(b"abc"), state.clone());
    client.write_all(b"def").await.unwrap();
    let mut got = [0u8; 2];
    stream.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ab");
    let mut rest = [0u8; 4];
    stream.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"cdef");
    state.parking.store(true, Relaxed);
    stream.shutdown().await.unwrap();
    stream.write_all(b"still open").await.unwrap();
    let mut echo = [0u8; 10];
    client.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"still open");
    state.parking.store(false, Relaxed);
    stream.shutdown().await.unwrap();
    assert_eq!(client.read(&mut echo).await.unwrap(), 0, "a real shutdown closes");
}

#[tokio::test]
async fn a_quiet_connection_is_parked_and_serves_its_next_request() {
    let (mut client, server) = pair().await;
    let (stats, task) = serve(server, Duration::from_millis(50), Duration::ZERO);
    assert!(!stats.is_parked(), "nothing is parked before the first request");
    let first = exchange(&mut client).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(!first.to_ascii_lowercase().contains("connection: close"), "{first}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !stats.is_parked() {
        assert!(tokio::time::Instant::now() < deadline, "never parked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The same socket, after parking: served by a new hyper connection.
    for _ in 0..3 {
        let next = exchange(&mut client).await;
        assert!(next.starts_with("HTTP/1.1 200"), "{next}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    drop(client);
    let ended = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended, Ok(Ended::Closed));
}

#[tokio::test]
async fn a_slow_response_is_not_parked_and_keeps_the_connection_alive() {
    let (mut client, server) = pair().await;
    // The handler takes six times the park delay.
    let (stats, task) = serve(server, Duration::from_millis(50), Duration::from_millis(300));
    let first = exchange(&mut client).await;
    assert!(
        !first.to_ascii_lowercase().contains("connection: close"),
        "a slow exchange was shut down: {first}"
    );
    let second = exchange(&mut client).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(!task.is_finished());
    drop((client, stats));
}

#[tokio::test]
async fn a_pipelined_request_read_with_the_previous_one_is_served() {
    let (mut client, server) = pair().await;
    let (_stats, _task) = serve(server, Duration::from_millis(50), Duration::ZERO);
    // Two requests in one write: the second is read ahead by hyper.
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\nGET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let got = read_until(&mut client, |got| got.windows(2).filter(|w| w == b"ok").count() == 2).await;
    assert_eq!(got.matches("HTTP/1.1 200").count(), 2, "{got}");
}

#[tokio::test]
async fn a_parked_connection_without_a_next_request_is_closed_at_the_header_timeout() {
    let (mut client, server) = pair().await;
    let (_stats, task) = serve(server, Duration::from_millis(50), Duration::ZERO);
    exchange(&mut client).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended, Ok(Ended::IdleTimeout));
    let mut buf = [0u8; 16];
    assert_eq!(client.read(&mut buf).await.unwrap(), 0, "closed once the session ended");
}

#[tokio::test]
async fn a_head_begun_while_parked_gets_only_what_is_left_of_the_header_timeout() {
    let (mut client, server) = pair().await;
    // Header timeout 2 s, parked after 50 ms of quiet.
    let (stats, task) = serve(server, Duration::from_millis(50), Duration::ZERO);
    exchange(&mut client).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !stats.is_parked() {
        assert!(tokio::time::Instant::now() < deadline, "never parked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // 1.5 s into the 2 s, the first bytes of a head that never ends.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let sent = tokio::time::Instant::now();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await;
    // ~0.45 s were left; a new hyper connection with its whole timeout
    // would have waited 2 s.
    assert!(matches!(closed, Ok(Ok(0) | Err(_))), "{closed:?}");
    assert!(
        sent.elapsed() < Duration::from_millis(1500),
        "closed after {:?}",
        sent.elapsed()
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(ended.is_err(), "a head timeout is the agent's error: {ended:?}");
}
