//! Plaintext HTTP targets: inspected per request, and a credential is only
//! ever sent to an address of the target.
use interlock_tests::{
    client::ClientResult, server::HTTP_BODY, unique, Client, Gateway, GatewayOptions, TestCgroup, Upstream,
};

/// curl from `cg` with one extra header; stdout ends with the status code.
fn get(cg: &TestCgroup, header: &str, url: &str) -> ClientResult {
    Client::new(cg).run(
        "curl",
        &["-sS", "--max-time", "10", "-H", header, "-w", "\n%{http_code}", url],
    )
}

/// An origin on 127.0.0.2 and a gateway inspecting it as the plaintext
/// HTTP target `plain`, with extra `[listener]` lines.
fn plain_target(cg: &TestCgroup, listener: Vec<String>) -> (Upstream, Gateway) {
    let up = Upstream::start("127.0.0.2");
    let target = "[[targets]]\nname = \"plain\"\ncidrs = [\"127.0.0.2/32\"]\nprotocol = \"http\"\n".to_owned();
    let gw = Gateway::start(
        cg,
        GatewayOptions {
            listener,
            extra_toml: vec![target],
            ..Default::default()
        },
    );
    (up, gw)
}

#[test]
fn credentials_go_only_to_the_targets_own_addresses() {
    let cg = TestCgroup::new(&unique("plain"));
    let real = Upstream::start("127.0.0.2");
    let elsewhere = Upstream::start("127.0.0.3");
    let dir = std::env::temp_dir().join(unique("plainkey"));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key");
    std::fs::write(&key, "internal-secret").unwrap();
    let target = format!(
        "[[targets]]\nname = \"internal\"\nhosts = [\"api.internal\"]\ncidrs = [\"127.0.0.2/32\"]\nprotocol = \"http\"\ncredential = {{ header = \"x-api-key\", file = \"{}\" }}\n",
        key.display()
    );
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![target],
            ..Default::default()
        },
    );
    let get = |addr: &std::net::SocketAddr| get(&cg, "Host: api.internal", &format!("http://{addr}/x"));
    let ok = get(&real.addr);
    assert!(
        ok.stdout.starts_with(HTTP_BODY) && ok.stdout.ends_with("200"),
        "{} {}",
        ok.stdout,
        ok.stderr
    );
    // Naming the host while dialling another address does not make it the
    // target: judged by its address alone (undeclared, here allowed raw),
    // nothing is inspected there and no credential is injected.
    let spoofed = get(&elsewhere.addr);
    assert!(spoofed.stdout.ends_with("200"), "{}", spoofed.stdout);
    let ev = gw.events().wait_connection(|e| e["orig_dst"] == elsewhere.dst());
    assert_eq!(ev["target"], elsewhere.dst(), "{ev}");
    let exchanges: Vec<_> = gw
        .events()
        .all()
        .into_iter()
        .filter(|e| e["event"] == "http_exchange")
        .collect();
    assert_eq!(exchanges.len(), 1, "{exchanges:#?}");
    assert_eq!(exchanges[0]["target"], "internal");
    assert_eq!(exchanges[0]["credential_injected"], true);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_request_head_over_the_limit_gets_431_and_never_reaches_the_upstream() {
    let cg = TestCgroup::new(&unique("bighead"));
    let (up, gw) = plain_target(&cg, Vec::new());
    let get = |header_bytes: usize| {
        let header = format!("X-Big: {}", "a".repeat(header_bytes));
        get(&cg, &header, &format!("http://{}/x", up.addr))
    };
    // Under the default 8 KiB: served.
    let ok = get(6 << 10);
    assert!(ok.stdout.ends_with("200"), "{} {}", ok.stdout, ok.stderr);
    // Over it: refused by the gateway before any policy, upstream or exchange.
    let big = get(10 << 10);
    assert!(big.stdout.ends_with("431"), "{} {}", big.stdout, big.stderr);
    let count = |kind: &str| gw.events().all().iter().filter(|e| e["event"] == kind).count();
    let both_closed = interlock_tests::wait_for(10, || (count("connection") >= 2).then_some(()));
    assert!(both_closed.is_some(), "{:#?}", gw.events().all());
    assert_eq!(count("http_exchange"), 1, "{:#?}", gw.events().all());
}

#[test]
fn an_idle_keep_alive_connection_is_parked_and_serves_its_next_request() {
    use std::io::{BufRead, Write};
    let cg = TestCgroup::new(&unique("park"));
    let (up, gw) = plain_target(&cg, vec!["park_idle = \"100ms\"".into()]);
    // One request, then quiet until told to go on (a line on stdin), then a
    // second request on the same kept-alive connection.
    let script = format!(
        "import http.client, json, sys\nc = http.client.HTTPConnection('{ip}', {port}, timeout=10)\nstatuses, closes = [], []\ndef get():\n    c.request('GET', '/x', headers={{'Host': 'plain'}})\n    r = c.getresponse(); r.read()\n    statuses.append(r.status); closes.append(r.getheader('connection'))\nget()\nsock = c.sock\nprint(json.dumps({{'held': True}}), flush=True)\nsys.stdin.readline()\nget()\nprint(json.dumps({{'statuses': statuses, 'closes': closes, 'same_socket': c.sock is sock}}))\n",
        ip = up.addr.ip(),
        port = up.addr.port()
    );
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cg.enter(&mut cmd).spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("held"), "{line:?}");
    // The quiet connection is parked (shown by status) ...
    let parked = interlock_tests::wait_for(5, || {
        let status = gw.status()?;
        let conns = status["connections"].as_array()?.clone();
        (conns.len() == 1 && conns[0]["parked"] == true).then_some(())
    });
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let _ = child.wait();
    assert!(
        parked.is_some(),
        "the idle connection was not parked: {:?}",
        gw.status()
    );
    // ... and its next request is served on the same connection, kept alive.
    let report: serde_json::Value = serde_json::from_str(rest.trim()).unwrap_or_else(|e| panic!("{rest:?}: {e}"));
    assert_eq!(report["statuses"], serde_json::json!([200, 200]), "{report}");
    assert_eq!(report["closes"], serde_json::json!([null, null]), "{report}");
    assert_eq!(report["same_socket"], true, "{report}");
    let exchanges = interlock_tests::wait_for(5, || {
        let all = gw.events().all();
        let ids: Vec<_> = all
            .iter()
            .filter(|e| e["event"] == "http_exchange")
            .map(|e| e["conn_id"].clone())
            .collect();
        (ids.len() == 2).then_some(ids)
    })
    .expect("two exchanges recorded");
    assert_eq!(exchanges[0], exchanges[1], "both exchanges on one gateway connection");
}
