//! The bypass suite: what an agent cannot do. Each test runs its agent as
//! `nobody` with no capabilities inside the test's cgroup, and each one
//! failed before the fix it stands for. (A root process inside the agent
//! cgroup is out of scope: it can leave the cgroup.)
//!
//! - hooks: ways around the connect hooks (IPv6 forms, TCP Fast Open,
//!   io_uring, children and threads);
//! - protocols: a slow first byte, a dripped head or foreign bytes never turn
//!   an HTTP(S) target into a blind relay;
//! - names: a name the agent chose (SNI, Host, :authority) decides nothing
//!   unless it is bound to the address, and never carries a credential
//!   elsewhere;
//! - paths: dot segments and encodings cannot walk around path policy;
//! - files: the audit trail and the gateway's state are root's alone;
//! - flood: one agent past its share or its rates is refused while the
//!   others are served;
//! - memory: large messages at once are refused past one memory budget;
//! - descriptors: `interlock exec` hands the agent no socket opened outside
//!   its cgroup;
//! - egress: DNS goes through the gateway's resolver and is judged by name
//!   (tunnels through names refused), DNS over TLS refused, other UDP (by
//!   sendto, sendmmsg, io_uring, v4-mapped v6) and ICMP sockets refused.
#[path = "bypass/descriptors.rs"]
mod descriptors;
#[path = "bypass/egress.rs"]
mod egress;
#[path = "bypass/files.rs"]
mod files;
#[path = "bypass/flood.rs"]
mod flood;
#[path = "bypass/hooks.rs"]
mod hooks;
#[path = "bypass/memory.rs"]
mod memory;
#[path = "bypass/names.rs"]
mod names;
#[path = "bypass/paths.rs"]
mod paths;
#[path = "bypass/protocols.rs"]
mod protocols;

use interlock_tests::{https::HttpsUpstream, unique, Client, Gateway, GatewayOptions, TestCgroup, Upstream};
use serde_json::{json, Value};

/// The name agents use for the HTTPS API.
const HOST: &str = "api.example.test";
/// Where agents think the API is; nothing listens there (the redirect catches it).
const API_IP: &str = "127.0.0.10";
/// The credential only the gateway holds.
const REAL_KEY: &str = "sk-real-bypass-0123456789";

/// Policies for the suite: connects permitted; requests permitted except
/// the `/v1/files*` uploads and anything under `/forbidden`.
fn request_policies() -> Vec<(String, String)> {
    vec![(
        "p.cedar".into(),
        "@id(\"allow\")\npermit (principal, action, resource);\n\
         @id(\"no-uploads\")\n@reason(\"uploads need approval\")\nforbid (principal, action == Interlock::Action::\"http_request\", resource)\nwhen { context.path like \"/v1/files*\" || context.path like \"/forbidden*\" };\n"
            .into(),
    )]
}

/// An HTTPS target `api` on API_IP (by its networks), served by a real TLS
/// upstream that accepts only the real key.
struct Https {
    cg: TestCgroup,
    gw: Gateway,
    _up: HttpsUpstream,
    dir: std::path::PathBuf,
}

impl Https {
    fn start(tag: &str, listener: Vec<String>) -> Self {
        let cg = TestCgroup::new(&unique(tag));
        let up = HttpsUpstream::start("127.0.0.9", HOST, REAL_KEY);
        let dir = std::env::temp_dir().join(unique("bypass-key"));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, REAL_KEY).unwrap();
        let target = format!(
            "[[targets]]\nname = \"api\"\nhosts = [\"{HOST}\"]\ncidrs = [\"{API_IP}/32\"]\nports = \"443\"\nprotocol = \"https\"\nupstream = \"{}\"\nca_file = \"{}\"\ncredential = {{ header = \"authorization\", scheme = \"Bearer\", file = \"{}\" }}\n",
            up.addr,
            up.ca_file.display(),
            key.display()
        );
        let gw = Gateway::start(
            &cg,
            GatewayOptions {
                listener,
                extra_toml: vec![target],
                policies: Some(request_policies()),
                ..Default::default()
            },
        );
        Self { cg, gw, _up: up, dir }
    }

    /// An unprivileged agent's exchange with API_IP:443 (see the
    /// netclient's `exchange`), TLS with `sni` unless `sni` is None.
    fn exchange(&self, sni: Option<&str>, extra: Value) -> Value {
        let mut spec = json!({"op": "exchange", "host": API_IP, "port": 443});
        if let Some(sni) = sni {
            spec["tls"] = json!({"sni": sni});
        }
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        Client::agent(&self.cg).net(spec).json()
    }
}

impl Drop for Https {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plaintext HTTP target `plain` on 127.0.0.2 (an echoing origin that
/// reports the request line it received), with extra `[listener]` lines.
fn plain(tag: &str, listener: Vec<String>, policies: Vec<(String, String)>) -> (TestCgroup, Upstream, Gateway) {
    let cg = TestCgroup::new(&unique(tag));
    let up = Upstream::start("127.0.0.2");
    let target = "[[targets]]\nname = \"plain\"\ncidrs = [\"127.0.0.2/32\"]\nprotocol = \"http\"\n".to_owned();
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            listener,
            extra_toml: vec![target],
            policies: Some(policies),
            ..Default::default()
        },
    );
    (cg, up, gw)
}

/// `GET path` with `Host: host`, one request then close.
fn get(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

/// The status code of a raw HTTP answer (0 if none).
fn status(out: &Value) -> u16 {
    out["received"]
        .as_str()
        .and_then(|r| r.strip_prefix("HTTP/1.1 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
