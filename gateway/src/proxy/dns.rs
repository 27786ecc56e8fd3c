//! The gateway's resolver for agents: every question an agent sends to port
//! 53 (UDP through the listener's datagram socket, TCP as a session of its
//! own) is read, checked by the exfiltration guards, judged by policy
//! (action `dns_query`, through the one decision path) and then forwarded
//! to the server the agent asked, or `[dns] upstreams`, over a marked
//! socket; or answered REFUSED (NXDOMAIN if configured). Every question is
//! an audit event with its answers.
use std::{net::SocketAddr, sync::Arc, time::Instant};

use hickory_proto::op::ResponseCode;

use super::{judge, ProxyCtx};
use crate::{
    audit::{self, DnsQueryEvent, DnsTransport, Event},
    config::{OverLimit, RefuseWith},
    identity::Identity,
    policy::{ActionKind, Decision, Ruling, TargetRef},
    types::{AgentName, DnsFacts, OrigDst, Wire},
};

pub mod cache;
pub mod forward;
pub mod guard;
pub mod message;
mod tcp;

pub use guard::Guards;
pub use tcp::serve_tcp;

/// Who asked, from where, and which server they meant.
pub struct DnsCaller {
    /// The agent.
    pub agent: AgentName,
    /// The calling process.
    pub identity: Identity,
    /// The agent's socket as the gateway sees it.
    pub peer: SocketAddr,
    /// The server the agent sent the question to.
    pub server: OrigDst,
    /// How it came.
    pub transport: DnsTransport,
}

/// What differs for DNS on the decision path: a guard's finding refuses
/// before policy when `over_limit = "refuse"`.
struct Dns {
    refuse_before_policy: Option<String>,
}

impl judge::Protocol for Dns {
    type Refusal = ();

    fn before_policy(&self) -> Option<String> {
        self.refuse_before_policy.clone()
    }

    fn refusal(&self, _decision: &Decision) {}
}

/// The target a name belongs to, and whether this agent may connect to it.
fn named_target(ctx: &ProxyCtx, caller: &DnsCaller, name: &str) -> (String, bool) {
    let targets = ctx.gate.targets();
    let Some(spec) = targets.declaring(name) else {
        return (String::new(), false);
    };
    let ip = spec
        .cidrs
        .first()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.network());
    let target = TargetRef {
        name: spec.name.clone(),
        ip,
        port: spec.ports.lo,
        host: name.to_owned(),
        protocol: Wire::Tcp,
    };
    let decision = ctx.gate.policies.decide(&crate::policy::Query {
        agent: &caller.agent,
        identity: &caller.identity,
        target: &target,
        action: &ActionKind::Connect,
        now: std::time::SystemTime::now(),
    });
    (spec.name.clone(), decision.outcome != Ruling::Deny)
}

