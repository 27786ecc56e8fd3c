//! `interlock policy check` and `interlock policy explain`: run locally on the
//! files, so they work before a policy is deployed and with the daemon down.
use std::{net::SocketAddr, path::Path, time::SystemTime};

use super::CliError;
use crate::{
    config::Config,
    identity::{self, AgentMatcher, Identity},
    policy::{decide, embedded_sources, read_dir_sources, ActionKind, LoadedPolicies, Query},
    targets::TargetTable,
    types::{AgentName, OrigDst},
};

fn load(config: &Config, dir: Option<&Path>) -> Result<LoadedPolicies, CliError> {
    let mut sources = match dir.or(config.policy.dir.as_deref()) {
        Some(d) => read_dir_sources(d).map_err(|e| CliError::Other(e.to_string()))?,
        None => embedded_sources(),
    };
    sources.mask_names = crate::masking::Catalog::new(&config.masking).names();
    sources.load_with(&[]).map_err(|e| CliError::Other(e.to_string()))
}

/// Validates a policy directory (default: the configured one) and lists it.
pub fn policy_check(config: &Config, dir: Option<&Path>) -> Result<(), CliError> {
    let set = load(config, dir)?;
    println!("ok: {} policies from {}", set.len(), set.source);
    let mut ids: Vec<&String> = set.meta_ids().collect();
    ids.sort_by_key(|id| set.meta(id).map(|m| (m.file.clone(), m.line)));
    for id in ids {
        let Some(m) = set.meta(id) else { continue };
        let mut notes = Vec::new();
        if m.review {
            notes.push("review".to_owned());
        }
        if !m.mask.is_empty() {
            notes.push(format!("mask={}", m.mask.join(",")));
        }
        let effect = format!("{:?}", m.effect).to_lowercase();
        println!("  {id:<36} {effect:<7} {}:{} {}", m.file, m.line, notes.join(" "));
    }
    Ok(())
}

/// Who to explain a decision for.
pub enum Subject {
    /// A configured agent name (identity attributes left empty).
    Agent(String),
    /// A live process, named by the configured agents.
    Pid(u32),
}

/// Prints the decision for one hypothetical request and what decided it.
pub fn policy_explain(
    config: &Config,
    subject: Subject,
    target: &str,
    action: ActionKind,
    json: bool,
) -> Result<(), CliError> {
    let set = load(config, None)?;
    let matcher = AgentMatcher::new(&config.agents).map_err(CliError::Other)?;
    let (agent, identity) = match subject {
        Subject::Pid(pid) => {
            let id = identity::from_pid(pid).ok_or_else(|| CliError::Other(format!("no process {pid}")))?;
            (matcher.name_of(&id), id)
        }
        Subject::Agent(name) => (AgentName(name), Identity::unattributed()),
    };
    let table = TargetTable::new(&config.targets);
    // An address is judged as a name this agent resolved to it through the
    // running gateway, as a connect would be.
    let mut names_note = None;
    let mut unresolved = None;
    let target = match table.by_name(target) {
        Some(t) => t,
        None => {
            let addr: SocketAddr = target.parse().map_err(|_| {
                CliError::Other(format!(
                    "`{target}` is neither a configured target nor an address like 10.0.0.5:5432"
                ))
            })?;
            let dst = OrigDst(addr);
            let learned: Vec<String> = match super::names::live(config, addr.ip())? {
                Some(all) => {
                    let mine: Vec<String> = all
                        .iter()
                        .filter(|b| b.agent == agent)
                        .map(|b| b.name.clone())
                        .collect();
                    let shown: Vec<String> = all
                        .iter()
                        .map(|b| format!("{} (agent {}, {} s left)", b.name, b.agent, b.expires_in))
                        .collect();
                    names_note = Some(if shown.is_empty() {
                        "none learned for this address".to_owned()
                    } else {
                        shown.join(", ")
                    });
                    mine
                }
                None => {
                    names_note = Some("gateway not running; judged by address alone".to_owned());
                    Vec::new()
                }
            };
            let judged = table.judge_unnamed(dst, &learned);
            unresolved = judged.unresolved();
            table.resolve_host(dst, judged.bound.as_deref(), crate::types::Wire::Tcp)
        }
    };
    let decision = match unresolved {
        Some(reason) => crate::policy::Decision::deny(Vec::new(), reason),
        None => decide(
            &set,
            &Query {
                agent: &agent,
                identity: &identity,
                target: &target,
                action: &action,
                now: SystemTime::now(),
            },
        ),
    };
    if json {
        let value = serde_json::json!({"agent": agent, "target": target, "action": action, "decision": decision, "names": names_note});
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        return Ok(());
    }
    println!("decision: {:?}", decision.outcome);
    println!("agent:    {agent} (pid {}, uid {})", identity.pid, identity.uid);
    println!("target:   {} ({}:{})", target.name, target.ip, target.port);
    if !target.host.is_empty() {
        println!("as name:  {}", target.host);
    }
    if let Some(note) = &names_note {
        println!("names:    {note}");
    }
    println!("action:   {}", action.cedar_name());
    println!("reason:   {}", decision.reason);
    for id in &decision.policies {
        let place = set
            .meta(id)
            .map(|m| format!("{}:{}", m.file, m.line))
            .unwrap_or_default();
        println!("  by {id} at {place}");
    }
    if !decision.mask.is_empty() {
        println!("mask:     {}", decision.mask.join(", "));
    }
    Ok(())
}
