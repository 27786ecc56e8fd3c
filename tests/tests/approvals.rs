//! Just-in-time review on the operator socket: held requests wait for a
//! person, proceed on approval, are refused on denial or timeout; several
//! approvers must be distinct people, nobody approves their own agent's
//! requests when the policy says so, only root and the admin group may act,
//! webhooks announce reviews, and a restart fails held requests cleanly.
use std::{process::Command, thread};

use interlock_tests::{
    gateway::{shipped, ALLOW_ALL},
    postgres::PgServer,
    python::PyServer,
    server::HTTP_BODY,
    unique, wait_for, Client, ClientResult, Gateway, GatewayOptions, TestCgroup, Upstream,
};
use serde_json::Value;

/// `nobody` and `nogroup` on Debian.
const NOBODY: u32 = 65534;

fn held_web(tag: &str, ip: &str, annotations: &str, extra: &str) -> (TestCgroup, Upstream, Gateway) {
    let cg = TestCgroup::new(&unique(tag));
    let web = Upstream::start(ip);
    let review = format!(
        "@id(\"held-paths\")\n@review\n{annotations}\nforbid (principal, action == Interlock::Action::\"http_request\", resource)\nwhen {{ context.path like \"/held*\" }};\n"
    );
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![
                format!("[[targets]]\nname = \"web\"\ncidrs = [\"{ip}/32\"]\nprotocol = \"http\"\n"),
                format!("[control]\nadmin_group = \"{NOBODY}\"\n{extra}"),
            ],
            policies: Some(vec![
                ("allow.cedar".into(), ALLOW_ALL.into()),
                ("review.cedar".into(), review),
            ]),
            ..Default::default()
        },
    );
    (cg, web, gw)
}

fn curl_in_background(cg: &TestCgroup, url: String, uid: Option<u32>) -> thread::JoinHandle<ClientResult> {
    let client = match uid {
        Some(uid) => Client::new(cg).as_uid(uid),
        None => Client::new(cg),
    };
    thread::spawn(move || client.curl(&url, 60))
}

