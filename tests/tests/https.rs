//! HTTPS through the gateway: TLS intercepted with the gateway's CA, policy
//! per request, the real credential injected, verified TLS upstream.
use std::path::PathBuf;

use interlock_tests::{https::HttpsUpstream, unique, Client, Gateway, GatewayOptions, TestCgroup};
use serde_json::Value;

const HOST: &str = "api.example.test";
const REAL_KEY: &str = "sk-real-0123456789";
/// Where agents think the API is; nothing listens there (the redirect catches it).
const API_IP: &str = "127.0.0.10";

struct Setup {
    cg: TestCgroup,
    gw: Gateway,
    _up: HttpsUpstream,
    ca: PathBuf,
    _key_dir: PathBuf,
}

fn setup(trust_upstream_ca: bool) -> Setup {
    setup_with(trust_upstream_ca, None)
}

fn setup_with(trust_upstream_ca: bool, extra_policy: Option<&str>) -> Setup {
    setup_full(trust_upstream_ca, extra_policy, "")
}

fn setup_full(trust_upstream_ca: bool, extra_policy: Option<&str>, extra_toml: &str) -> Setup {
    let cg = TestCgroup::new(&unique("https"));
    let up = HttpsUpstream::start("127.0.0.9", HOST, REAL_KEY);
    let key_dir = std::env::temp_dir().join(unique("key"));
    std::fs::create_dir_all(&key_dir).unwrap();
    let key_file = key_dir.join("openai.key");
    std::fs::write(&key_file, REAL_KEY).unwrap();
    let ca_line = if trust_upstream_ca {
        format!("ca_file = \"{}\"\n", up.ca_file.display())
    } else {
        String::new()
    };
    let target = format!(
        "[[targets]]\nname = \"api\"\nhosts = [\"{HOST}\"]\ncidrs = [\"{API_IP}/32\"]\nports = \"443\"\nprotocol = \"https\"\nllm = true\nupstream = \"{}\"\n{ca_line}credential = {{ header = \"authorization\", scheme = \"Bearer\", file = \"{}\" }}\n",
        up.addr,
        key_file.display()
    );
    let allow = extra_policy.unwrap_or(interlock_tests::gateway::ALLOW_ALL);
    let policies = vec![
        ("allow.cedar".to_owned(), allow.to_owned()),
        (
            "paths.cedar".to_owned(),
            "@id(\"no-expensive-models\")\n@reason(\"that model is not approved\")\nforbid (principal, action == Interlock::Action::\"http_request\", resource == Interlock::Target::\"api\")\nwhen { context.model like \"*-expensive\" };\n@id(\"no-admin\")\n@reason(\"admin endpoints are off limits\")\nforbid (principal, action == Interlock::Action::\"http_request\", resource == Interlock::Target::\"api\")\nwhen { context.path like \"/v1/admin*\" };\n".to_owned(),
        ),
    ];
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![target, extra_toml.to_owned()],
            policies: Some(policies),
            ..Default::default()
        },
    );
    let ca = gw.state_dir().join("ca/ca.pem");
    assert!(ca.exists(), "the gateway did not create its CA");
    Setup {
        cg,
        gw,
        _up: up,
        ca,
        _key_dir: key_dir,
    }
}

