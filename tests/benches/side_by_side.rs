//! Interlock side by side with a direct connection and the proxies a user
//! would pick instead (haproxy, nginx, pgbouncer), in one run: contenders
//! interleaved round by round so machine drift hits all alike; results as
//! ratios and added latency. Bounded: a few rounds of a few seconds each.
//! Needs root (Interlock is measured with its real eBPF redirect).
//!
//! Environment: BENCH_QUICK=1 (fewer, shorter rounds), BENCH_ONLY=text
//! (scenarios whose names contain it), BENCH_CONTENDERS=a,b, BENCH_DIR
//! (where the JSON and Markdown go), BENCH_BODY_CAP ([audit] body_cap),
//! BENCH_HOLD=secs (keep everything up for a profiler), BENCH_PERF=dir (a
//! `perf record` of one Interlock round per scenario, for `cargo xtask
//! flamegraph`), BENCH_CALLGRIND=1 (the gateway runs under callgrind:
//! instructions per request as well; `dump`: and a profile of each), OHA (oha's path).
use std::{process::Command, time::Duration};

use interlock_tests::{
    cpu_seconds, nat::NatRule, postgres::PgServer, unique, Client, Gateway, GatewayOptions, TestCgroup,
};
use serde_json::{json, Value};

#[path = "side_by_side/http.rs"]
mod http;
#[path = "side_by_side/peers.rs"]
mod peers;
#[path = "side_by_side/pg.rs"]
mod pg;
#[path = "side_by_side/profile.rs"]
mod profile;
#[path = "side_by_side/report.rs"]
mod report;

/// Interlock's policy in the bench: connections and HTTP allowed, SQL by
/// statement (the shipped read-only-db rules without the agent names).
const BENCH_POLICY: &str = r#"
@id("bench-connect")
permit (principal, action == Interlock::Action::"connect", resource);

@id("bench-http")
permit (principal, action == Interlock::Action::"http_request", resource);

@id("bench-select-only")
permit (principal, action == Interlock::Action::"sql_statement", resource)
when { context.kind == "select" && context.statements == 1 };

@id("no-unbounded-writes")
forbid (principal, action == Interlock::Action::"sql_statement", resource)
when { (context.kind == "update" || context.kind == "delete") && !context.has_where };

@id("ddl-needs-review")
@review
forbid (principal, action == Interlock::Action::"sql_statement", resource)
when { context.kind == "ddl" };
"#;

