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
    // Naming the host while dialling another address does not get the secret sent there.
    let spoofed = get(&elsewhere.addr);
    assert!(spoofed.stdout.ends_with("502"), "{}", spoofed.stdout);
    assert!(spoofed.stdout.contains("credential withheld"), "{}", spoofed.stdout);
    assert!(elsewhere.peers().is_empty(), "the spoofed upstream was contacted");
    let both = interlock_tests::wait_for(5, || {
        (gw.events()
            .all()
            .iter()
            .filter(|e| e["event"] == "http_exchange")
            .count()
            == 2)
            .then_some(())
    });
    assert!(both.is_some(), "{:#?}", gw.events().all());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_request_head_over_the_limit_gets_431_and_never_reaches_the_upstream() {
    let cg = TestCgroup::new(&unique("bighead"));
    let up = Upstream::start("127.0.0.2");
    let target = "[[targets]]\nname = \"plain\"\ncidrs = [\"127.0.0.2/32\"]\nprotocol = \"http\"\n".to_owned();
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![target],
            ..Default::default()
        },
    );
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