fn curl(s: &Setup, extra: &[&str], path: &str) -> (u16, Value) {
    let resolve = format!("{HOST}:443:{API_IP}");
    let url = format!("https://{HOST}{path}");
    let mut args = vec![
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        s.ca.to_str().unwrap(),
        "--resolve",
        &resolve,
    ];
    args.extend_from_slice(&["-H", "Authorization: Bearer placeholder", "-w", "\n%{http_code}"]);
    args.extend_from_slice(extra);
    args.push(&url);
    let r = Client::new(&s.cg).run("curl", &args);
    assert!(r.success, "curl failed: {}\n{}", r.stderr, s.gw.log());
    let (body, code) = r.stdout.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn curl_http1_and_http2_get_the_real_key_injected() {
    let s = setup(true);
    for version in ["--http1.1", "--http2"] {
        let (code, body) = curl(&s, &[version], "/v1/models");
        assert_eq!(code, 200, "{version}: {body}");
        assert_eq!(body["auth_ok"], true, "{body}");
        assert_eq!(
            body["authorization_headers"], 1,
            "the placeholder was not stripped: {body}"
        );
        assert_eq!(body["path"], "/v1/models");
    }
    let (code, body) = curl(&s, &["--http1.1", "-X", "POST", "-d", "{\"model\":\"m\"}"], "/v1/echo");
    assert_eq!(code, 200);
    assert_eq!(body["body"], "{\"model\":\"m\"}");
    // The mirror follows the acknowledged event by moments.
    let ev = s.gw.events().wait("http_exchange", |e| e["path"] == "/v1/echo");
    assert_eq!(ev["credential_injected"], true);
    assert_eq!(ev["target"], "api");
    assert_eq!(ev["status"], 200);
    assert!(
        !ev.to_string().contains(REAL_KEY),
        "the secret leaked into the audit trail"
    );
    // Inspected connections count their bytes like relayed ones.
    let conns = interlock_tests::wait_for(5, || {
        let c: Vec<Value> =
            s.gw.events()
                .connections()
                .into_iter()
                .filter(|e| e["target"] == "api")
                .collect();
        (c.len() >= 3).then_some(c)
    })
    .expect("connection events for the inspected sessions");
    assert!(
        conns
            .iter()
            .all(|c| c["bytes_up"].as_u64().unwrap() > 0 && c["bytes_down"].as_u64().unwrap() > 0),
        "{conns:#?}"
    );
}

#[test]
fn a_denied_path_gets_403_naming_the_policy() {
    let s = setup(true);
    let (code, body) = curl(&s, &[], "/v1/admin/keys");
    assert_eq!(code, 403);
    assert_eq!(body["error"]["policies"][0], "no-admin");
    assert_eq!(body["error"]["message"], "admin endpoints are off limits");
}

#[test]
fn an_untrusted_upstream_certificate_gives_502() {
    let s = setup(false);
    let (code, body) = curl(&s, &[], "/v1/models");
    assert_eq!(code, 502, "{body}");
    assert_eq!(body["error"]["type"], "upstream");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("certificate"),
        "{body}"
    );
    // Nothing was sent, so no credential was injected.
    let ev = s.gw.events().wait("http_exchange", |e| e["path"] == "/v1/models");
    assert_eq!(ev["status"], 502, "{ev}");
    assert_eq!(ev["credential_injected"], false, "{ev}");
}