/// Microseconds from wrk/pgbench's `12.3ms`-style text.
pub fn micros(text: &str) -> f64 {
    let t = text.trim();
    let (num, scale) = if let Some(v) = t.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = t.strip_suffix("ms") {
        (v, 1_000.0)
    } else if let Some(v) = t.strip_suffix('s') {
        (v, 1_000_000.0)
    } else {
        (t, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * scale
}

/// A load tool: its path from the environment (`OHA` for oha), else by name.
pub fn tool(name: &str) -> String {
    std::env::var(name.to_uppercase()).unwrap_or_else(|_| name.to_owned())
}

/// Where a contender's client runs: outside any agent cgroup, or as an agent.
pub enum Via<'a> {
    Plain,
    Agent(&'a TestCgroup),
}

fn run(via: &Via<'_>, program: &str, args: &[String]) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let (ok, out, err) = match via {
        Via::Plain => {
            let o = cmd.output().unwrap_or_else(|e| panic!("run {program}: {e}"));
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        }
        Via::Agent(cg) => {
            let r = Client::new(*cg).run_cmd(cmd);
            (r.success, r.stdout, r.stderr)
        }
    };
    assert!(ok, "{program} {args:?} failed: {err}\n{out}");
    out
}

/// A line of /proc/<pid>/status, in KiB.
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Under callgrind (about 50 times slower): the short and the long run's
/// seconds, long enough for TLS handshakes to finish in the short one.
const CALLGRIND_SECS: (u32, u32) = (6, 18);

/// The run's settings and its samples.
pub struct Bench {
    /// Rounds per scenario.
    pub rounds: u32,
    /// Seconds per measurement.
    pub secs: u32,
    only: String,
    contenders: String,
    quick: bool,
    gateway_pid: u32,
    /// `BENCH_PERF`: where recordings of the gateway go.
    perf_dir: Option<std::path::PathBuf>,
    /// `BENCH_CALLGRIND`: the gateway runs under callgrind; count its instructions.
    pub callgrind: bool,
    samples: Vec<Value>,
}

impl Bench {
    /// Rounds of `scenario`: one at half the direct maximum, an overload
    /// for every contender but direct on this VM (the report shows it, no
    /// target reads it), so the full run stays under 20 minutes.
    pub fn rounds_of(&self, scenario: &str) -> u32 {
        if scenario.contains("half the direct") {
            1
        } else {
            self.rounds
        }
    }

    /// Whether `scenario` is selected.
    pub fn runs(&self, scenario: &str) -> bool {
        // --quick keeps one of each kind (under 3 minutes): no 64 KB, one
        // client count, no -C, no rate at the direct maximum (overload).
        const SKIPPED_WHEN_QUICK: [&str; 5] = ["64 KB", " 1 clients", "32 clients", "-C ", "half the direct"];
        // Under callgrind the PostgreSQL scenarios are the one-client ones.
        let counted = self.callgrind && scenario.contains(" 1 clients");
        if self.quick && !counted && SKIPPED_WHEN_QUICK.iter().any(|s| scenario.contains(s)) {
            return false;
        }
        scenario.contains(&self.only)
    }

    /// Whether `contender` is selected for `scenario`. In `--quick` runs
    /// the redirect variants run in the keep-alive 1 KB scenario only.
    pub fn wanted(&self, scenario: &str, contender: &str) -> bool {
        let variant = contender.starts_with("interlock-");
        if self.quick && variant && scenario != "HTTP/1.1 keep-alive, 1 KB" {
            return false;
        }
        self.contenders.is_empty() || self.contenders.split(',').any(|c| c == contender)
    }

    /// Runs one measurement of `secs` seconds (`args` builds the client's
    /// arguments for a length); for Interlock, also the gateway's CPU time
    /// per request, and under callgrind its instructions per request.
    #[allow(clippy::too_many_arguments)]
    pub fn measure(
        &mut self,
        scenario: &str,
        contender: &str,
        round: u32,
        via: &Via<'_>,
        program: &str,
        args: impl Fn(u32) -> Vec<String>,
        parse: impl Fn(&str) -> Value,
    ) {
        let counted = self.callgrind && contender.starts_with("interlock");
        // Under callgrind: a short run and a long one, and the difference
        // between them per request, so what every run pays once (logins,
        // TLS handshakes, the client's start) is not spread over requests.
        let short = counted.then(|| {
            profile::callgrind_zero(self.gateway_pid);
            let s = parse(&run(via, program, &args(CALLGRIND_SECS.0)));
            (
                s["count"].as_f64().unwrap_or(0.0),
                profile::callgrind_instructions(self.gateway_pid, None),
            )
        });
        let secs = if counted { CALLGRIND_SECS.1 } else { self.secs };
        let recording = self
            .perf_dir
            .as_deref()
            .filter(|_| contender == "interlock" && round == self.rounds_of(scenario) / 2)
            .map(|dir| profile::start(dir, scenario, self.gateway_pid, secs));
        if counted {
            profile::callgrind_zero(self.gateway_pid);
        }
        let cpu0 = cpu_seconds(self.gateway_pid);
        let mut s = parse(&run(via, program, &args(secs)));
        let cpu = cpu_seconds(self.gateway_pid) - cpu0;
        let long = counted.then(|| profile::callgrind_instructions(self.gateway_pid, Some(scenario)));
        if let Some(recording) = recording {
            recording.finish();
        }
        let count = s["count"].as_f64().unwrap_or(0.0);
        if contender.starts_with("interlock") && count > 0.0 {
            s["gateway_cpu_us"] = json!(cpu / count * 1e6);
        }
        if let (Some((short_count, short_ir)), Some(long_ir)) = (short, long) {
            if count > short_count {
                s["gateway_instructions"] = json!((long_ir - short_ir) / (count - short_count));
            }
        }
        eprintln!(
            "{scenario} round {round} {contender}: {:.0}/s p50 {:.0}us p99 {:.0}us",
            s["rate"].as_f64().unwrap_or(0.0),
            s["p50_us"].as_f64().unwrap_or(f64::NAN),
            s["p99_us"].as_f64().unwrap_or(f64::NAN)
        );
        s["scenario"] = json!(scenario);
        s["contender"] = json!(contender);
        s["round"] = json!(round);
        self.samples.push(s);
    }

    /// Median rate of a contender in a scenario.
    pub fn median_rate(&self, scenario: &str, contender: &str) -> f64 {
        let mut v: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s["scenario"] == scenario && s["contender"] == contender)
            .filter_map(|s| s["rate"].as_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

fn main() {
    interlock_tests::require_root();
    for tool in [
        "/usr/sbin/nginx",
        "/usr/sbin/haproxy",
        "/usr/sbin/pgbouncer",
        "/usr/bin/wrk",
    ] {
        assert!(
            peers::installed(tool),
            "{tool} is missing: run `cargo xtask bench`, which installs it"
        );
    }
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let origin = peers::origin("127.0.0.60");
    // The iptables variant's own origin: a connection conntrack NATed to the
    // gateway leaves its tuple behind (TIME_WAIT, 120 s) with that binding,
    // and later connections of other contenders from the same client port to
    // the same origin address collapsed into 1 s SYN retries (direct 30k ->
    // 2k -> 0.3k req/s over the new-connection rounds).
    let nat_origin = peers::origin("127.0.0.63");
    let haproxy = peers::haproxy("127.0.0.61", origin.addr);
    let nginx = peers::nginx_proxy("127.0.0.62", origin.addr);
    let pg = PgServer::start("127.0.0.64");
    pg.shop();
    let password = interlock_tests::postgres::APP_PASSWORD;
    let direct_pg = format!(
        "host={} port={} dbname=shop user=app password={password}",
        pg.addr.ip(),
        pg.addr.port()
    );
    run(
        &Via::Plain,
        "pgbench",
        &["-i".into(), "-s".into(), "2".into(), "-q".into(), direct_pg.clone()],
    );
    let session = peers::pgbouncer("127.0.0.65", pg.addr, password, "session");
    let transaction = peers::pgbouncer("127.0.0.67", pg.addr, password, "transaction");
    let (tls_origin, origin_ca) = peers::tls_origin("127.0.0.70");
    let credential = "Bearer sk-bench-real-key";
    let nginx_tls = peers::nginx_tls_injector("127.0.0.71", tls_origin.addr, &origin_ca, credential);
    let mitm = peers::mitmproxy("127.0.0.72", tls_origin.addr, &origin_ca, credential);
    let key_file = std::env::temp_dir().join(unique("bench-key"));
    std::fs::write(&key_file, "sk-bench-real-key").expect("key file");
    let cg = TestCgroup::new(&unique("bench-sbs"));
    // Clients of the two non-eBPF ways in run here: no programs attached.
    let plain_cg = TestCgroup::new(&unique("bench-sbs-nat"));
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port()
    };
    let explicit_port = free_port();
    // NAT rules end at a port of their own: conntrack keeps the NAT binding
    // (client port -> listener) for 120 s after a connection closes, and the
    // eBPF variant's new connections from the same client port to the same
    // listener lost their SYNs to it (5.8k -> 2.6k req/s over rounds).
    let nat_port = free_port();
    let web = format!(
        "[[targets]]\nname = \"origin\"\ncidrs = [\"{}/32\", \"{}/32\"]\nprotocol = \"http\"\n\n\
         [[targets]]\nname = \"tls-origin\"\ncidrs = [\"{}/32\"]\nprotocol = \"https\"\nca_file = \"{}\"\n\
         credential = {{ header = \"authorization\", scheme = \"Bearer\", file = \"{}\" }}\n\n\
         # Every bench client is one agent, and the peers limit no client: no rate limits here.\n\
         [limits]\nconnection_rate = {{ per_second = 0, burst = 0 }}\nrequest_rate = {{ per_second = 0, burst = 0 }}\n",
        origin.addr.ip(),
        nat_origin.addr.ip(),
        tls_origin.addr.ip(),
        origin_ca.display(),
        key_file.display()
    );
    let gw = Gateway::start(
        &cg,
        GatewayOptions {
            // What a deployment logs (the daemon's default): the tests'
            // per-connection debug lines cost a few % with a connection per request.
            log_filter: Some("info".into()),
            listener: vec![
                "nat_redirect = true".into(),
                format!("nat_port = {nat_port}"),
                format!(
                    "explicit = [{{ listen = \"127.0.0.1:{explicit_port}\", destination = \"{}\" }}]",
                    origin.addr
                ),
            ],
            extra_toml: vec![
                web,
                // Masking loaded: a value detector over every text value in
                // results, and a column rule on the table pgbench reads.
                pg.target(&[
                    "detectors = [\"email\"]",
                    "columns = [ { column = \"pgbench_accounts.filler\", style = \"full\" } ]",
                ]),
                // Retention, as a deployment would have: a full run makes
                // millions of events (unbounded, its state reached 11 GB).
                format!(
                    "[audit]\nmax_records = 300000\n{}",
                    std::env::var("BENCH_BODY_CAP")
                        .map(|c| format!("body_cap = {c}\n"))
                        .unwrap_or_default()
                ),
            ],
            policies: Some(vec![("bench.cedar".into(), BENCH_POLICY.into())]),
            ..Default::default()
        },
    );
    let gateway_pid = gw.pid().expect("gateway running");
    std::thread::sleep(Duration::from_millis(500));
    let rss_idle = status_kib(gateway_pid, "VmRSS:");
    // Memory with 1,000 idle keep-alive connections (each has answered one
    // request), measured before any load: what a run leaves allocated
    // would be counted too otherwise (84 MiB here before, 132 MiB after).
    let hold_at = if std::env::var("HOLD_RAW").is_ok() {
        haproxy.addr
    } else {
        origin.addr
    };
    let held = Client::new(&cg).spawn_holding(
        "python3",
        json!({"op": "hold_many", "count": 1000, "host": hold_at.ip().to_string(),
               "port": hold_at.port(), "path": "/1k", "hold": 3}),
    );
    // Twice: half a second after the last connection was answered (the
    // connections are still settling: Interlock parks an HTTP/1.1
    // connection after `listener.park_idle` quiet, and jemalloc hands freed
    // pages back over ~300 ms), and two seconds after, the steady state
    // reported. The client holds them for three.
    std::thread::sleep(Duration::from_millis(500));
    let rss_1000_settling = status_kib(gateway_pid, "VmRSS:");
    std::thread::sleep(Duration::from_millis(1500));
    let rss_1000 = status_kib(gateway_pid, "VmRSS:");
    let report = held.finish();
    assert_eq!(report["answered"], 1000, "idle connections: {report}");
    let mut b = Bench {
        // --quick: one short round (a development loop, under 3 minutes);
        // full: three interleaved rounds (under 20 minutes on 2 cores).
        rounds: if quick { 1 } else { 3 },
        secs: if quick { 2 } else { 4 },
        only: std::env::var("BENCH_ONLY").unwrap_or_default(),
        contenders: std::env::var("BENCH_CONTENDERS").unwrap_or_default(),
        quick,
        gateway_pid,
        perf_dir: std::env::var_os("BENCH_PERF").map(Into::into),
        callgrind: std::env::var_os("BENCH_CALLGRIND").is_some(),
        samples: Vec::new(),
    };
    // Interlock three ways: the eBPF redirect; dialled explicitly; sent by
    // an iptables REDIRECT rule (what the redirect itself costs).
    let _nat = NatRule::add(&plain_cg, &nat_origin.addr, nat_port);
    let explicit = std::net::SocketAddr::from(([127, 0, 0, 1], explicit_port));
    let web: Vec<http::Contender<'_>> = vec![
        ("direct", origin.addr, Via::Plain),
        ("haproxy", haproxy.addr, Via::Plain),
        ("nginx", nginx.addr, Via::Plain),
        ("interlock", origin.addr, Via::Agent(&cg)),
        ("interlock-explicit", explicit, Via::Agent(&plain_cg)),
        ("interlock-iptables", nat_origin.addr, Via::Agent(&plain_cg)),
    ];
    http::closed_loop(&mut b, &web);
    let keepalive = "HTTP/1.1 keep-alive, 1 KB";
    let direct_max = b.median_rate(keepalive, "direct");
    let interlock_max = b.median_rate(keepalive, "interlock");
    // At half the direct maximum only direct keeps up on this VM (the load
    // generator shares the cores): the redirect variants add nothing there.
    let (without_variants, _) = web.split_at(4);
    assert_eq!(without_variants[3].0, "interlock");
    http::fixed_rate(
        &mut b,
        "HTTP 1 KB at half the direct maximum",
        direct_max / 2.0,
        without_variants,
    );
    http::fixed_rate(
        &mut b,
        "HTTP 1 KB at half Interlock's maximum",
        interlock_max / 2.0,
        &web,
    );
    // A light load, where queueing on the shared cores does not dominate:
    // what the gateway's own path adds to a request.
    http::fixed_rate(&mut b, "HTTP 1 KB at 1,000 requests/s", 1000.0, without_variants);
    let tls: Vec<http::Contender<'_>> = vec![
        ("direct", tls_origin.addr, Via::Plain),
        ("nginx", nginx_tls.addr, Via::Plain),
        ("mitmproxy", mitm.addr, Via::Plain),
        ("interlock", tls_origin.addr, Via::Agent(&cg)),
    ];
    http::tls(&mut b, &tls);
    let socket_dsn = format!(
        "host={} port={} dbname=shop user=app password={password}",
        pg.socket_dir().display(),
        pg.addr.port()
    );
    let bouncer = |p: &peers::Proc| format!("host={} port={} dbname=shop user=agent", p.addr.ip(), p.addr.port());
    let dbs: Vec<pg::Contender<'_>> = vec![
        ("direct", direct_pg.clone(), Via::Plain),
        ("direct-unix-socket", socket_dsn, Via::Plain),
        ("pgbouncer-session", bouncer(&session), Via::Plain),
        ("pgbouncer-transaction", bouncer(&transaction), Via::Plain),
        ("interlock", pg.agent_dsn(), Via::Agent(&cg)),
    ];
    pg::closed_loop(&mut b, &dbs);
    let pg_max = b.median_rate("pgbench -S -M simple, 8 clients", "direct");
    let pg_interlock = b.median_rate("pgbench -S -M simple, 8 clients", "interlock");
    pg::fixed_rate(
        &mut b,
        "pgbench -S -R at half the direct maximum, 8 clients",
        pg_max / 2.0,
        &dbs,
    );
    pg::fixed_rate(
        &mut b,
        "pgbench -S -R at half Interlock's maximum, 8 clients",
        pg_interlock / 2.0,
        &dbs,
    );
    pg::fixed_rate(&mut b, "pgbench -S -R at 1,000 transactions/s, 8 clients", 1000.0, &dbs);
    let summary = json!({
        "quick": quick,
        "rounds": b.rounds,
        "seconds_per_run": b.secs,
        "gateway_rss_idle_kib": rss_idle,
        "gateway_rss_1000_idle_kib": rss_1000,
        "gateway_rss_1000_idle_at_half_second_kib": rss_1000_settling,
        "gateway_peak_rss_kib": status_kib(gateway_pid, "VmHWM:"),
        "samples": b.samples,
    });
    let out_dir =
        std::env::var("BENCH_DIR").map_or_else(|_| std::path::PathBuf::from("bench"), std::path::PathBuf::from);
    std::fs::create_dir_all(&out_dir).expect("bench dir");
    std::fs::write(
        out_dir.join("side_by_side.json"),
        serde_json::to_string_pretty(&summary).expect("json"),
    )
    .expect("write results");
    // The criterion results (gathered by `cargo xtask bench`) and the
    // optimisation log (kept by hand) go into the same report.
    let internals: Vec<Value> = std::fs::read_to_string(out_dir.join("internals.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let log = std::fs::read_to_string(out_dir.join("OPTIMISATIONS.md")).unwrap_or_default();
    let mut flamegraphs: Vec<String> = std::fs::read_dir(&out_dir)
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| name.starts_with("flamegraph-") && name.ends_with(".svg"))
                .collect()
        })
        .unwrap_or_default();
    flamegraphs.sort();
    let md = report::markdown(&summary, &internals, &log, &flamegraphs);
    std::fs::write(out_dir.join("REPORT.md"), &md).expect("write report");
    std::fs::write(out_dir.join("ratios.svg"), report::svg(&summary)).expect("write chart");
    println!("{md}");
    let _ = std::fs::remove_file(&key_file);
    if let Ok(secs) = std::env::var("BENCH_HOLD").map(|v| v.parse::<u64>().unwrap_or(0)) {
        // Keep everything up for a profiler: `perf record -p <gateway pid>`.
        eprintln!("holding {secs} s; gateway pid {gateway_pid}");
        std::thread::sleep(Duration::from_secs(secs));
    }
}
