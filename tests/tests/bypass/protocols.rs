//! A target declared `http` or `https` is never relayed raw: a first byte
//! that comes late, a head dripped past the header timeout, or bytes that
//! are not the target's protocol are refused with the reason recorded.
use interlock_tests::Client;
use serde_json::json;

use super::{get, plain, request_policies, status, Https, HOST};

/// A card number a masking or path rule must never see slip past.
const CARD: &str = "4111 1111 1111 1111";

#[test]
fn a_slow_first_byte_to_an_https_target_is_still_inspected() {
    let s = Https::start("slowtls", Vec::new());
    let body = format!("{{\"file\": \"{CARD}\"}}");
    let post = format!(
        "POST /v1/files HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // Past the 200 ms detection wait: before the fix, a blind relay.
    let out = s.exchange(Some(HOST), json!({"pause": 0.6, "send": post}));
    let issuer = out["issuer"].as_str().unwrap_or_default();
    assert!(
        issuer.starts_with("Interlock local CA"),
        "the agent saw another certificate: {out}"
    );
    assert_eq!(status(&out), 403, "{out}");
    let ev = s.gw.events().wait("http_exchange", |e| e["path"] == "/v1/files");
    assert_eq!(ev["decision"]["outcome"], "deny", "{ev}");
}

#[test]
fn no_client_hello_within_the_header_timeout_is_refused() {
    let s = Https::start("silenttls", vec!["header_timeout = \"1s\"".into()]);
    let out = s.exchange(
        Some(HOST),
        json!({"pause": 1.6, "send": super::get("/v1/models", HOST)}),
    );
    assert_eq!(out["ok"], false, "a TLS session was made after the timeout: {out}");
    assert!(out.get("issuer").is_none(), "{out}");
    let ev = s.gw.events().wait_connection(|e| e["outcome"]["kind"] == "refused");
    let reason = ev["outcome"]["reason"].as_str().unwrap();
    assert!(reason.contains("no TLS ClientHello for HTTPS target api"), "{reason}");
    assert!(reason.contains("nothing was sent"), "{reason}");
    // Bytes that are not TLS at all: refused at once, with their own reason.
    let out = s.exchange(None, json!({"send": "SSH-2.0-OpenSSH_9.2\r\n"}));
    assert!(!out["received"].as_str().unwrap_or_default().contains("SSH"), "{out}");
    let ev = s.gw.events().wait_connection(|e| {
        e["outcome"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not a protocol the gateway knows"))
    });
    assert_eq!(ev["target"], "api", "{ev}");
}

#[test]
fn a_slow_first_byte_to_an_http_target_is_still_judged_per_request() {
    let (cg, up, gw) = plain("slowhttp", Vec::new(), request_policies());
    let spec = json!({"op": "exchange", "host": "127.0.0.2", "port": up.addr.port(), "pause": 0.6, "send": get("/forbidden", "plain")});
    let out = Client::agent(&cg).net(spec).json();
    assert_eq!(status(&out), 403, "{out}");
    assert!(up.peers().is_empty(), "the origin was reached");
    gw.events()
        .wait("http_exchange", |e| e["path"] == "/forbidden" && e["status"] == 403);
}

#[test]
fn a_head_dripped_past_the_header_timeout_is_cut_off() {
    let (cg, up, gw) = plain("slowloris", vec!["header_timeout = \"1s\"".into()], request_policies());
    // Six pieces 0.4 s apart: the head is not whole until 2 s have passed.
    let spec = json!({"op": "exchange", "host": "127.0.0.2", "port": up.addr.port(), "pieces": 6, "gap": 0.4, "timeout": 8, "send": get("/x", "plain")});
    let out = Client::agent(&cg).net(spec).json();
    assert_ne!(status(&out), 200, "served after dripping its head: {out}");
    assert!(up.peers().is_empty(), "the origin was reached");
    let ev = gw.events().wait_connection(|e| e["outcome"]["kind"] == "refused");
    let reason = ev["outcome"]["reason"].as_str().unwrap();
    assert!(reason.contains("no HTTP request for HTTP target plain"), "{reason}");
    assert!(reason.contains("did not arrive whole"), "{reason}");
}
