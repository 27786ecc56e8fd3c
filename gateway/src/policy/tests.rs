//! Policy evaluation over a table of cases, and loading errors.
use std::{net::IpAddr, time::SystemTime};

use super::*;
use crate::{
    identity::Identity,
    types::{AgentName, CgroupId, SocketCookie},
};

fn identity(uid: u32) -> Identity {
    Identity {
        pid: 4242,
        tid: 4242,
        uid,
        gid: uid,
        comm: "python3".into(),
        cgroup_id: CgroupId(1),
        socket_cookie: SocketCookie(1),
        netns_cookie: 1,
        user: Some("agent".into()),
        process: None,
    }
}

fn target(name: &str, ip: &str, port: u16) -> TargetRef {
    TargetRef {
        name: name.into(),
        ip: ip.parse::<IpAddr>().unwrap(),
        port,
        host: String::new(),
        protocol: crate::types::Wire::Tcp,
    }
}

fn sql(kind: &str, has_where: bool) -> ActionKind {
    ActionKind::SqlStatement {
        facts: SqlFacts {
            kind: kind.into(),
            tables_read: vec!["orders".into()],
            tables_written: vec![],
            has_where,
            statements: 1,
        },
        sql: "...".into(),
    }
}

fn ask(p: &LoadedPolicies, agent: &str, t: &TargetRef, action: &ActionKind) -> Decision {
    let agent = AgentName(agent.into());
    let id = identity(1000);
    decide(
        p,
        &Query {
            agent: &agent,
            identity: &id,
            target: t,
            action,
            now: SystemTime::now(),
        },
    )
}

#[test]
fn shipped_policies_decide_the_documented_cases() {
    let p = load_embedded().unwrap();
    let db = target("analytics-db", "10.20.0.5", 5432);
    let openai = target("openai", "127.0.0.2", 443);
    let metadata = target("metadata", "169.254.169.254", 80);
    let http = ActionKind::http;
    let cases: Vec<(&str, &TargetRef, ActionKind, Ruling, &str)> = vec![
        (
            "db-reader",
            &db,
            ActionKind::Connect,
            Ruling::Allow,
            "db-reader-connect",
        ),
        (
            "db-reader",
            &db,
            sql("select", false),
            Ruling::Allow,
            "db-reader-select-only",
        ),
        ("db-reader", &db, sql("insert", false), Ruling::Deny, ""),
        (
            "db-reader",
            &db,
            sql("delete", false),
            Ruling::Deny,
            "no-unbounded-writes",
        ),
        ("db-reader", &db, sql("ddl", false), Ruling::Deny, ""),
        ("db-reader", &openai, ActionKind::Connect, Ruling::Deny, ""),
        (
            "assistant",
            &openai,
            ActionKind::Connect,
            Ruling::Allow,
            "assistant-llm-connect",
        ),
        (
            "assistant",
            &openai,
            http("POST", "/v1/chat/completions"),
            Ruling::Allow,
            "assistant-llm-requests",
        ),
        ("assistant", &openai, http("GET", "/v1/models"), Ruling::Deny, ""),
        (
            "assistant",
            &openai,
            http("POST", "/v1/files"),
            Ruling::Review,
            "assistant-llm-uploads-reviewed",
        ),
        ("assistant", &db, ActionKind::Connect, Ruling::Deny, ""),
        (
            "unknown",
            &openai,
            ActionKind::Connect,
            Ruling::Deny,
            "base-unknown-agents",
        ),
        (
            "assistant",
            &metadata,
            ActionKind::Connect,
            Ruling::Deny,
            "base-no-metadata-service",
        ),
    ];
    for (agent, t, action, outcome, policy) in cases {
        let d = ask(&p, agent, t, &action);
        assert_eq!(d.outcome, outcome, "{agent} {action:?} on {}: {d:?}", t.name);
        if policy.is_empty() {
            if outcome == Ruling::Deny && d.policies.is_empty() {
                assert!(d.reason.contains("default deny"), "{d:?}");
            }
        } else {
            assert_eq!(d.policies, vec![policy.to_owned()], "{agent} {action:?}: {d:?}");
        }
    }
    let d = ask(&p, "assistant", &openai, &http("POST", "/v1/chat/completions"));
    assert_eq!(d.mask, vec!["api_key", "credit_card", "email"]);
    let d = ask(&p, "db-reader", &db, &sql("delete", false));
    assert_eq!(d.reason, "UPDATE or DELETE without a WHERE clause");
}

const SCHEMA: &str = include_str!("../../../policies/interlock.cedarschema");