/// Answers one message from an agent (`None`: nothing can be answered, the
/// bytes hold no DNS header). Records the question's event.
pub async fn answer(ctx: &Arc<ProxyCtx>, caller: &DnsCaller, bytes: &[u8]) -> Option<Vec<u8>> {
    let began = Instant::now();
    let time = audit::now();
    let server_ref = ctx.gate.targets().resolve(caller.server, Wire::Dns);
    let mut event = DnsQueryEvent {
        time,
        agent: caller.agent.clone(),
        identity: caller.identity.clone(),
        peer: caller.peer,
        transport: caller.transport,
        server: caller.server.0,
        target: server_ref.name.clone(),
        name: String::new(),
        qtype: String::new(),
        guard: String::new(),
        decision: Decision::deny(Vec::new(), String::new()),
        upstream: None,
        cached: false,
        rcode: String::new(),
        answers: Vec::new(),
        duration_us: 0,
        error: None,
        bound: 0,
    };
    let q = match message::parse_question(bytes) {
        Ok(q) => q,
        Err(e) => {
            event.decision = Decision::deny(Vec::new(), format!("refused: {e}"));
            event.error = Some(e.to_string());
            let reply = match &e {
                message::Malformed::Shape { id, .. } => {
                    event.rcode = message::rcode_name(ResponseCode::FormErr);
                    Some(message::refusal(*id, None, ResponseCode::FormErr))
                }
                message::Malformed::Unreadable(_) => None,
            };
            finish(ctx, event, began).await;
            return reply;
        }
    };
    event.name = q.text.clone();
    event.qtype = message::qtype_text(q.qtype);
    let dns = &ctx.dns;
    let found = dns.check(&caller.agent, &q.text, &q.labels);
    let (guard, guard_reason) = found.map_or((String::new(), None), |(g, why)| (g.to_owned(), Some(why)));
    event.guard = guard.clone();
    let (target, reachable) = named_target(ctx, caller, &q.text);
    let action = ActionKind::DnsQuery {
        facts: DnsFacts {
            name: q.text.clone(),
            qtype: event.qtype.clone(),
            target,
            reachable,
            listed: dns
                .config()
                .names
                .iter()
                .any(|p| crate::targets::host_matches(p, &q.text)),
            guard,
        },
    };
    let protocol = Dns {
        refuse_before_policy: guard_reason
            .filter(|_| dns.config().over_limit == OverLimit::Refuse)
            .map(|why| format!("refused by the DNS exfiltration guard: {why}")),
    };
    let decision = match ctx.limits.admit_request(&caller.agent) {
        Err(refused) => Decision::deny(Vec::new(), refused.reason),
        Ok(()) => {
            let judge_caller = judge::Caller {
                agent: &caller.agent,
                identity: &caller.identity,
                target: &server_ref,
                review_webhook: None,
            };
            judge::judge(ctx, &judge_caller, &action, &protocol).await.decision
        }
    };
    event.decision = decision.clone();
    if decision.outcome != Ruling::Allow {
        let rcode = match dns.config().refuse_with {
            RefuseWith::Refused => ResponseCode::Refused,
            RefuseWith::Nxdomain => ResponseCode::NXDomain,
        };
        tracing::info!(agent = %caller.agent, name = %q.text, qtype = %event.qtype, policies = ?decision.policies, "dns refused: {}", decision.reason);
        event.rcode = message::rcode_name(rcode);
        finish(ctx, event, began).await;
        return Some(message::refusal(q.id, Some(&q), rcode));
    }
    let upstreams: Vec<OrigDst> = match dns.config().upstreams.as_slice() {
        [] => vec![caller.server],
        list => list.iter().copied().map(OrigDst).collect(),
    };
    // Kept under the first server the query would go to.
    let route = upstreams[0];
    let udp = caller.transport == DnsTransport::Udp;
    let got = match dns.cache.get(&caller.agent, route, &q, udp) {
        Some(hit) => {
            event.cached = true;
            Ok((hit.upstream, hit.bytes, hit.answer))
        }
        None => forward::ask(ctx, &q, &upstreams, caller.transport, dns.config().timeout)
            .await
            .map(|(upstream, bytes, read)| {
                dns.cache.put(&caller.agent, route, &q, upstream, &bytes);
                (upstream, message::with_id(bytes, q.id), read)
            }),
    };
    let reply = match got {
        Ok((upstream, bytes, read)) => {
            event.upstream = Some(upstream.0);
            event.rcode = message::rcode_name(read.rcode);
            event.answers = read.answers;
            if dns.trusts(upstream.0) {
                let grace = dns.config().binding_grace;
                event.bound = ctx.gate.learned.learn(&caller.agent, &q.text, &read.addresses, grace);
            }
            bytes
        }
        Err(e) => {
            tracing::info!(agent = %caller.agent, name = %q.text, "dns upstream failed: {e}");
            event.rcode = message::rcode_name(ResponseCode::ServFail);
            event.error = Some(e);
            message::refusal(q.id, Some(&q), ResponseCode::ServFail)
        }
    };
    finish(ctx, event, began).await;
    Some(reply)
}

async fn finish(ctx: &ProxyCtx, mut event: DnsQueryEvent, began: Instant) {
    event.duration_us = began.elapsed().as_micros() as u64;
    if let Err(e) = Box::pin(ctx.events.record(Event::DnsQuery(Box::new(event)))).await {
        tracing::error!("dns event lost: {e}");
    }
}
