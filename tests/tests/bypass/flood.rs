//! One agent cannot starve the others: past its share of connections, its
//! connection rate or its request rate (HTTP requests, SQL executions) it is
//! refused while the others are served, and its refusals are recorded once
//! per burst (the rest counted into `limited` events), so a flood does not
//! flood the audit trail.
use interlock_tests::{postgres::PgServer, wait_for, Client, Gateway, GatewayOptions, TestCgroup, Upstream};
use serde_json::{json, Value};

use super::{get, status};

/// Two agents told apart by a tag in their command line.
const AGENTS: &str = "[[agents]]\nname = \"flooder\"\ncmdline = \"\\\"tag\\\": ?\\\"flood\\\"\"\n\n\
                      [[agents]]\nname = \"bystander\"\ncmdline = \"\\\"tag\\\": ?\\\"other\\\"\"\n";

fn gateway(cg: &TestCgroup, listener: Vec<String>, extra: &str) -> Gateway {
    Gateway::start(
        cg,
        GatewayOptions {
            listener,
            extra_toml: vec![AGENTS.into(), extra.into()],
            ..Default::default()
        },
    )
}

/// Refusal events and counted refusals of the flooder, once they add up to `total`.
fn refusals(gw: &Gateway, total: u64) -> (Vec<Value>, Vec<Value>) {
    let found = wait_for(10, || {
        let all = gw.events().all();
        let first: Vec<Value> = all
            .iter()
            .filter(|e| {
                let refused = e["event"] == "connection" && e["outcome"]["kind"] == "refused";
                let limited = e["event"] == "http_exchange" && e["status"] == 429;
                let sql = e["event"] == "sql_statement"
                    && e["decision"]["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("sends requests faster"));
                refused || limited || sql
            })
            .cloned()
            .collect();
        let counted: Vec<Value> = all.iter().filter(|e| e["event"] == "limited").cloned().collect();
        let sum: u64 = counted.iter().map(|e| e["refused"].as_u64().unwrap()).sum();
        (first.len() as u64 + sum == total).then_some((first, counted))
    });
    found.unwrap_or_else(|| panic!("refusals never added up to {total}: {:#?}", gw.events().all()))
}

#[test]
fn an_agent_holding_its_share_does_not_starve_another() {
    let cg = TestCgroup::new(&interlock_tests::unique("share"));
    let up = Upstream::start("127.0.0.2");
    // Eight connections in all; each agent's share is a quarter (two).
    let gw = gateway(&cg, vec!["max_connections = 8".into()], "");
    let hold =
        json!({"op": "hold_many", "tag": "flood", "count": 8, "hold": 6, "host": "127.0.0.2", "port": up.addr.port()});
    let flooder = Client::agent(&cg).spawn_holding("/usr/bin/python3", hold);
    let (first, counted) = refusals(&gw, 6);
    assert_eq!(first.len(), 1, "one event for the burst: {first:#?}");
    let reason = first[0]["outcome"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("agent flooder holds its share of connections (2 at once)"),
        "{reason}"
    );
    assert!(counted
        .iter()
        .all(|e| e["agent"] == "flooder" && e["limit"] == "max_connections_per_agent"));
    // The other agent is served while the flooder holds its share.
    let out = Client::agent(&cg)
        .net(json!({"op": "tcp", "tag": "other", "host": "127.0.0.2", "port": up.addr.port(), "send": "still served"}))
        .json();
    assert_eq!(out["received"], "still served", "{out}");
    drop(flooder);
}

#[test]
fn an_agent_opening_connections_too_fast_is_slowed_and_another_is_served() {
    let cg = TestCgroup::new(&interlock_tests::unique("connrate"));
    let up = Upstream::start("127.0.0.2");
    let gw = gateway(
        &cg,
        Vec::new(),
        "[limits]\nconnection_rate = { per_second = 1, burst = 3 }\n",
    );
    let out = Client::agent(&cg)
        .net(
            json!({"op": "many", "tag": "flood", "count": 12, "size": 64, "host": "127.0.0.2", "port": up.addr.port()}),
        )
        .json();
    let served = out["verified"].as_u64().unwrap();
    assert!(served < 12, "the flood was not slowed: {out}");
    let (first, _) = refusals(&gw, 12 - served);
    assert_eq!(first.len(), 1, "{first:#?}");
    assert!(first[0]["outcome"]["reason"]
        .as_str()
        .unwrap()
        .contains("faster than 1/s"));
    let out = Client::agent(&cg)
        .net(json!({"op": "tcp", "tag": "other", "host": "127.0.0.2", "port": up.addr.port(), "send": "served"}))
        .json();
    assert_eq!(out["received"], "served", "{out}");
}

#[test]
fn an_agent_sending_requests_too_fast_gets_429_and_another_is_served() {
    let cg = TestCgroup::new(&interlock_tests::unique("reqrate"));
    let up = Upstream::start("127.0.0.2");
    let target = "[[targets]]\nname = \"plain\"\ncidrs = [\"127.0.0.2/32\"]\nprotocol = \"http\"\n\n\
                  [limits]\nrequest_rate = { per_second = 0.5, burst = 3 }\n";
    let gw = gateway(&cg, Vec::new(), target);
    // Twelve requests on one kept-alive connection.
    let script = format!(
        "import http.client, json\nc = http.client.HTTPConnection('127.0.0.2', {port}, timeout=10)\nout = []\nfor _ in range(12):\n    c.request('GET', '/x', headers={{'Host': 'plain', 'X-Tag': 'flood'}})\n    r = c.getresponse(); r.read(); out.append(r.status)\nprint(json.dumps({{'statuses': out, 'tag': 'flood'}}))\n",
        port = up.addr.port()
    );
    let r = Client::agent(&cg).run("/usr/bin/python3", &["-c", &script, "\"tag\": \"flood\""]);
    let statuses: Vec<u64> = serde_json::from_str::<Value>(r.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {} {}", r.stdout, r.stderr))["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    let limited = statuses.iter().filter(|s| **s == 429).count() as u64;
    assert!(limited >= 8, "{statuses:?}");
    let (first, _) = refusals(&gw, limited);
    assert_eq!(first.len(), 1, "{first:#?}");
    assert!(first[0]["decision"]["reason"]
        .as_str()
        .unwrap()
        .contains("sends requests faster than 0.5/s"));
    let spec = json!({"op": "exchange", "tag": "other", "host": "127.0.0.2", "port": up.addr.port(), "send": get("/x", "plain")});
    assert_eq!(status(&Client::agent(&cg).net(spec).json()), 200);
}

#[test]
fn an_agent_sending_statements_too_fast_gets_53400_and_another_is_served() {
    let pg = PgServer::start("127.0.0.75");
    pg.shop();
    let cg = TestCgroup::new(&interlock_tests::unique("sqlrate"));
    let limits = "[limits]\nrequest_rate = { per_second = 0.5, burst = 3 }\n";
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            extra_toml: vec![AGENTS.into(), pg.target(&[]), limits.into()],
            ..Default::default()
        },
    );
    let (host, port) = (pg.addr.ip().to_string(), pg.addr.port());
    // Twelve executions on one session, six by the simple protocol and six
    // prepared, then one more once the rate has let a token back in.
    let flood = json!({"op": "pg_flood", "tag": "flood", "host": host, "port": port,
                       "simple": 6, "extended": 6, "pause": 2.5, "last": "SELECT count(*) FROM items"});
    let out = Client::agent(&cg).net(flood).json();
    let codes: Vec<(String, String)> =
        serde_json::from_value(out["codes"].clone()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let refused = codes.iter().filter(|(_, code)| code == "53400").count() as u64;
    assert!(refused >= 8, "{out}");
    assert!(codes.iter().all(|(_, code)| code == "ok" || code == "53400"), "{out}");
    for protocol in ["simple", "extended"] {
        assert!(
            codes.iter().any(|(p, code)| p == protocol && code == "53400"),
            "no {protocol} execution refused: {out}"
        );
    }
    assert_eq!(out["last"], json!(["ok", "10"]), "the session goes on: {out}");
    let (first, counted) = refusals(&gw, refused);
    assert_eq!(first.len(), 1, "one event for the burst: {first:#?}");
    assert_eq!(first[0]["agent"], "flooder");
    assert_eq!(first[0]["identity"]["uid"], 65534);
    assert_eq!(first[0]["outcome"], "denied");
    assert!(counted
        .iter()
        .all(|e| e["agent"] == "flooder" && e["limit"] == "request_rate"));
    let other =
        json!({"op": "pg_flood", "tag": "other", "host": host, "port": port, "last": "SELECT count(*) FROM items"});
    let out = Client::agent(&cg).net(other).json();
    assert_eq!(out["last"], json!(["ok", "10"]), "{out}");
}