#[test]
fn ca_export_prints_the_gateway_ca() {
    let s = setup(true);
    let out = s.gw.cli(&["ca", "export"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(&s.ca).unwrap()
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(s.ca.with_file_name("ca.key")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// Runs the OpenAI SDK client (in its own mount namespace, where
/// api.openai.com is a loopback address) through a gateway; returns its report
/// and the gateway's events.
fn openai_run(policies: Option<Vec<(String, String)>>, prompt: &str) -> (Value, Vec<Value>) {
    openai_script_run("clients/openai_client.py", policies, prompt)
}

fn openai_script_run(script: &str, policies: Option<Vec<(String, String)>>, prompt: &str) -> (Value, Vec<Value>) {
    let cg = TestCgroup::new(&unique("openai"));
    let up = HttpsUpstream::start("127.0.0.9", "api.openai.com", REAL_KEY);
    let dir = std::env::temp_dir().join(unique("openai"));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("key");
    std::fs::write(&key_file, REAL_KEY).unwrap();
    let target = format!(
        "[[targets]]\nname = \"openai\"\nhosts = [\"api.openai.com\"]\nports = \"443\"\nprotocol = \"https\"\nupstream = \"{}\"\nca_file = \"{}\"\ncredential = {{ scheme = \"Bearer\", file = \"{}\" }}\n",
        up.addr,
        up.ca_file.display(),
        key_file.display()
    );
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![target],
            policies,
            // The target names no networks: the agent's SNI binds to its
            // address through the gateway's own resolver, as on a real host.
            hosts: vec![("api.openai.com".into(), API_IP.into())],
            ..Default::default()
        },
    );
    // api.openai.com resolves to a loopback address only inside the client's
    // own mount namespace; nothing listens there, the redirect catches it.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let mut cmd = python_with_hosts(&dir, "api.openai.com", &script, prompt);
    cmd.env("OPENAI_API_KEY", "sk-placeholder-not-a-secret")
        .env("SSL_CERT_FILE", gw.state_dir().join("ca/ca.pem"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let r = Client::new(&cg).run_cmd(cmd);
    assert!(r.success, "openai client failed: {}\n{}", r.stderr, gw.log());
    // Exchange events come first; a streamed response's bodies and masking
    // events follow when the stream ends (a whole answer has its bodies in
    // the exchange event): wait until both exchanges' bodies are in and
    // nothing more arrives.
    let events = interlock_tests::wait_for(10, || {
        let all = gw.events().all();
        let count = |kind: &str| all.iter().filter(|e| e["event"] == kind).count();
        let with_bodies = all
            .iter()
            .filter(|e| e["event"] == "http_exchange" && e["bodies"].is_object())
            .count();
        if count("http_exchange") < 2 || with_bodies + count("http_body") < 2 {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let later = gw.events().all();
        (later.len() == all.len()).then_some(later)
    })
    .expect("exchange events");
    let _ = std::fs::remove_dir_all(&dir);
    (r.json(), events)
}

#[test]
fn the_openai_sdk_works_with_a_placeholder_key_streaming_and_not() {
    let (out, events) = openai_run(None, "say hello");
    assert_eq!(out["content"], "hello from the test upstream");
    assert_eq!(out["stream_parts"], serde_json::json!(["hel", "lo ", "stream"]));
    let exchanges: Vec<&Value> = events.iter().filter(|e| e["event"] == "http_exchange").collect();
    assert_eq!(exchanges.len(), 2, "{exchanges:#?}");
    assert!(exchanges
        .iter()
        .all(|e| e["target"] == "openai" && e["credential_injected"] == true && e["status"] == 200));
}

const MASKING_POLICY: &str =
    "@id(\"llm-masked\")\n@mask(\"email,credit_card\")\npermit (principal, action, resource);\n";

#[test]
fn a_card_split_across_sse_chunks_is_masked_and_prompts_are_redacted() {
    let policies = Some(vec![("masked.cedar".to_owned(), MASKING_POLICY.to_owned())]);
    let (out, events) = openai_run(policies, "my card please, and mail me at alice@example.com");
    let streamed: String = out["stream_parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(streamed, "Your card is [REDACTED:credit_card], keep it safe.");
    let exchanges: Vec<&Value> = events.iter().filter(|e| e["event"] == "http_exchange").collect();
    assert!(
        exchanges
            .iter()
            .all(|e| e["masked_request"] == serde_json::json!([{"detector": "email", "at": "messages[].content"}])),
        "{exchanges:#?}"
    );
    let masked = events
        .iter()
        .find(|e| e["event"] == "masked")
        .expect("no masking event");
    assert_eq!(
        masked["detectors"],
        serde_json::json!([{"detector": "credit_card", "at": "choices[0].delta.content"}])
    );
    // A stream's findings come after its exchange, which has none of them.
    let at = |kind: &str| events.iter().position(|e| e["event"] == kind).unwrap();
    assert!(at("http_exchange") < at("masked"), "{events:#?}");
    assert!(exchanges.iter().all(|e| e.get("masked_response").is_none()));
    assert!(
        !serde_json::to_string(&events).unwrap().contains("4111"),
        "a card number reached the audit trail"
    );
}

#[test]
fn the_upstream_receives_the_prompt_redacted() {
    let s = setup_with(true, Some(MASKING_POLICY));
    let (code, body) = curl(
        &s,
        &["-X", "POST", "-d", "{\"prompt\":\"write to bob@example.org\"}"],
        "/v1/echo",
    );
    assert_eq!(code, 200);
    assert_eq!(body["body"], "{\"prompt\":\"write to [REDACTED:email]\"}");
}

#[test]
fn an_upstream_echo_of_the_real_key_is_scrubbed() {
    let s = setup(true);
    let (code, body) = curl(&s, &[], "/v1/echo-auth");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["auth_ok"], true);
    assert_eq!(body["echoed_authorization"], "Bearer [REDACTED:credential_echo]");
    // A whole response: what was masked is on the exchange's event, and no
    // `masked` event of its own comes before (or after) it.
    let ev = s.gw.events().wait("http_exchange", |e| e["path"] == "/v1/echo-auth");
    let masked = ev["masked_response"].as_array().expect("masked_response");
    assert_eq!(masked.len(), 1, "{ev}");
    assert_eq!(masked[0]["detector"], "credential_echo", "{ev}");
    assert!(ev["bodies"]["response_body"]
        .as_str()
        .unwrap()
        .contains("[REDACTED:credential_echo]"));
    assert!(
        !s.gw.events().all().iter().any(|e| e["event"] == "masked"),
        "a whole response's findings are on its exchange"
    );
}

#[test]
fn policy_sees_the_model_of_llm_requests() {
    let s = setup(true);
    let cheap = curl(
        &s,
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            "{\"model\":\"small\",\"x\":1}",
        ],
        "/v1/echo",
    );
    assert_eq!(cheap.0, 200, "{}", cheap.1);
    assert_eq!(
        cheap.1["body"], "{\"model\":\"small\",\"x\":1}",
        "the buffered body was not forwarded intact"
    );
    let (code, body) = curl(
        &s,
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            "{\"model\":\"gpt-5-expensive\"}",
        ],
        "/v1/echo",
    );
    assert_eq!(code, 403);
    assert_eq!(body["error"]["policies"][0], "no-expensive-models");
}

#[test]
fn a_slow_client_is_cut_off_and_others_are_unaffected() {
    let cg = TestCgroup::new(&unique("slow"));
    let (_gw, _up, ca) = short_header_timeout(&cg);
    // A TLS client that sends half a request head and then nothing.
    let script = format!(
        "import socket, ssl, json\nctx = ssl.create_default_context(cafile='{}')\ns = ctx.wrap_socket(socket.create_connection(('{API_IP}', 443), timeout=15), server_hostname='{HOST}')\ns.sendall(b'GET /v1/models HTTP/1.1\\r\\nHost: {HOST}\\r\\n')\ntry:\n    got = s.recv(65536)\n    print(json.dumps({{'closed': True, 'got': got.decode(errors='replace')}}))\nexcept socket.timeout:\n    print(json.dumps({{'closed': False}}))\n",
        ca.display()
    );
    let mut slow = std::process::Command::new("python3");
    slow.args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut slow = cg.enter(&mut slow).spawn().unwrap();
    // Meanwhile a normal client is served.
    let resolve = format!("{HOST}:443:{API_IP}");
    let ok = Client::new(&cg).run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &resolve,
            &format!("https://{HOST}/v1/models"),
        ],
    );
    assert!(ok.success, "{}", ok.stderr);
    let status = slow.wait().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(slow.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(status.success(), "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["closed"], true, "the slow client was never cut off: {v}");
}

#[test]
fn plaintext_http_on_the_tls_port_gets_a_clear_400() {
    let s = setup(true);
    let r = Client::new(&s.cg).run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "-H",
            &format!("Host: {HOST}"),
            &format!("http://{API_IP}:443/v1/models"),
        ],
    );
    assert!(r.success, "{}", r.stderr);
    assert!(r.stdout.ends_with("400"), "{}", r.stdout);
    assert!(r.stdout.contains("requires TLS"));
}

#[test]
fn python_httpx_through_interception() {
    let s = setup(true);
    let dir = std::env::temp_dir().join(unique("httpx"));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = serde_json::json!({"op": "httpx", "url": format!("https://{HOST}/v1/models")}).to_string();
    let mut cmd = python_with_hosts(&dir, HOST, &interlock_tests::client::netclient(), &spec);
    cmd.env("SSL_CERT_FILE", &s.ca)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let r = Client::new(&s.cg).run_cmd(cmd);
    let _ = std::fs::remove_dir_all(&dir);
    let out = r.json();
    assert_eq!(out["status"], 200, "{out} {}", r.stderr);
    let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["auth_ok"], true);
}

