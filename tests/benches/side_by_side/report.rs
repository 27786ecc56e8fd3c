//! The report: per scenario, Interlock's throughput as a ratio to the direct
//! connection and to each peer, the latency it adds at a fixed rate, its CPU
//! time per request and its memory, from the medians of interleaved rounds;
//! the in-process benches (criterion) and the optimisation log beside them;
//! absolute numbers only in the details. Also a bar chart (SVG).
use std::collections::BTreeMap;

use serde_json::Value;

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Samples grouped by (scenario, contender), scenarios in run order.
struct Table<'a> {
    by: BTreeMap<(String, String), Vec<&'a Value>>,
    order: Vec<String>,
}

impl<'a> Table<'a> {
    fn new(samples: &'a [Value]) -> Self {
        let mut t = Self {
            by: BTreeMap::new(),
            order: Vec::new(),
        };
        for s in samples {
            let scenario = s["scenario"].as_str().unwrap_or_default().to_owned();
            if !t.order.contains(&scenario) {
                t.order.push(scenario.clone());
            }
            let who = s["contender"].as_str().unwrap_or_default().to_owned();
            t.by.entry((scenario, who)).or_default().push(s);
        }
        t
    }

    fn stat(&self, scenario: &str, who: &str, key: &str) -> f64 {
        median(
            self.by
                .get(&(scenario.to_owned(), who.to_owned()))
                .map(|v| v.iter().filter_map(|s| s[key].as_f64()).collect())
                .unwrap_or_default(),
        )
    }

    fn peers(&self, scenario: &str) -> Vec<String> {
        self.by
            .keys()
            .filter(|(s, c)| s == scenario && !c.starts_with("interlock") && c != "direct")
            .map(|(_, c)| c.clone())
            .collect()
    }
}

fn fixed_rate(scenario: &str) -> bool {
    scenario.contains(" at half ") || scenario.contains(" at 1,000 ")
}

fn us(v: f64) -> String {
    if v.is_finite() {
        format!("{v:+.0} µs")
    } else {
        "—".into()
    }
}

/// A horizontal bar chart of Interlock's throughput relative to direct and
/// to the best peer, one pair of bars per closed-loop scenario.
pub fn svg(summary: &Value) -> String {
    let samples = summary["samples"].as_array().cloned().unwrap_or_default();
    let t = Table::new(&samples);
    let rows: Vec<(String, f64, f64)> = t
        .order
        .iter()
        .filter(|s| !fixed_rate(s))
        .map(|s| {
            let mine = t.stat(s, "interlock", "rate");
            let best = t.peers(s).iter().map(|p| t.stat(s, p, "rate")).fold(f64::NAN, f64::max);
            (s.clone(), mine / t.stat(s, "direct", "rate"), mine / best)
        })
        .collect();
    let (left, width, bar, gap) = (430.0, 360.0, 12.0, 10.0);
    let height = 40.0 + rows.len() as f64 * (2.0 * bar + gap);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <text x=\"4\" y=\"14\">Interlock throughput as a fraction of direct (dark) and of the best peer (light); line = 1.0</text>\n",
        w = left + width + 60.0
    );
    for (i, (name, direct, peer)) in rows.iter().enumerate() {
        let y = 26.0 + i as f64 * (2.0 * bar + gap);
        let name = name.replace('&', "&amp;").replace('<', "&lt;");
        out.push_str(&format!(
            "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{name}</text>\n",
            left - 6.0,
            y + bar + 3.0
        ));
        for (j, (v, color)) in [(direct, "#1f4e79"), (peer, "#8db3e2")].into_iter().enumerate() {
            let v = if v.is_finite() { *v } else { 0.0 };
            let yy = y + j as f64 * bar;
            out.push_str(&format!(
                "<rect x=\"{left}\" y=\"{yy:.0}\" width=\"{:.1}\" height=\"{:.0}\" fill=\"{color}\"/>\
                 <text x=\"{:.1}\" y=\"{:.0}\">{v:.2}×</text>\n",
                (v.min(1.2) / 1.2) * width,
                bar - 1.0,
                left + (v.min(1.2) / 1.2) * width + 3.0,
                yy + bar - 2.0
            ));
        }
    }
    let one = left + width / 1.2;
    out.push_str(&format!(
        "<line x1=\"{one:.1}\" y1=\"20\" x2=\"{one:.1}\" y2=\"{height}\" stroke=\"#c00\" stroke-dasharray=\"3,3\"/>\n</svg>\n"
    ));
    out
}