fn reviews(gw: &Gateway) -> Vec<Value> {
    let out = gw.cli(&["approvals", "list", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits for the first pending review and returns its id.
fn pending(gw: &Gateway) -> String {
    wait_for(15, || {
        reviews(gw)
            .into_iter()
            .find(|r| r["state"] == "pending")
            .and_then(|r| r["id"].as_str().map(str::to_owned))
    })
    .expect("no review opened")
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_held_request_proceeds_once_approved_and_the_trail_names_the_approver() {
    let (cg, web, gw) = held_web("apok", "127.0.0.50", "", "");
    let agent = curl_in_background(&cg, format!("http://{}/held/1", web.addr), None);
    let id = pending(&gw);
    let review = &reviews(&gw)[0];
    assert_eq!(review["request"], "GET /held/1");
    assert_eq!(review["target"], "web");
    assert!(ok(&gw.cli(&["approvals", "approve", &id])).contains("approved"));
    let r = agent.join().unwrap();
    assert!(
        r.stdout.starts_with(HTTP_BODY) && r.stdout.ends_with("200"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    let approved = gw.events().wait("review", |e| e["change"] == "approved");
    assert_eq!(approved["by"]["issuer"], "unix");
    assert_eq!(approved["by"]["subject"], "uid:0");
    let exchange = gw.events().wait("http_exchange", |e| e["path"] == "/held/1");
    assert_eq!(exchange["decision"]["outcome"], "allow");
    assert!(exchange["decision"]["reason"]
        .as_str()
        .unwrap()
        .contains("approved by root"));
    // An approval for identical requests lets the next one through without a new review.
    let agent = curl_in_background(&cg, format!("http://{}/held/2", web.addr), None);
    let id = pending(&gw);
    ok(&gw.cli(&["approvals", "approve", &id, "--identical-for", "10m"]));
    assert!(agent.join().unwrap().stdout.ends_with("200"));
    let again = Client::new(&cg).curl(&format!("http://{}/held/2", web.addr), 10);
    assert!(again.stdout.ends_with("200"), "{}", again.stdout);
    assert_eq!(reviews(&gw).len(), 2, "the identical request opened no review");
    // An approval as a grant: the agent's later requests to the target pass
    // without review until it expires.
    let agent = curl_in_background(&cg, format!("http://{}/held/3", web.addr), None);
    let id = pending(&gw);
    ok(&gw.cli(&["approvals", "approve", &id, "--grant-for", "10m"]));
    assert!(agent.join().unwrap().stdout.ends_with("200"));
    let grants = ok(&gw.cli(&["grants", "--json"]));
    assert!(grants.contains(&format!("approved review {id}")), "{grants}");
    let later = Client::new(&cg).curl(&format!("http://{}/held/other", web.addr), 10);
    assert!(later.stdout.ends_with("200"), "{}", later.stdout);
    assert_eq!(reviews(&gw).len(), 3, "the granted request opened no review");
}

#[test]
fn denial_and_timeout_refuse_and_restart_fails_held_requests_cleanly() {
    let (cg, web, mut gw) = held_web("apdeny", "127.0.0.51", "@review_timeout(\"2s\")", "");
    let agent = curl_in_background(&cg, format!("http://{}/held/deny", web.addr), None);
    let id = pending(&gw);
    ok(&gw.cli(&["approvals", "deny", &id, "--reason", "not during the freeze"]));
    let r = agent.join().unwrap();
    assert!(
        r.stdout.ends_with("403") && r.stdout.contains("not during the freeze"),
        "{}",
        r.stdout
    );
    // Nobody decides: refused when the policy's timeout passes.
    let r = Client::new(&cg).curl(&format!("http://{}/held/late", web.addr), 20);
    assert!(
        r.stdout.ends_with("403") && r.stdout.contains("timed out"),
        "{}",
        r.stdout
    );
    // Operators cannot act on closed reviews.
    assert!(refused(&gw.cli(&["approvals", "approve", &id])).contains("already denied"));
    // Stopped while a request is held: the request fails, the record says why.
    let agent = curl_in_background(&cg, format!("http://{}/held/stop", web.addr), None);
    let _ = wait_for(15, || {
        reviews(&gw)
            .into_iter()
            .find(|r| r["state"] == "pending" && r["request"] == "GET /held/stop")
    });
    assert!(gw.stop().success());
    let r = agent.join().unwrap();
    assert!(!r.stdout.ends_with("200"), "{}", r.stdout);
    let failed = gw
        .events()
        .all()
        .into_iter()
        .find(|e| e["event"] == "review" && e["change"] == "failed")
        .expect("failed review event");
    assert!(failed["review"]["note"].as_str().unwrap().contains("gateway stopped"));
    // kill -9 while held: on the next start the record shows it failed.
    gw.spawn();
    let agent = curl_in_background(&cg, format!("http://{}/held/crash", web.addr), None);
    let _ = wait_for(15, || reviews(&gw).into_iter().find(|r| r["state"] == "pending"));
    gw.kill9();
    let _ = agent.join();
    gw.spawn();
    let restarted = gw.events().wait("review", |e| {
        e["change"] == "failed" && e["review"]["request"] == "GET /held/crash"
    });
    assert!(restarted["review"]["note"].as_str().unwrap().contains("restarted"));
}

#[test]
fn two_approvers_must_be_distinct_people_and_nobody_approves_their_own_agent() {
    let (cg, web, gw) = held_web("aptwo", "127.0.0.52", "@approvers(\"2\")\n@no_self_approval", "");
    // An agent running as nobody: nobody (an admin-group member) may not approve it.
    let own = curl_in_background(&cg, format!("http://{}/held/own", web.addr), Some(NOBODY));
    let id = pending(&gw);
    assert!(refused(&gw.cli_as(NOBODY, NOBODY, &["approvals", "approve", &id])).contains("forbids approving"));
    ok(&gw.cli(&["approvals", "deny", &id, "--reason", "no second person"]));
    assert!(own.join().unwrap().stdout.ends_with("403"));
    // An agent running as daemon (uid 1): two distinct people must approve.
    let agent = curl_in_background(&cg, format!("http://{}/held/two", web.addr), Some(1));
    let id = wait_for(15, || {
        reviews(&gw)
            .into_iter()
            .find(|r| r["state"] == "pending" && r["request"] == "GET /held/two")
            .and_then(|r| r["id"].as_str().map(str::to_owned))
    })
    .unwrap();
    assert!(ok(&gw.cli(&["approvals", "approve", &id])).contains("1 more"));
    assert!(refused(&gw.cli(&["approvals", "approve", &id])).contains("already approved"));
    assert!(ok(&gw.cli_as(NOBODY, NOBODY, &["approvals", "approve", &id])).contains("approved"));
    let r = agent.join().unwrap();
    assert!(r.stdout.ends_with("200"), "{} {}", r.stdout, r.stderr);
    let shown: Value = serde_json::from_slice(&gw.cli(&["approvals", "show", &id]).stdout).unwrap();
    let approvers: Vec<&str> = shown["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["subject"].as_str())
        .collect();
    assert_eq!(approvers, ["uid:0", "uid:65534"]);
}

#[test]
fn the_socket_refuses_users_outside_root_and_the_admin_group() {
    let (_cg, _web, gw) = held_web("apsock", "127.0.0.53", "", "");
    let err = refused(&gw.cli_as(12345, 12345, &["approvals", "list"]));
    assert!(
        err.contains("only root and the configured admin group") || err.contains("Permission denied"),
        "{err}"
    );
    ok(&gw.cli_as(NOBODY, NOBODY, &["approvals", "list"]));
}

/// A webhook receiver: records each POST body in a file, one per line.
struct Hook {
    _server: PyServer,
    port: u16,
    log: std::path::PathBuf,
}

impl Hook {
    fn start(ip: &str) -> Self {
        let log = std::env::temp_dir().join(unique("hook"));
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/post_server.py");
        let server = PyServer::start(script.to_str().unwrap(), &[ip, log.to_str().unwrap()]);
        Self {
            port: server.port(),
            _server: server,
            log,
        }
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

#[test]
fn a_held_sql_statement_is_announced_and_fails_with_42501_after_denial() {
    let cg = TestCgroup::new(&unique("apsql"));
    let pg = PgServer::start("127.0.0.54");
    pg.shop();
    let hook = Hook::start("127.0.0.55");
    let target = pg.target(&[]).replace(
        "[targets.postgres]",
        &format!(
            "review_webhook = \"http://127.0.0.55:{}/hook\"\n[targets.postgres]",
            hook.port
        ),
    );
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![
                target,
                "[review]\npublic_url = \"https://interlock.example/ui\"\n".into(),
            ],
            policies: Some(vec![
                ("allow.cedar".into(), ALLOW_ALL.into()),
                ("db.cedar".into(), shipped("read-only-db.cedar")),
            ]),
            ..Default::default()
        },
    );
    let script = r#"
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    try:
        conn.execute("CREATE TABLE audit_me (x int)")
        print("created")
    except psycopg.Error as e:
        print(e.sqlstate, e.diag.message_primary)
    print("after:", conn.execute("SELECT count(*) FROM items").fetchone()[0])
"#;
    let dsn = pg.agent_dsn();
    let client = Client::new(&cg);
    let agent = thread::spawn(move || client.run("python3", &["-c", script, &dsn]));
    let id = pending(&gw);
    let announced =
        wait_for(10, || std::fs::read_to_string(&hook.log).ok().filter(|t| !t.is_empty())).expect("webhook");
    let hooked: Value = serde_json::from_str(announced.lines().next().unwrap()).unwrap();
    assert_eq!(hooked["review"]["request"], "CREATE TABLE audit_me (x int)");
    assert_eq!(hooked["review"]["target"], "shop-db");
    assert!(hooked["text"].as_str().unwrap().contains(&id));
    assert_eq!(hooked["link"], format!("https://interlock.example/ui/reviews/{id}"));
    ok(&gw.cli(&["approvals", "deny", &id, "--reason", "no schema changes today"]));
    let r = agent.join().unwrap();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].starts_with("42501") && lines[0].contains("no schema changes today"),
        "{lines:?} {}",
        r.stderr
    );
    assert_eq!(lines[1], "after: 10");
    assert_eq!(
        pg.psql("shop", "SELECT count(*) FROM pg_tables WHERE tablename = 'audit_me'"),
        "0"
    );
}

/// The test OIDC issuer (Python, PyJWT): its URL and ready-made tokens.
struct Issuer {
    _server: PyServer,
    url: String,
    tokens: Value,
}

impl Issuer {
    fn start(ip: &str, audience: &str) -> Self {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/oidc_issuer.py");
        let server = PyServer::start(script.to_str().unwrap(), &[ip, audience]);
        let v: Value = serde_json::from_str(&server.announced)
            .unwrap_or_else(|e| panic!("issuer said {:?}: {e}", server.announced));
        Self {
            _server: server,
            url: v["issuer"].as_str().unwrap().to_owned(),
            tokens: v["tokens"].clone(),
        }
    }

    fn token(&self, who: &str) -> String {
        self.tokens[who].as_str().unwrap().to_owned()
    }
}

/// Calls the operator API: (status, body).
fn api(port: u16, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-X", method, "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "-d", b]);
    }
    let out = cmd.arg(format!("http://127.0.0.1:{port}{path}")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[test]
fn approvers_signed_in_with_oidc_approve_over_the_http_api() {
    let issuer = Issuer::start("127.0.0.56", "interlock");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api_config = format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\nissuer = \"{}\"\naudience = \"interlock\"\n[api.roles]\nviewer = [\"sec-viewers\"]\napprover = [\"sec-approvers\"]\nresponder = [\"sec-responders\"]\nadmin = [\"sec-admins\"]\n",
        issuer.url
    );
    let (cg, web, gw) = held_web("apoidc", "127.0.0.57", "@approvers(\"2\")", &api_config);
    let (status, doc) = api(port, "GET", "/openapi.json", None, None);
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let agent = curl_in_background(&cg, format!("http://{}/held/api", web.addr), None);
    let id = pending(&gw);
    let approve = format!("/v1/reviews/{id}/approve");
    // Refused tokens: none, expired, another audience, a key the issuer does not publish.
    assert_eq!(api(port, "GET", "/v1/reviews", None, None).0, 401);
    for bad in ["expired", "wrong_audience", "wrong_signature"] {
        let (status, body) = api(port, "POST", &approve, Some(&issuer.token(bad)), None);
        assert_eq!(status, 401, "{bad}: {body}");
    }
    // Verified, but no role for this.
    assert_eq!(
        api(port, "POST", &approve, Some(&issuer.token("roleless")), None).0,
        403
    );
    assert_eq!(api(port, "POST", &approve, Some(&issuer.token("viewer")), None).0, 403);
    let (status, listed) = api(port, "GET", "/v1/reviews", Some(&issuer.token("viewer")), None);
    assert_eq!(status, 200);
    assert_eq!(listed["reviews"][0]["request"], "GET /held/api");
    // Two distinct approvers.
    let (status, body) = api(port, "POST", &approve, Some(&issuer.token("alice")), None);
    assert_eq!(status, 200, "{body}");
    assert!(body["message"].as_str().unwrap().contains("1 more"), "{body}");
    let (status, body) = api(port, "POST", &approve, Some(&issuer.token("alice")), None);
    assert_eq!(status, 409, "{body}");
    let (status, body) = api(
        port,
        "POST",
        &approve,
        Some(&issuer.token("bob")),
        Some(r#"{"scope": "once"}"#),
    );
    assert_eq!(status, 200, "{body}");
    let r = agent.join().unwrap();
    assert!(r.stdout.ends_with("200"), "{} {}", r.stdout, r.stderr);
    // The trail names each person by issuer, subject and e-mail.
    let approved = gw.events().wait("review", |e| e["change"] == "approved");
    assert_eq!(approved["by"]["issuer"], issuer.url);
    assert_eq!(approved["by"]["subject"], "u-bob");
    assert_eq!(approved["by"]["email"], "bob@example.com");
    let first = &approved["review"]["approvals"][0];
    assert_eq!(
        (first["subject"].as_str(), first["email"].as_str()),
        (Some("u-alice"), Some("alice@example.com"))
    );
    // Grants through the same API need the admin role.
    let grant = r#"{"agent": "unknown", "target": "web", "actions": ["http_request"], "seconds": 60, "reason": "api"}"#;
    assert_eq!(
        api(port, "POST", "/v1/grants", Some(&issuer.token("alice")), Some(grant)).0,
        403
    );
    let (status, body) = api(port, "POST", "/v1/grants", Some(&issuer.token("carol")), Some(grant));
    assert_eq!(status, 200, "{body}");
    // A responder revokes; the record names her by issuer, subject and e-mail.
    let revoke = r#"{"uid": 65533, "reason": "incident 42"}"#;
    assert_eq!(
        api(
            port,
            "POST",
            "/v1/revocations",
            Some(&issuer.token("alice")),
            Some(revoke)
        )
        .0,
        403
    );
    let (status, body) = api(
        port,
        "POST",
        "/v1/revocations",
        Some(&issuer.token("carol")),
        Some(revoke),
    );
    assert_eq!(status, 200, "{body}");
    let revoked = gw.events().wait("revocation", |e| e["change"] == "added");
    let by = revoked["by"].as_str().unwrap();
    assert!(
        by.contains("carol@example.com") && by.contains("u-carol") && by.contains(&issuer.url),
        "{by}"
    );
    let granted = gw.events().wait("grant", |_| true);
    assert!(granted["by"].as_str().unwrap().contains("u-carol"));
}
