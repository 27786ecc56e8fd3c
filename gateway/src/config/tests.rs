use std::{path::Path, time::Duration};

use super::*;

#[test]
fn embedded_defaults_validate() {
    let c = Config::load(None).unwrap();
    assert_eq!(c.listener.port, 977);
    assert_eq!(c.intercept.cgroups, vec![DEFAULT_AGENT_CGROUP.to_owned()]);
    assert!(c.rules.is_empty());
}

#[test]
fn full_file_parses() {
    let text = r#"
[listener]
port = 15001
idle_timeout = "5m"
nat_redirect = true

[[listener.explicit]]
listen = "127.0.0.1:15432"
destination = "127.0.0.9:5432"

[intercept]
cgroups = ["/test/agents"]
uids = [1000]
uid_scope = "/test"

[[rules]]
name = "db"
cidr = "10.0.0.0/8"
ports = "5432"
action = "deny"

[[rules]]
name = "web"
cidr = "2001:db8::/32"
ports = 443
action = "pass"
"#;
    let c = Config::parse(text, Path::new("t.toml")).unwrap();
    assert_eq!(c.listener.port, 15001);
    assert_eq!(c.listener.idle_timeout, Duration::from_secs(300));
    assert!(c.listener.nat_redirect);
    assert_eq!(
        c.listener.explicit,
        [ExplicitListener {
            listen: "127.0.0.1:15432".parse().unwrap(),
            destination: "127.0.0.9:5432".parse().unwrap(),
        }]
    );
    assert_eq!(c.rules[0].ports, PortRange { lo: 5432, hi: 5432 });
    assert_eq!(c.rules[1].action, RuleAction::Pass);
}

