//! Request paths are normalised before policy, and the normal form is what
//! goes upstream: dot segments, encoded dots and slash runs cannot walk
//! around a path rule; ambiguous encodings are refused.
use interlock_tests::Client;
use serde_json::json;

use super::{get, plain, status, Https, HOST};

#[test]
fn dot_segments_cannot_walk_around_a_path_permit() {
    let policies = vec![(
        "p.cedar".to_owned(),
        "@id(\"connect\")\npermit (principal, action == Interlock::Action::\"connect\", resource);\n\
         @id(\"only-ok\")\npermit (principal, action == Interlock::Action::\"http_request\", resource)\nwhen { context.path like \"/ok*\" };\n"
            .to_owned(),
    )];
    let (cg, up, gw) = plain("dots", Vec::new(), policies);
    let ask = |path: &str| {
        let spec = json!({"op": "exchange", "host": "127.0.0.2", "port": up.addr.port(), "send": get(path, "plain")});
        Client::agent(&cg).net(spec).json()
    };
    for sneaky in ["/ok/../forbidden", "/ok/%2e%2E/forbidden", "/ok/./../forbidden"] {
        let out = ask(sneaky);
        assert_eq!(status(&out), 403, "{sneaky}: {out}");
    }
    gw.events()
        .wait("http_exchange", |e| e["path"] == "/forbidden" && e["status"] == 403);
    // What is allowed goes upstream in its normal form.
    let out = ask("//ok/./a/../%62");
    assert_eq!(status(&out), 200, "{out}");
    let received = out["received"].as_str().unwrap().to_ascii_lowercase();
    assert!(received.contains("x-request-line: get /ok/b http/1.1"), "{received}");
    // Ambiguous encodings: refused before policy, never forwarded.
    let before = up.peers().len();
    for ambiguous in ["/ok%2Fadmin", "/ok%5Cadmin", "/ok/..;/admin", "/ok%00"] {
        let out = ask(ambiguous);
        assert_eq!(status(&out), 400, "{ambiguous}: {out}");
    }
    assert_eq!(up.peers().len(), before, "an ambiguous path reached the origin");
    let ev = gw.events().wait("http_exchange", |e| e["status"] == 400);
    assert!(
        ev["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("request path refused"),
        "{ev}"
    );
}

#[test]
fn dot_segments_cannot_walk_around_the_upload_review_rule() {
    let s = Https::start("dotshttps", Vec::new());
    let post = format!(
        "POST /v1/chat/completions/../../files HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    let out = s.exchange(Some(HOST), json!({"send": post}));
    assert_eq!(status(&out), 403, "{out}");
    let ev = s.gw.events().wait("http_exchange", |e| e["path"] == "/v1/files");
    assert_eq!(ev["credential_injected"], false, "{ev}");
}
