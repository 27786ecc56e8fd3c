//! The rules table shared by `status` and `rules list`.
use std::fmt::Write as _;

use crate::control::RuleView;

/// One row.
fn row(out: &mut String, indent: &str, cells: [&str; 9]) {
    let [name, source, cidr, ports, proto, action, redirected, passed, denied] = cells;
    let _ = writeln!(
        out,
        "{indent}{name:<24} {source:<8} {cidr:<22} {ports:<12} {proto:<5} {action:<9} {redirected:>10} {passed:>8} {denied:>8}"
    );
}

/// Renders rules with their counters, plus the default row when given.
pub(super) fn rules(indent: &str, rules: &[RuleView], default: Option<(u64, u64, u64)>) -> String {
    let mut out = String::new();
    row(
        &mut out,
        indent,
        [
            "NAME",
            "SOURCE",
            "CIDR",
            "PORTS",
            "PROTO",
            "ACTION",
            "REDIRECTED",
            "PASSED",
            "DENIED",
        ],
    );
    for v in rules {
        let source = format!("{:?}", v.source).to_lowercase();
        let (ports, action, proto) = (v.ports.to_string(), v.action.to_string(), v.protocol.to_string());
        let counts = [v.redirected.to_string(), v.passed.to_string(), v.denied.to_string()];
        row(
            &mut out,
            indent,
            [
                &v.name, &source, &v.cidr, &ports, &proto, &action, &counts[0], &counts[1], &counts[2],
            ],
        );
    }
    if let Some((r, p, d)) = default {
        let counts = [r.to_string(), p.to_string(), d.to_string()];
        row(
            &mut out,
            indent,
            [
                "(no rule matched)",
                "-",
                "-",
                "-",
                "tcp",
                "default",
                &counts[0],
                &counts[1],
                &counts[2],
            ],
        );
    }
    out
}