#[test]
fn unknown_field_reports_file_and_line() {
    let text = "[listener]\nport = 1000\nbogus = 1\n";
    let err = Config::parse(text, Path::new("/etc/interlock.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("config /etc/interlock.toml:3:"), "{err}");
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn bad_values_are_rejected_with_their_place() {
    let cases = [
        (
            "[[rules]]\nname = \"x\"\ncidr = \"10.0.0.0/33\"\naction = \"deny\"\n",
            ":3:",
        ),
        (
            "[[rules]]\nname = \"x\"\ncidr = \"10.0.0.0/8\"\nports = \"80-70\"\naction = \"deny\"\n",
            ":4:",
        ),
        (
            "[[rules]]\nname = \"x\"\ncidr = \"10.0.0.0/8\"\naction = \"allow\"\n",
            ":4:",
        ),
        ("[listener]\nconnect_timeout = \"soon\"\n", ":2:"),
    ];
    for (text, place) in cases {
        let err = Config::parse(text, Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains(place), "{text:?} -> {err}");
    }
}

#[test]
fn semantic_errors_name_the_field() {
    let cases = [
        ("[listener]\nipv4 = \"10.0.0.1\"\n", "listener.ipv4"),
        ("[intercept]\ncgroups = []\n", "intercept"),
        ("[intercept]\nbypass_mark = 0\n", "intercept.bypass_mark"),
        ("[[rules]]\nname = \"x\"\ncidr = \"10.0.0.1/8\"\naction = \"deny\"\n", "rules[0]"),
        ("[[rules]]\nname = \"x\"\ncidr = \"10.0.0.0/8\"\naction = \"deny\"\n[[rules]]\nname = \"x\"\ncidr = \"10.0.0.0/8\"\naction = \"pass\"\n", "rules[1].name"),
        ("[[rules]]\nname = \"x\"\ncidr = \"::ffff:10.0.0.0/104\"\naction = \"deny\"\n", "rules[0]"),
        ("[audit]\nqueue = 0\n", "audit.queue"),
        ("[audit]\nbackend = \"postgres\"\n", "audit.postgres"),
        ("[audit]\ncheckpoint_every = 0\n", "audit.checkpoint_every"),
        (
            "[[listener.explicit]]\nlisten = \"10.0.0.1:80\"\ndestination = \"127.0.0.9:80\"\n",
            "listener.explicit[0].listen",
        ),
        (
            "[[listener.explicit]]\nlisten = \"127.0.0.1:977\"\ndestination = \"127.0.0.9:80\"\n",
            "listener.explicit[0].listen",
        ),
        (
            "[[listener.explicit]]\nlisten = \"127.0.0.1:8000\"\ndestination = \"127.0.0.9:80\"\n\
             [[listener.explicit]]\nlisten = \"127.0.0.1:8000\"\ndestination = \"127.0.0.9:81\"\n",
            "listener.explicit[1].listen",
        ),
        (
            "[[listener.explicit]]\nlisten = \"127.0.0.1:8000\"\ndestination = \"127.0.0.1:977\"\n",
            "listener.explicit[0].destination",
        ),
        (
            "[[listener.explicit]]\nlisten = \"127.0.0.1:8000\"\ndestination = \"127.0.0.1:8000\"\n",
            "listener.explicit[0].destination",
        ),
        ("[listener]\nnat_port = 980\n", "listener.nat_port"),
        ("[listener]\nmax_request_head = 4096\n", "listener.max_request_head"),
        ("[listener]\nnat_redirect = true\nnat_port = 977\n", "listener.nat_port"),
        ("[listener]\nnat_redirect = true\nnat_port = 0\n", "listener.nat_port"),
        (
            "[listener]\nnat_redirect = true\nnat_port = 980\n\
             [[listener.explicit]]\nlisten = \"127.0.0.1:980\"\ndestination = \"127.0.0.9:80\"\n",
            "listener.explicit[0].listen",
        ),
        (
            "[listener]\nnat_redirect = true\nnat_port = 980\n\
             [[listener.explicit]]\nlisten = \"127.0.0.1:8000\"\ndestination = \"127.0.0.1:980\"\n",
            "listener.explicit[0].destination",
        ),
        ("[dns]\nnames = [\"ok.example\", \"bad name\"]\n", "dns.names[1]"),
        ("[dns]\nnames = [\"*.\"]\n", "dns.names[0]"),
        ("[dns]\ntimeout = \"0s\"\n", "dns.timeout"),
        ("[dns]\nmax_label = 64\n", "dns.max_label"),
        ("[dns]\nupstreams = [\"0.0.0.0:53\"]\n", "dns.upstreams[0]"),
        ("[intercept]\npass_dns = true\n", "intercept.pass_dns"),
    ];
    for (text, field) in cases {
        let err = Config::parse(text, Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains(&format!("field `{field}`")), "{text:?} -> {err}");
    }
}

#[test]
fn credentials_on_plaintext_targets_need_a_verified_destination() {
    let text =
        "[[targets]]\nname = \"api\"\nhosts = [\"api.internal\"]\nprotocol = \"http\"\ncredential = { env = \"K\" }\n";
    let err = Config::parse(text, Path::new("c.toml")).unwrap_err().to_string();
    assert!(err.contains("targets[0]") && err.contains("anywhere"), "{err}");
    let ok = "[[targets]]\nname = \"api\"\nhosts = [\"api.internal\"]\ncidrs = [\"10.0.0.0/24\"]\nprotocol = \"http\"\ncredential = { env = \"K\" }\n";
    Config::parse(ok, Path::new("c.toml")).unwrap();
    let two = "[[targets]]\nname = \"api\"\ncidrs = [\"10.0.0.0/24\"]\nprotocol = \"https\"\ncredential = { env = \"K\", file = \"/k\" }\n";
    assert!(Config::parse(two, Path::new("c.toml"))
        .unwrap_err()
        .to_string()
        .contains("exactly one"));
}

#[test]
fn postgres_targets_are_checked_at_load() {
    let target = |extra: &str| {
        format!(
            "[[targets]]\nname = \"db\"\ncidrs = [\"10.0.0.5/32\"]\nports = \"5432\"\nprotocol = \"postgres\"\n{extra}"
        )
    };
    let ok = target(
        "credential = { file = \"/etc/interlock/db.pw\" }\n[targets.postgres]\nuser = \"app\"\ncolumns = [{ column = \"*.ssn\", style = \"null\" }]\n",
    );
    let c = Config::parse(&ok, Path::new("t.toml")).unwrap();
    let pg = c.targets[0].postgres.as_ref().unwrap();
    assert_eq!(pg.columns[0].style, ColumnStyle::Null);
    assert_eq!(pg.tls, UpstreamTls::Prefer);
    let cases = [
        ("", "needs a [targets.postgres] section"),
        ("[targets.postgres]\nuser = \"app\"\ncolumns = [{ column = \"email\" }]\n", "postgres.columns[0]"),
        ("[targets.postgres]\nuser = \"app\"\ndetectors = [\"nope\"]\n", "unknown detector `nope`"),
        ("[targets.postgres]\nuser = \"app\"\ntls = \"maybe\"\n", "maybe"),
        (
            "credential = { oauth2 = { token_url = \"https://x/t\", client_id = \"c\", client_secret_file = \"/s\" } }\n[targets.postgres]\nuser = \"app\"\n",
            "not `oauth2`",
        ),
    ];
    for (extra, expected) in cases {
        let err = Config::parse(&target(extra), Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{extra:?}: {err}");
        assert!(err.contains("t.toml"), "{err}");
    }
}
