//! The report: per scenario, Interlock's throughput as a ratio to the direct
//! connection and to each peer, and the latency it adds, from the median of
//! the interleaved rounds; absolute numbers only in the details.
use std::collections::BTreeMap;

use serde_json::Value;

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Markdown for a result document.
pub fn markdown(summary: &Value) -> String {
    let samples = summary["samples"].as_array().cloned().unwrap_or_default();
    let mut by: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for s in &samples {
        let scenario = s["scenario"].as_str().unwrap_or_default().to_owned();
        if !order.contains(&scenario) {
            order.push(scenario.clone());
        }
        by.entry((scenario, s["contender"].as_str().unwrap_or_default().to_owned()))
            .or_default()
            .push(s);
    }
    let stat = |scenario: &str, who: &str, key: &str| {
        median(
            by.get(&(scenario.to_owned(), who.to_owned()))
                .map(|v| v.iter().filter_map(|s| s[key].as_f64()).collect())
                .unwrap_or_default(),
        )
    };
    let mut out = String::from("# Interlock side by side\n\n");
    out.push_str(&format!(
        "{} rounds of {} s per contender, interleaved. Interlock runs with its eBPF redirect, policy (Cedar) and the audit trail (SQLite, every event committed before the answer) on.\n\n",
        summary["rounds"], summary["seconds_per_run"]
    ));
    out.push_str("## Summary\n\n| scenario | vs direct | vs peers | added p50 | added p99 |\n|---|---|---|---|---|\n");
    for scenario in &order {
        let mine = stat(scenario, "interlock", "rate");
        let direct = stat(scenario, "direct", "rate");
        let peers: Vec<String> = by
            .keys()
            .filter(|(s, c)| s == scenario && c != "interlock" && c != "direct")
            .map(|(_, c)| format!("{:.2}× {c}", mine / stat(scenario, c, "rate")))
            .collect();
        let added = |key: &str| {
            let d = stat(scenario, "interlock", key) - stat(scenario, "direct", key);
            if d.is_finite() {
                format!("{d:+.0} µs")
            } else {
                "—".into()
            }
        };
        out.push_str(&format!(
            "| {scenario} | {:.2}× | {} | {} | {} |\n",
            mine / direct,
            peers.join(", "),
            added("p50_us"),
            added("p99_us")
        ));
    }
    out.push_str(&format!(
        "\nGateway CPU per HTTP request: {:.1} µs. Gateway peak RSS: {} MiB.\n",
        summary["gateway_cpu_us_per_http_request"].as_f64().unwrap_or(0.0),
        summary["gateway_peak_rss_kib"].as_u64().unwrap_or(0) / 1024
    ));
    out.push_str("\nLatency here is measured at full load (wrk; pgbench reports its average), not at a fixed rate with coordinated-omission correction: wrk2 is not packaged here.\n");
    out.push_str(
        "\n## Details (medians)\n\n| scenario | contender | rate /s | p50 µs | p99 µs |\n|---|---|---|---|---|\n",
    );
    for (scenario, who) in by.keys() {
        out.push_str(&format!(
            "| {scenario} | {who} | {:.0} | {:.0} | {:.0} |\n",
            stat(scenario, who, "rate"),
            stat(scenario, who, "p50_us"),
            stat(scenario, who, "p99_us")
        ));
    }
    out
}