#[test]
fn websocket_upgrades_pass_through_with_the_real_key() {
    let s = setup(true);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/ws_client.py");
    let r = Client::new(&s.cg).run(
        "python3",
        &[script.to_str().unwrap(), API_IP, HOST, s.ca.to_str().unwrap()],
    );
    let out = r.json();
    assert!(out["status"].as_str().unwrap().contains(" 101 "), "{out} {}", r.stderr);
    assert_eq!(out["echo"], "echo: hello ws");
}

#[test]
fn upstream_connections_are_reused_across_agent_connections() {
    let s = setup(true);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (code, body) = curl(&s, &["--http1.1"], "/v1/models");
        assert_eq!(code, 200);
        seen.push(body["connections"].as_u64().unwrap());
    }
    assert_eq!(
        seen,
        vec![1, 1, 1],
        "each agent connection opened its own upstream connection"
    );
}

#[test]
fn idle_agent_connections_hold_no_upstream_connection() {
    // Three agent connections, each asks once and then stays open (idle):
    // the upstream connection is lent per exchange, so all three answers
    // came over the one upstream connection, none kept per idle agent.
    let s = setup(true);
    let script = r#"
import http.client, json, socket, ssl, sys
ip, host, ca = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=ca)
held, seen = [], []
for _ in range(3):
    conn = http.client.HTTPConnection(host)
    conn.sock = ctx.wrap_socket(socket.create_connection((ip, 443)), server_hostname=host)
    conn.request("GET", "/v1/models")
    seen.append(json.loads(conn.getresponse().read())["connections"])
    held.append(conn)
