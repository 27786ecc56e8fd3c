//! `interlock status`.
use std::fmt::Write as _;

use crate::{
    config::Config,
    control::{ClientError, Request, Response, StatusReport},
    kernel::{pinned_links, KernelMaps, PinLayout},
};

use super::{ask, CliError};

/// Prints the daemon's status, or the pinned kernel state if it is down.
pub async fn status(config: &Config, json: bool) -> Result<(), CliError> {
    match ask(config, Request::Status).await {
        Ok(Response::Status(report)) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                print!("{}", render(&report));
            }
            Ok(())
        }
        Ok(other) => Err(CliError::Other(format!("unexpected answer: {other:?}"))),
        Err(CliError::Client(ClientError::NotRunning { .. })) => offline(config, json),
        Err(e) => Err(e),
    }
}

fn render(r: &StatusReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "gateway: running (pid {}), listening on {}",
        r.pid,
        r.listeners.join(", ")
    );
    let _ = writeln!(s, "attached to: {}", r.cgroups.join(", "));
    let _ = writeln!(s, "pins: {} ({} links)", r.pin_dir, r.links.len());
    for l in &r.links {
        let _ = writeln!(s, "  {:<40} link {:>5}  prog {:>5}", l.name, l.link_id, l.program_id);
    }
    let _ = writeln!(s, "rules:");
    s += &super::table::rules("  ", &r.rules, Some(r.default_counts));
    let _ = writeln!(s, "udp/443 (QUIC) refused: {}", r.quic_denied);
    let _ = writeln!(s, "dns to the gateway's resolver: {}", r.dns_redirected);
    let _ = writeln!(s, "dns over tls (tcp/853) refused: {}", r.dot_denied);
    let _ = writeln!(s, "other udp refused: {}", r.udp_denied);
    let _ = writeln!(s, "sockets refused (icmp, raw, sctp...): {}", r.socket_denied);
    let _ = writeln!(s, "names learned from DNS answers: {}", r.names_total);
    s += &super::names::table("  ", &r.names);
    if r.names_total > r.names.len() {
        let _ = writeln!(s, "  ... {} more (`interlock names`)", r.names_total - r.names.len());
    }
    let _ = writeln!(
        s,
        "tracked sockets: {} (hand-offs pending: {})",
        r.tracked_sockets, r.pending_handoffs
    );
    let _ = writeln!(s, "connections: {}", r.connections.len());
    for c in &r.connections {
        let _ = writeln!(
            s,
            "  {:<6} pid {:<7} uid {:<6} {:<28} -> {:<24} up {:>10} down {:>10} {:>6}s{}",
            c.id.to_string(),
            c.pid,
            c.uid,
            c.exe.as_deref().unwrap_or("?"),
            c.orig_dst.to_string(),
            c.bytes_up,
            c.bytes_down,
            c.age_secs,
            if c.parked { " parked" } else { "" }
        );
    }
    s
}

/// Status from the pins alone: what the kernel still enforces with no daemon.
fn offline(config: &Config, json: bool) -> Result<(), CliError> {
    let links = pinned_links(&config.paths.pin_dir);
    let counters = KernelMaps::from_pins(&PinLayout::new(&config.paths.pin_dir))
        .and_then(|m| m.stats())
        .ok();
    if json {
        let value = serde_json::json!({
            "running": false,
            "pin_dir": config.paths.pin_dir,
            "links": links,
            "counters_by_slot": counters.map(|c| c.into_iter().map(|(slot, s)| (slot.to_string(), [s.redirected, s.passed, s.denied])).collect::<std::collections::BTreeMap<_, _>>()),
        });
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        return Ok(());
    }
    println!("gateway: NOT RUNNING");
    if links.is_empty() && !nix::unistd::geteuid().is_root() {
        println!(
            "no programs pinned at {} visible to this user: run as root to see what the kernel enforces",
            config.paths.pin_dir.display()
        );
    } else if links.is_empty() {
        println!(
            "no programs pinned at {}: agents are not intercepted",
            config.paths.pin_dir.display()
        );
    } else {
        println!(
            "{} program links still pinned at {}: agents' redirected connections are refused until the gateway is back",
            links.len(),
            config.paths.pin_dir.display()
        );
        for l in &links {
            println!("  {:<40} link {:>5}  prog {:>5}", l.name, l.link_id, l.program_id);
        }
    }
    Ok(())
}