fn load(files: &[(&str, &str)]) -> Result<LoadedPolicies, PolicyError> {
    let files: Vec<(String, String)> = files.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned())).collect();
    let known: Vec<String> = crate::masking::BUILTIN_NAMES.iter().map(|n| (*n).to_owned()).collect();
    load_sources(("s.cedarschema".into(), SCHEMA.into()), &files, "test".into(), &known)
}

#[test]
fn ddl_review_needs_some_permit() {
    let p = load(&[
        ("ddl.cedar", "@id(\"ddl\") @review forbid (principal, action == Interlock::Action::\"sql_statement\", resource) when { context.kind == \"ddl\" };"),
        ("allow.cedar", "@id(\"x-sql\") permit (principal == Interlock::Agent::\"x\", action == Interlock::Action::\"sql_statement\", resource);"),
    ])
    .unwrap();
    let db = target("db", "10.0.0.1", 5432);
    assert_eq!(ask(&p, "x", &db, &sql("ddl", false)).outcome, Ruling::Review);
    assert_eq!(ask(&p, "y", &db, &sql("ddl", false)).outcome, Ruling::Deny);
    assert_eq!(ask(&p, "x", &db, &sql("select", false)).outcome, Ruling::Allow);
}

#[test]
fn forbid_overrides_permit_and_ip_ranges_work() {
    let p = load(&[(
        "p.cedar",
        r#"@id("all") permit (principal, action, resource);
@id("no-10") forbid (principal, action, resource) when { resource.ip.isInRange(ip("10.0.0.0/8")) };"#,
    )])
    .unwrap();
    assert_eq!(
        ask(&p, "x", &target("a", "10.1.1.1", 80), &ActionKind::Connect).policies,
        vec!["no-10"]
    );
    assert_eq!(
        ask(&p, "x", &target("a", "192.0.2.1", 80), &ActionKind::Connect).outcome,
        Ruling::Allow
    );
    assert!(!p.reads_context);
    // The shipped policies read context only for SQL and HTTP: connect decisions can be cached.
    assert!(!load_embedded().unwrap().reads_context);
    let timed = load(&[(
        "t.cedar",
        "permit (principal, action, resource) when { context.hour < 18 };",
    )])
    .unwrap();
    assert!(timed.reads_context);
}

#[test]
fn syntax_errors_name_file_and_line() {
    let err = load(&[
        ("good.cedar", "permit (principal, action, resource);"),
        (
            "bad.cedar",
            "// comment\n\npermit (principal, action, resource)\nwhen { principal.name == };\n",
        ),
    ])
    .err()
    .unwrap()
    .to_string();
    assert!(err.starts_with("policy bad.cedar:4:"), "{err}");
}

#[test]
fn schema_violations_name_file_line_and_policy() {
    let err = load(&[(
        "v.cedar",
        "\n@id(\"typo\")\npermit (principal, action, resource)\nwhen { principal.nmae == \"x\" };\n",
    )])
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("v.cedar:4") && err.contains("`typo`"), "{err}");
}

#[test]
fn duplicate_ids_and_bad_annotations_are_rejected() {
    let dup = load(&[
        ("a.cedar", "@id(\"x\") permit (principal, action, resource);"),
        ("b.cedar", "@id(\"x\") forbid (principal, action, resource);"),
    ]);
    assert!(dup.err().unwrap().to_string().contains("used twice"));
    let bad = load(&[(
        "a.cedar",
        "@id(\"x\") @review(\"maybe\") permit (principal, action, resource);",
    )]);
    assert!(bad.err().unwrap().to_string().contains("@review"));
    let mask_on_forbid = load(&[(
        "a.cedar",
        "@id(\"x\") @mask(\"email\") forbid (principal, action, resource);",
    )]);
    assert!(mask_on_forbid.err().unwrap().to_string().contains("@mask"));
}

#[test]
fn policies_without_id_are_named_by_file_and_line() {
    let p = load(&[("p.cedar", "// x\npermit (principal, action, resource);\n")]).unwrap();
    let d = ask(&p, "x", &target("a", "192.0.2.1", 80), &ActionKind::Connect);
    assert_eq!(d.policies, vec!["p.cedar:2"]);
}