print(json.dumps({"connections": seen}))
"#;
    let r = Client::new(&s.cg).run("python3", &["-c", script, API_IP, HOST, s.ca.to_str().unwrap()]);
    assert!(r.success, "{}", r.stderr);
    assert_eq!(r.json()["connections"], serde_json::json!([1, 1, 1]), "{}", r.stdout);
}

#[test]
fn an_openai_agents_sdk_agent_runs_a_tool_call_end_to_end() {
    let (out, events) = openai_script_run("clients/agents_client.py", None, "");
    assert_eq!(out["tool_calls"], serde_json::json!(["42"]), "{out}");
    assert_eq!(out["final"], "Final answer: order 42 has shipped");
    let exchanges: Vec<&Value> = events.iter().filter(|e| e["event"] == "http_exchange").collect();
    assert_eq!(exchanges.len(), 2, "model, tool result, model: {exchanges:#?}");
    assert!(exchanges
        .iter()
        .all(|e| e["credential_injected"] == true && e["status"] == 200));
}

#[test]
fn masking_rules_apply_to_their_json_fields_in_responses() {
    let rules = "[[masking.rules]]\nname = \"echoed-contacts\"\ndetectors = [\"email\"]\nstyle = \"placeholder\"\nfields = [\"body\"]\n";
    let policy = "@id(\"masked-fields\")\n@mask(\"echoed-contacts\")\npermit (principal, action, resource);\n";
    let s = setup_full(true, Some(policy), rules);
    let (code, body) = curl(
        &s,
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            "{\"prompt\":\"mail bob@ex.io\"}",
        ],
        "/v1/echo",
    );
    assert_eq!(code, 200, "{body}");
    // The field rule masks only `body` of the response, in the rule's style.
    assert_eq!(body["body"], "{\"prompt\":\"mail xxx@xx.xx\"}");
    assert_eq!(body["path"], "/v1/echo");
    let ev = s.gw.events().wait("http_exchange", |e| e["path"] == "/v1/echo");
    assert_eq!(
        ev["masked_response"],
        serde_json::json!([{"detector": "email", "at": "body"}]),
        "{ev}"
    );
    assert!(!s.gw.events().all().iter().any(|e| e["event"] == "masked"));
}