/// The targets against what was measured.
fn targets(t: &Table<'_>, summary: &Value) -> String {
    let ratio = |scenario: &str, peer: &str| t.stat(scenario, "interlock", "rate") / t.stat(scenario, peer, "rate");
    let added = |scenario: &str| t.stat(scenario, "interlock", "p50_us") - t.stat(scenario, "direct", "p50_us");
    let https = "HTTPS keep-alive 1 KB, TLS intercepted, credential injected";
    let rss_kib = summary["gateway_rss_1000_idle_kib"].as_f64().unwrap_or(f64::NAN);
    // The target is in MB (10^6 bytes); RSS is reported in KiB.
    let (rss_mib, rss_mb) = (rss_kib / 1024.0, rss_kib * 1024.0 / 1e6);
    // A throughput ratio to a peer of at least `min`; an added p50 of at most 100 µs.
    let vs = |target: &'static str, scenario: &str, peer: &str, min: f64, digits: usize| {
        let r = ratio(scenario, peer);
        (target, format!("{r:.digits$}×"), r >= min)
    };
    let within_100us = |target: &'static str, scenario: &str| {
        let a = added(scenario);
        (target, us(a), a <= 100.0)
    };
    let rows: Vec<(&str, String, bool)> = vec![
        vs(
            "HTTP throughput ≥ 0.9× haproxy (keep-alive 1 KB)",
            "HTTP/1.1 keep-alive, 1 KB",
            "haproxy",
            0.9,
            2,
        ),
        vs("TLS interception ≥ nginx", https, "nginx", 1.0, 2),
        vs("TLS interception ≥ 20× mitmproxy", https, "mitmproxy", 20.0, 1),
        vs(
            "pgbench TPS ≥ pgbouncer session mode (-S simple, 8 clients)",
            "pgbench -S -M simple, 8 clients",
            "pgbouncer-session",
            1.0,
            2,
        ),
        within_100us(
            "added p50 ≤ 100 µs, HTTP (at half Interlock's maximum)",
            "HTTP 1 KB at half Interlock's maximum",
        ),
        within_100us(
            "added p50 ≤ 100 µs, PostgreSQL (at half Interlock's maximum)",
            "pgbench -S -R at half Interlock's maximum, 8 clients",
        ),
        within_100us(
            "added p50 ≤ 100 µs, HTTP (at 1,000 requests/s)",
            "HTTP 1 KB at 1,000 requests/s",
        ),
        within_100us(
            "added p50 ≤ 100 µs, PostgreSQL (at 1,000 transactions/s)",
            "pgbench -S -R at 1,000 transactions/s, 8 clients",
        ),
        (
            "RSS ≤ 40 MB with 1,000 idle connections",
            format!("{rss_mb:.1} MB ({rss_mib:.1} MiB)"),
            rss_mb <= 40.0,
        ),
    ];
    let mut out = String::from("## Targets\n\n| target | measured | met |\n|---|---|---|\n");
    for (target, measured, met) in rows {
        out.push_str(&format!(
            "| {target} | {measured} | {} |\n",
            if met { "yes" } else { "no" }
        ));
    }
    out.push('\n');
    out
}