#[test]
fn requests_built_for_every_action_conform_to_the_schema() {
    let p = load_embedded().unwrap();
    let agent = AgentName("db-reader".into());
    let mut id = identity(1000);
    id.process = Some(std::sync::Arc::new(crate::identity::ProcessInfo {
        start_ticks: 1,
        exe: Some("/usr/bin/python3".into()),
        cmdline: vec!["python3".into(), "agent.py".into()],
        ppid: 1,
        cgroup: Some("/interlock.agents".into()),
        container: None,
        systemd_unit: None,
    }));
    let t = target("analytics-db", "10.20.0.5", 5432);
    let actions = [ActionKind::Connect, ActionKind::http("GET", "/"), sql("select", true)];
    for action in &actions {
        let q = Query {
            agent: &agent,
            identity: &id,
            target: &t,
            action,
            now: SystemTime::now(),
        };
        super::request::build_with(&p, &q, true).unwrap_or_else(|e| panic!("{action:?}: {e}"));
    }
}

#[test]
fn review_annotations_are_checked_and_combined() {
    let p = load(&[
        ("a.cedar", "@id(\"two\") @review @approvers(\"2\") @review_timeout(\"10m\") @webhook(\"https://hooks.example/a\") forbid (principal, action == Interlock::Action::\"sql_statement\", resource) when { context.kind == \"ddl\" };"),
        ("b.cedar", "@id(\"own\") @review @no_self_approval @review_timeout(\"2m\") forbid (principal, action == Interlock::Action::\"sql_statement\", resource) when { context.kind == \"ddl\" };"),
        ("c.cedar", "@id(\"ok\") permit (principal, action, resource);"),
    ])
    .unwrap();
    let (rules, webhooks) = p.review_rules(&["two".into(), "own".into()]);
    assert_eq!(rules.approvers, 2);
    assert!(rules.no_self_approval);
    assert_eq!(rules.timeout, Some(std::time::Duration::from_secs(120)));
    assert_eq!(webhooks, ["https://hooks.example/a"]);
    let bad = [
        (
            "@id(\"x\") @review @approvers(\"0\") forbid (principal, action, resource);",
            "@approvers",
        ),
        (
            "@id(\"x\") @approvers(\"2\") forbid (principal, action, resource);",
            "need @review",
        ),
        (
            "@id(\"x\") @review @review_timeout(\"soon\") forbid (principal, action, resource);",
            "@review_timeout",
        ),
        (
            "@id(\"x\") @review @webhook(\"ftp://x\") forbid (principal, action, resource);",
            "@webhook",
        ),
    ];
    for (text, expected) in bad {
        let err = load(&[("a.cedar", text)]).err().unwrap().to_string();
        assert!(err.contains(expected) && err.contains("a.cedar"), "{text}: {err}");
    }
}

#[test]
fn cached_subjects_follow_every_attribute() {
    let p = load(&[(
        "p.cedar",
        r#"@id("py") permit (principal, action, resource) when { principal.comm == "python3" && resource.port == 80 };"#,
    )])
    .unwrap();
    let cache = SubjectCache::default();
    let agent = AgentName("x".into());
    let ask_cached = |id: &Identity, t: &TargetRef| {
        decide_cached(
            &p,
            &Query {
                agent: &agent,
                identity: id,
                target: t,
                action: &ActionKind::Connect,
                now: SystemTime::now(),
            },
            &cache,
        )
        .outcome
    };
    let web = target("a", "192.0.2.1", 80);
    let mut id = identity(1000);
    assert_eq!(ask_cached(&id, &web), Ruling::Allow);
    assert_eq!(ask_cached(&id, &web), Ruling::Allow, "from the cache");
    // The same pid after an exec: a new comm is a new subject.
    id.comm = "curl".into();
    assert_eq!(ask_cached(&id, &web), Ruling::Deny);
    // Same agent and process, another port of the target.
    assert_eq!(ask_cached(&identity(1000), &target("a", "192.0.2.1", 81)), Ruling::Deny);
}

#[test]
fn policies_that_may_read_the_clock_are_found() {
    use super::load::{may_read, TIME_ATTRS};
    let may_read_time = |text: &str| may_read(text, &TIME_ATTRS);
    assert!(!may_read_time(
        r#"permit (principal, action, resource) when { context.path like "/v1/*" };"#
    ));
    assert!(may_read_time(
        "permit (principal, action, resource) when { context.hour < 18 };"
    ));
    assert!(may_read_time(
        "permit (principal, action, resource) when { context . weekday == 1 };"
    ));
    assert!(may_read_time(
        r#"permit (principal, action, resource) when { context["time"] < 5 };"#
    ));
    assert!(may_read_time(
        "permit (principal, action, resource) when { context has time };"
    ));
    let timed = load(&[(
        "t.cedar",
        "permit (principal, action, resource) when { context.time > 0 };",
    )])
    .unwrap();
    assert!(timed.reads_time);
    assert!(!load_embedded().unwrap().reads_time);
    assert!(!may_read(
        r#"permit (principal, action, resource) when { context.kind == "select" };"#,
        &["sql"]
    ));
    assert!(may_read(
        r#"permit (principal, action, resource) when { context.sql like "*x*" };"#,
        &["sql"]
    ));
}