#[test]
fn oauth2_client_credentials_tokens_are_fetched_cached_and_injected() {
    let cg = TestCgroup::new(&unique("oauth"));
    let up = HttpsUpstream::start("127.0.0.9", HOST, REAL_KEY);
    let dir = std::env::temp_dir().join(unique("oauth"));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("client-secret");
    std::fs::write(&secret, "client-secret-xyz\n").unwrap();
    let target = format!(
        "[[targets]]\nname = \"api\"\nhosts = [\"{HOST}\"]\ncidrs = [\"{API_IP}/32\"]\nports = \"443\"\nprotocol = \"https\"\nupstream = \"{up}\"\nca_file = \"{ca}\"\n[targets.credential.oauth2]\ntoken_url = \"https://{up}/oauth/token\"\nclient_id = \"interlock-test\"\nclient_secret_file = \"{secret}\"\nca_file = \"{ca}\"\n",
        up = up.addr,
        ca = up.ca_file.display(),
        secret = secret.display()
    );
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![target],
            ..Default::default()
        },
    );
    let s = Setup {
        cg,
        ca: gw.state_dir().join("ca/ca.pem"),
        gw,
        _up: up,
        _key_dir: dir,
    };
    for _ in 0..2 {
        let (code, body) = curl(&s, &[], "/v1/models");
        assert_eq!(code, 200, "{body}\n{}", s.gw.log());
        assert_eq!(body["auth_ok"], true, "the fetched token was not injected: {body}");
        assert_eq!(body["token_requests"], 1, "the token was not cached: {body}");
    }
}

#[test]
fn malformed_and_oversized_requests_get_400_and_431() {
    let s = setup(true);
    let script = format!(
        "import socket, ssl, json\nctx = ssl.create_default_context(cafile='{}')\nctx.set_alpn_protocols(['http/1.1'])\ndef ask(raw):\n    s = ctx.wrap_socket(socket.create_connection(('{API_IP}', 443), timeout=10), server_hostname='{HOST}')\n    s.sendall(raw)\n    data = b''\n    while b'\\r\\n' not in data:\n        chunk = s.recv(4096)\n        if not chunk:\n            break\n        data += chunk\n    return data.split(b'\\r\\n')[0].decode()\nbig = b'GET / HTTP/1.1\\r\\nHost: {HOST}\\r\\nX-Big: ' + b'a' * 20000 + b'\\r\\n\\r\\n'\nprint(json.dumps({{'malformed': ask(b'GARBAGE\\x00\\x01 / HTTP/1.1\\r\\n\\r\\n'), 'big': ask(big)}}))\n",
        s.ca.display()
    );
    let r = Client::new(&s.cg).run("python3", &["-c", &script]);
    let out = r.json();
    assert!(
        out["malformed"].as_str().unwrap().contains(" 400 "),
        "{out} {}",
        r.stderr
    );
    assert!(out["big"].as_str().unwrap().contains(" 431 "), "{out}");
    // The gateway still serves others.
    assert_eq!(curl(&s, &[], "/v1/models").0, 200);
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let cg = TestCgroup::new(&unique("idlekeep"));
    let (_gw, _up, ca) = short_header_timeout(&cg);
    // One whole request and response, then silence on the kept-alive connection.
    let script = format!(
        "import socket, ssl, json\nctx = ssl.create_default_context(cafile='{}')\nctx.set_alpn_protocols(['http/1.1'])\ns = ctx.wrap_socket(socket.create_connection(('{API_IP}', 443), timeout=15), server_hostname='{HOST}')\ns.sendall(b'GET /v1/models HTTP/1.1\\r\\nHost: {HOST}\\r\\n\\r\\n')\nhead = b''\nwhile b'\\r\\n\\r\\n' not in head:\n    head += s.recv(1)\nlength = int([l.split(b':')[1] for l in head.split(b'\\r\\n') if l.lower().startswith(b'content-length')][0])\nbody = b''\nwhile len(body) < length:\n    body += s.recv(length - len(body))\ntry:\n    print(json.dumps({{'first': head.split(b' ')[1].decode(), 'closed': s.recv(1) == b''}}))\nexcept socket.timeout:\n    print(json.dumps({{'closed': False}}))\n",
        ca.display()
    );
    let r = Client::new(&cg).run("python3", &["-c", &script]);
    let out = r.json();
    assert_eq!(out["first"], "401", "{out} {}", r.stderr);
    assert_eq!(out["closed"], true, "an idle keep-alive connection stayed open: {out}");
}