/// What the eBPF redirect costs: Interlock reached three ways, same gateway.
fn ways_in(t: &Table<'_>) -> String {
    const WAYS: [(&str, &str); 3] = [
        ("interlock", "eBPF redirect"),
        ("interlock-explicit", "dialled explicitly"),
        ("interlock-iptables", "iptables REDIRECT"),
    ];
    let scenarios: Vec<&String> = t
        .order
        .iter()
        .filter(|s| t.by.contains_key(&((*s).clone(), "interlock-explicit".to_owned())))
        .collect();
    if scenarios.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\n## What the redirect costs\n\nThe same gateway reached three ways. Without the eBPF redirect no kernel record names \
         the caller: the gateway finds it with sock_diag and /proc, once per connection. Closed loop: throughput vs direct \
         (gateway CPU per request); fixed rate: added p50 / p99.\n\n| scenario |",
    );
    for (_, label) in WAYS {
        out.push_str(&format!(" {label} |"));
    }
    out.push_str("\n|---|---|---|---|\n");
    for s in scenarios {
        out.push_str(&format!("| {s} |"));
        for (who, _) in WAYS {
            let cell = if fixed_rate(s) {
                format!(
                    "{} / {}",
                    us(t.stat(s, who, "p50_us") - t.stat(s, "direct", "p50_us")),
                    us(t.stat(s, who, "p99_us") - t.stat(s, "direct", "p99_us"))
                )
            } else {
                format!(
                    "{:.2}× ({:.0} µs)",
                    t.stat(s, who, "rate") / t.stat(s, "direct", "rate"),
                    t.stat(s, who, "gateway_cpu_us")
                )
            };
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    out
}

/// Markdown for a result document; `internals` are the criterion results,
/// `log` the optimisation log, `flamegraphs` the flame graph files beside it.
pub fn markdown(summary: &Value, internals: &[Value], log: &str, flamegraphs: &[String]) -> String {
    let samples = summary["samples"].as_array().cloned().unwrap_or_default();
    let t = Table::new(&samples);
    let mut out = String::from("# Interlock side by side\n\n");
    out.push_str(&format!(
        "{} rounds of {} s per contender (one at half the direct maximum, an overload), interleaved, on one 2-core VM (load generator, proxies and origin share it). \
         Interlock runs with its eBPF redirect, policy (Cedar), masking rules loaded and the audit trail (SQLite, every event committed before the answer) on.\n\n\
         ![throughput ratios](ratios.svg)\n\n",
        summary["rounds"], summary["seconds_per_run"]
    ));
    out.push_str(&targets(&t, summary));
    out.push_str("## Throughput (closed loop)\n\n| scenario | vs direct | vs peers | gateway CPU / request |\n|---|---|---|---|\n");
    for scenario in t.order.iter().filter(|s| !fixed_rate(s)) {
        let mine = t.stat(scenario, "interlock", "rate");
        let peers: Vec<String> = t
            .peers(scenario)
            .iter()
            .map(|c| format!("{:.2}× {c}", mine / t.stat(scenario, c, "rate")))
            .collect();
        out.push_str(&format!(
            "| {scenario} | {:.2}× | {} | {:.0} µs |\n",
            mine / t.stat(scenario, "direct", "rate"),
            peers.join(", "),
            t.stat(scenario, "interlock", "gateway_cpu_us")
        ));
    }
    out.push_str(&ways_in(&t));
    out.push_str("\n## Added latency at a fixed rate (coordinated omission corrected)\n\n\
        HTTP: oha `--latency-correction`; PostgreSQL: pgbench `-R`, each transaction timed from its scheduled start.\n\n\
        | scenario | rate /s | Interlock added p50 | added p99 | peers' added p50 / p99 |\n|---|---|---|---|---|\n");
    for scenario in t.order.iter().filter(|s| fixed_rate(s)) {
        let d50 = t.stat(scenario, "direct", "p50_us");
        let d99 = t.stat(scenario, "direct", "p99_us");
        let peers: Vec<String> = t
            .peers(scenario)
            .iter()
            .map(|c| {
                format!(
                    "{c} {} / {}",
                    us(t.stat(scenario, c, "p50_us") - d50),
                    us(t.stat(scenario, c, "p99_us") - d99)
                )
            })
            .collect();
        out.push_str(&format!(
            "| {scenario} | {:.0} | {} | {} | {} |\n",
            t.stat(scenario, "direct", "rate"),
            us(t.stat(scenario, "interlock", "p50_us") - d50),
            us(t.stat(scenario, "interlock", "p99_us") - d99),
            peers.join("; ")
        ));
    }
    out.push_str(&format!(
        "\n## Memory\n\nGateway RSS idle: {} MiB; with 1,000 idle keep-alive connections (each answered once, before any load), 2 s after the last answer: {} MiB (half a second after, while they were still being parked: {} MiB); peak over the run: {} MiB.\n",
        summary["gateway_rss_idle_kib"].as_u64().unwrap_or(0) / 1024,
        summary["gateway_rss_1000_idle_kib"].as_u64().unwrap_or(0) / 1024,
        summary["gateway_rss_1000_idle_at_half_second_kib"].as_u64().unwrap_or(0) / 1024,
        summary["gateway_peak_rss_kib"].as_u64().unwrap_or(0) / 1024
    ));
    if !internals.is_empty() {
        out.push_str("\n## Gateway internals (criterion, median)\n\n| bench | time | throughput |\n|---|---|---|\n");
        for i in internals {
            let ns = i["median_ns"].as_f64().unwrap_or(f64::NAN);
            let time = if ns >= 1e6 {
                format!("{:.2} ms", ns / 1e6)
            } else if ns >= 1e3 {
                format!("{:.2} µs", ns / 1e3)
            } else {
                format!("{ns:.0} ns")
            };
            let thrpt = if let Some(b) = i["throughput"]["Bytes"].as_f64() {
                format!("{:.0} MiB/s", b / (ns / 1e9) / (1 << 20) as f64)
            } else if let Some(e) = i["throughput"]["Elements"].as_f64() {
                format!("{:.0} /s", e / (ns / 1e9))
            } else {
                String::new()
            };
            out.push_str(&format!("| {} | {time} | {thrpt} |\n", i["id"].as_str().unwrap_or("?")));
        }
    }
    if !flamegraphs.is_empty() {
        out.push_str(
            "\n## Flame graphs\n\nThe gateway under load, Interlock alone, sampled by `perf` (DWARF call \
             graphs) through one round; made by `cargo xtask flamegraph`, apart from this run (sampling \
             slows the round it covers). Each tower is rooted at its thread: tokio workers, the audit \
             store writer, the WAL checkpointer, the journal thread.\n\n",
        );
        for file in flamegraphs {
            out.push_str(&format!("- [{file}]({file})\n"));
        }
    }
    if !log.trim().is_empty() {
        out.push('\n');
        out.push_str(log.trim_end());
        out.push('\n');
    }
    out.push_str(
        "\n## Details (medians)\n\n| scenario | contender | rate /s | p50 µs | p99 µs |\n|---|---|---|---|---|\n",
    );
    for (scenario, who) in t.by.keys() {
        out.push_str(&format!(
            "| {scenario} | {who} | {:.0} | {:.0} | {:.0} |\n",
            t.stat(scenario, who, "rate"),
            t.stat(scenario, who, "p50_us"),
            t.stat(scenario, who, "p99_us")
        ));
    }
    out.push_str("\nIn closed loop pgbench reports an average latency (shown as p50) and no p99.\n");
    for s in samples.iter().filter(|s| s["failed"].as_u64().unwrap_or(0) > 0) {
        out.push_str(&format!(
            "\n**Failures:** {} round {}: {} of the streams failed.\n",
            s["contender"].as_str().unwrap_or("?"),
            s["round"],
            s["failed"]
        ));
    }
    out
}