#[test]
fn cached_decisions_belong_to_one_policy_set() {
    let allow = load(&[("a.cedar", "permit (principal, action, resource);")]).unwrap();
    let deny = load(&[(
        "d.cedar",
        r#"permit (principal, action == Interlock::Action::"http_request", resource) when { context.path == "/x" };"#,
    )])
    .unwrap();
    let cache = SubjectCache::default();
    let (agent, id, t) = (AgentName("x".into()), identity(1000), target("a", "192.0.2.1", 80));
    let action = ActionKind::http("GET", "/y");
    let q = Query {
        agent: &agent,
        identity: &id,
        target: &t,
        action: &action,
        now: SystemTime::now(),
    };
    assert_eq!(decide_cached(&allow, &q, &cache).outcome, Ruling::Allow);
    assert_eq!(decide_cached(&deny, &q, &cache).outcome, Ruling::Deny);
    assert_eq!(decide_cached(&allow, &q, &cache).outcome, Ruling::Allow);
}

#[test]
fn statement_text_and_body_size_key_the_cache_only_when_a_policy_reads_them() {
    let by_facts = load(&[(
        "f.cedar",
        r#"permit (principal, action, resource) when { context has kind && context.kind == "select" };"#,
    )])
    .unwrap();
    let by_text = load(&[(
        "t.cedar",
        r#"permit (principal, action == Interlock::Action::"sql_statement", resource) when { context.sql like "*id = 1*" };"#,
    )])
    .unwrap();
    assert!(by_text.reads_sql && !by_text.reads_body_size);
    let (agent, id, t) = (AgentName("x".into()), identity(1000), target("db", "192.0.2.1", 5432));
    let select = |text: &str| {
        let mut a = sql("select", true);
        if let ActionKind::SqlStatement { sql, .. } = &mut a {
            *sql = text.into();
        }
        a
    };
    fn query<'a>(who: &'a (AgentName, Identity, TargetRef), action: &'a ActionKind) -> Query<'a> {
        Query {
            agent: &who.0,
            identity: &who.1,
            target: &who.2,
            action,
            now: SystemTime::now(),
        }
    }
    let who = (agent, id, t);
    let ask = |p: &LoadedPolicies, cache: &SubjectCache, action: &ActionKind| {
        decide_cached(p, &query(&who, action), cache).outcome
    };
    // Decisions filed for the subject: shared when the text is not read.
    let filed = |cache: &SubjectCache| {
        cache
            .get(&query(&who, &ActionKind::Connect))
            .unwrap()
            .decisions
            .lock()
            .unwrap()
            .len()
    };
    // `context has kind` reads the context as a whole: nothing is shared.
    assert!(by_facts.reads_sql);
    let facts_only = load(&[(
        "k.cedar",
        r#"permit (principal, action == Interlock::Action::"sql_statement", resource) when { context.kind == "select" };"#,
    )])
    .unwrap();
    assert!(!facts_only.reads_sql);
    // Ids 1 then 2, each set with a fresh cache: the text-reading policy
    // must not get the first text's decision for the second.
    for (policies, second, entries) in [(&facts_only, Ruling::Allow, 1), (&by_text, Ruling::Deny, 2)] {
        let cache = SubjectCache::default();
        let first = ask(policies, &cache, &select("SELECT * FROM orders WHERE id = 1"));
        assert_eq!(first, Ruling::Allow);
        let then = ask(policies, &cache, &select("SELECT * FROM orders WHERE id = 2"));
        assert_eq!(then, second, "reads_sql = {}", policies.reads_sql);
        assert_eq!(filed(&cache), entries, "reads_sql = {}", policies.reads_sql);
    }
    // The body size likewise, while no policy reads it.
    let cache = SubjectCache::default();
    for size in [10, 20] {
        let http = ActionKind::HttpRequest {
            method: "POST".into(),
            path: "/v1/x".into(),
            model: String::new(),
            body_size: size,
        };
        ask(&facts_only, &cache, &http);
    }
    assert_eq!(filed(&cache), 1, "two body sizes filed apart");
}

#[test]
fn a_statement_action_serialises_flat_and_reads_back() {
    let action = sql("delete", false);
    let json = serde_json::to_value(&action).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"action": "sql_statement", "kind": "delete", "tables_read": ["orders"],
            "tables_written": [], "has_where": false, "statements": 1, "sql": "..."})
    );
    assert_eq!(serde_json::from_value::<ActionKind>(json).unwrap(), action);
}