/// A gateway for an HTTPS target with a 1 s request-head timeout.
fn short_header_timeout(cg: &TestCgroup) -> (Gateway, HttpsUpstream, PathBuf) {
    let up = HttpsUpstream::start("127.0.0.9", HOST, REAL_KEY);
    let target = format!(
        "[[targets]]\nname = \"api\"\nhosts = [\"{HOST}\"]\ncidrs = [\"{API_IP}/32\"]\nports = \"443\"\nprotocol = \"https\"\nupstream = \"{}\"\nca_file = \"{}\"\n",
        up.addr,
        up.ca_file.display()
    );
    let opts = GatewayOptions {
        listener: vec!["header_timeout = \"1s\"".into()],
        extra_toml: vec![target],
        ..Default::default()
    };
    let gw = Gateway::start(cg, opts);
    let ca = gw.state_dir().join("ca/ca.pem");
    (gw, up, ca)
}

#[test]
fn an_open_connection_gets_the_new_policy_on_its_next_request() {
    let s = setup(true);
    // Requests on one kept-alive connection until one is refused (bounded).
    let script = format!(
        "import http.client, ssl, json, time\nctx = ssl.create_default_context(cafile='{}')\nc = http.client.HTTPSConnection('{API_IP}', 443, context=ctx, timeout=10)\nstatuses, socks = [], set()\ndeadline = time.time() + 15\nwhile time.time() < deadline:\n    c.request('GET', '/v1/models', headers={{'Host': '{HOST}'}})\n    r = c.getresponse(); r.read()\n    statuses.append(r.status); socks.add(id(c.sock))\n    if len(statuses) == 1:\n        print(json.dumps({{'held': True}}), flush=True)\n    if r.status == 403:\n        break\n    time.sleep(0.2)\nprint(json.dumps({{'statuses': statuses, 'connections': len(socks)}}))\n",
        s.ca.display()
    );
    // Dial the API address, with SNI naming the host.
    let script = script.replace(
        "c = http.client.HTTPSConnection",
        "class C(http.client.HTTPSConnection):\n    def connect(self):\n        import socket\n        self.sock = ctx.wrap_socket(socket.create_connection((self.host, self.port), timeout=10), server_hostname='api.example.test')\nc = C",
    );
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = s.cg.enter(&mut cmd).spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    assert!(first.contains("held"), "{first}");
    std::fs::write(
        s.gw.policy_dir().join("late.cedar"),
        "@id(\"late-forbid\")\nforbid (principal, action == Interlock::Action::\"http_request\", resource) when { context.path == \"/v1/models\" };\n",
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let _ = child.wait();
    let report: Value = serde_json::from_str(rest.trim()).unwrap_or_else(|e| panic!("{rest:?}: {e}"));
    let statuses = report["statuses"].as_array().unwrap();
    assert_eq!(statuses.first().unwrap(), 200, "{report}");
    assert_eq!(
        statuses.last().unwrap(),
        403,
        "the new policy never reached the open connection: {report}"
    );
    assert_eq!(report["connections"], 1, "the connection was not kept: {report}");
}

/// `python3 SCRIPT ARG` in its own mount namespace, where /etc/hosts (a file
/// in `dir`, bind-mounted) maps `name` to the API address; output piped.
fn python_with_hosts(dir: &std::path::Path, name: &str, script: &std::path::Path, arg: &str) -> std::process::Command {
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n{API_IP} {name}\n")).unwrap();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "--mount",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/hosts && exec python3 \"$1\" \"$2\"",
    ])
    .arg(&hosts)
    .arg(script)
    .arg(arg)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    cmd
}
