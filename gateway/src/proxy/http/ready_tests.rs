use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Body as _, Frame};

use super::{take_ready, take_until, Body};

fn full(text: &'static str) -> Body {
    Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed()
}

/// A body of `ready` frames, then one more sent on the returned channel.
fn streaming(ready: &[&'static str]) -> (Body, tokio::sync::mpsc::Sender<&'static str>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<&'static str>(4);
    let first = futures_util::stream::iter(ready.to_vec());
    let later = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) });
    let frames = first
        .chain(later)
        .map(|t| Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(t.as_bytes()))));
    (BodyExt::boxed(StreamBody::new(frames)), tx)
}

async fn all(body: Body) -> Vec<u8> {
    body.collect().await.expect("body").to_bytes().to_vec()
}

#[tokio::test]
async fn a_body_at_hand_is_taken_whole_and_given_back() {
    let taken = take_ready(full("hello"), 1024);
    assert!(taken.ended());
    assert_eq!(taken.data(1024), (b"hello".to_vec(), 5));
    assert_eq!(taken.data(3), (b"hel".to_vec(), 5), "capped, full length kept");
    let body = taken.into_body();
    assert!(!body.is_end_stream());
    assert_eq!(body.size_hint().exact(), Some(5));
    assert_eq!(all(body).await, b"hello");
}

#[tokio::test]
async fn an_empty_body_has_ended_with_nothing_taken() {
    let body = Empty::<Bytes>::new().map_err(|never| match never {}).boxed();
    let taken = take_ready(body, 1024);
    assert!(taken.ended());
    assert_eq!(taken.data(1024), (Vec::new(), 0));
    assert!(taken.into_body().is_end_stream());
}

#[tokio::test]
async fn a_streaming_body_keeps_what_was_taken_and_goes_on() {
    let (body, more) = streaming(&["ab", "cd"]);
    let taken = take_ready(body, 1024);
    assert!(!taken.ended(), "the stream waits for more");
    assert_eq!(taken.data(1024), (b"abcd".to_vec(), 4));
    let body = taken.into_body();
    let rest = tokio::spawn(all(body));
    more.send("ef").await.unwrap();
    drop(more);
    assert_eq!(rest.await.unwrap(), b"abcdef");
}

#[tokio::test]
async fn taking_stops_past_the_limit_and_loses_nothing() {
    let (body, more) = streaming(&["1234", "5678", "9abc"]);
    drop(more);
    let taken = take_ready(body, 5);
    assert!(!taken.ended(), "stopped at the limit, not at the end");
    assert_eq!(taken.data(1024).1, 8);
    assert_eq!(all(taken.into_body()).await, b"123456789abc");
}

#[tokio::test]
async fn the_rest_that_comes_in_time_is_taken_and_a_late_rest_streams_on() {
    let soon = || tokio::time::Instant::now() + std::time::Duration::from_millis(200);
    let (body, more) = streaming(&["ab"]);
    let taken = take_ready(body, 1024);
    let sender = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        more.send("cd").await.unwrap();
    });
    let taken = take_until(taken, 1024, soon()).await;
    sender.await.unwrap();
    assert!(taken.ended(), "the body ended within the wait");
    assert_eq!(taken.data(1024), (b"abcd".to_vec(), 4));

    let (body, more) = streaming(&["ab"]);
    let past = tokio::time::Instant::now() + std::time::Duration::from_millis(20);
    let taken = take_until(take_ready(body, 1024), 1024, past).await;
    assert!(!taken.ended(), "nothing more came before the deadline");
    let rest = tokio::spawn(all(taken.into_body()));
    more.send("cd").await.unwrap();
    drop(more);
    assert_eq!(rest.await.unwrap(), b"abcd");
}
