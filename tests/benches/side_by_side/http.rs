//! HTTP scenarios: closed-loop throughput with wrk (keep-alive 1 KB and
//! 64 KB, a new connection per request), and latency at a fixed request
//! rate with oha, whose latency correction measures each request from when
//! it was due (coordinated omission).
use std::net::SocketAddr;

use serde_json::{json, Value};

use super::{micros, Bench, Via};

/// One HTTP contender: its name, where it listens, how its client runs.
pub type Contender<'a> = (&'a str, SocketAddr, Via<'a>);

/// Reads wrk's `--latency` report.
fn parse_wrk(out: &str) -> Value {
    let (mut rate, mut p50, mut p99, mut count) = (0.0, f64::NAN, f64::NAN, 0.0);
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => p50 = micros(v),
            ["99%", v] => p99 = micros(v),
            ["Requests/sec:", v] => rate = v.parse().unwrap_or(0.0),
            [n, "requests", "in", ..] => count = n.parse().unwrap_or(0.0),
            _ => {}
        }
    }
    json!({"rate": rate, "p50_us": p50, "p99_us": p99, "count": count})
}

/// wrk for `secs` seconds over `conns` connections. Its timeout is long
/// enough for a gateway under callgrind, whose TLS handshakes take seconds.
fn wrk_args(conns: u32, secs: u32) -> Vec<String> {
    [
        "-t2",
        &format!("-c{conns}"),
        &format!("-d{secs}s"),
        "--timeout",
        "30s",
        "--latency",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Closed loop: as fast as each contender answers.
pub fn closed_loop(b: &mut Bench, contenders: &[Contender<'_>]) {
    let scenarios = [
        ("HTTP/1.1 keep-alive, 1 KB", "/1k", false, 32),
        ("HTTP/1.1 keep-alive, 64 KB", "/64k", false, 32),
        ("HTTP/1.1 new connection per request, 1 KB", "/1k", true, 8),
    ];
    for (scenario, path, close, conns) in scenarios {
        if !b.runs(scenario) {
            continue;
        }
        for round in 0..b.rounds {
            for (name, addr, via) in contenders {
                if !b.wanted(scenario, name) {
                    continue;
                }
                let args = |secs: u32| {
                    let mut args = wrk_args(conns, secs);
                    if close {
                        args.extend(["-H".into(), "Connection: close".into()]);
                    }
                    args.push(format!("http://{addr}{path}"));
                    args
                };
                b.measure(scenario, name, round, via, "wrk", args, parse_wrk);
            }
        }
    }
}

/// Reads oha's JSON summary.
fn parse_oha(out: &str) -> Value {
    let v: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("oha output: {e}: {out}"));
    let pct = |k: &str| v["latencyPercentiles"][k].as_f64().map_or(f64::NAN, |s| s * 1e6);
    let count = v["statusCodeDistribution"]
        .as_object()
        .map_or(0.0, |m| m.values().filter_map(Value::as_f64).sum());
    json!({
        "rate": v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        "p50_us": pct("p50"),
        "p99_us": pct("p99"),
        "count": count,
        "ok": v["summary"]["successRate"].as_f64().unwrap_or(0.0),
    })
}

/// Open loop at `rate` requests per second (1 KB, keep-alive), latency
/// corrected for coordinated omission.
pub fn fixed_rate(b: &mut Bench, scenario: &str, rate: f64, contenders: &[Contender<'_>]) {
    if !b.runs(scenario) || !rate.is_finite() || rate < 1.0 {
        return;
    }
    for round in 0..b.rounds_of(scenario) {
        for (name, addr, via) in contenders {
            if !b.wanted(scenario, name) {
                continue;
            }
            let args = |secs: u32| -> Vec<String> {
                vec![
                    "--no-tui".into(),
                    "--output-format".into(),
                    "json".into(),
                    "--latency-correction".into(),
                    "-q".into(),
                    format!("{rate:.0}"),
                    "-c".into(),
                    "32".into(),
                    "-z".into(),
                    format!("{secs}s"),
                    format!("http://{addr}/1k"),
                ]
            };
            let oha = super::tool("oha");
            b.measure(scenario, name, round, via, &oha, args, parse_oha);
        }
    }
}

/// TLS interception with the credential injected: HTTPS keep-alive 1 KB
/// (wrk), then an SSE stream (curl, five streams a round): time to the
/// first byte of the stream, and events per second over it.
pub fn tls(b: &mut Bench, contenders: &[Contender<'_>]) {
    let scenario = "HTTPS keep-alive 1 KB, TLS intercepted, credential injected";
    if b.runs(scenario) {
        for round in 0..b.rounds {
            for (name, addr, via) in contenders {
                if !b.wanted(scenario, name) {
                    continue;
                }
                let args = |secs: u32| {
                    let mut args = wrk_args(32, secs);
                    args.push(format!("https://{addr}/1k"));
                    args
                };
                b.measure(scenario, name, round, via, "wrk", args, parse_wrk);
            }
        }
    }
    let scenario = format!(
        "SSE stream of {} events, TLS intercepted, credential injected",
        super::peers::SSE_EVENTS
    );
    if !b.runs(&scenario) {
        return;
    }
    for round in 0..b.rounds {
        for (name, addr, via) in contenders {
            if !b.wanted(&scenario, name) {
                continue;
            }
            let script = format!(
                "for i in 1 2 3 4 5; do curl -sk --max-time 30 -o /dev/null -w '%{{time_starttransfer}} %{{time_total}} %{{size_download}}\\n' https://{addr}/events; done; true"
            );
            // Five streams, however long the measurement.
            let args = |_| vec!["-c".to_owned(), script.clone()];
            b.measure(&scenario, name, round, via, "sh", args, parse_streams);
        }
    }
}

/// Five `time_starttransfer time_total size` lines: median time to first
/// byte, and events per second over the whole request.
fn parse_streams(out: &str) -> Value {
    let mut ttfb = Vec::new();
    let mut rates = Vec::new();
    let mut failed = 0u32;
    for line in out.lines() {
        let f: Vec<f64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        match f.as_slice() {
            [first, total, size] if *size > 0.0 => {
                ttfb.push(first * 1e6);
                rates.push(super::peers::SSE_EVENTS as f64 / total.max(1e-6));
            }
            // A stream that failed is counted, not hidden.
            _ => failed += 1,
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let count = (super::peers::SSE_EVENTS * ttfb.len()) as f64;
    if failed > 0 {
        eprintln!("{failed} of the streams failed");
    }
    json!({"rate": median(rates), "p50_us": median(ttfb), "p99_us": null,
           "count": count, "failed": failed, "unit": "events/s; p50 = time to first byte"})
}
