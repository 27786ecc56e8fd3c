//! Per-agent shares of the gateway: connections held at once, new
//! connections per second, requests per second. An agent past its share is
//! refused while the others are served. A refusal burst is recorded once:
//! the first refusal as usual (a connection or exchange event with its
//! reason), the rest counted and recorded as `limited` events about once a
//! second while the burst lasts, so a flood cannot flood the audit trail.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    audit::{self, Event, EventSink},
    config::{LimitsConfig, Rate},
    types::AgentName,
};

pub mod budget;

pub use budget::{Budget, OverBudget, Reserved};

/// Which limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// The agent holds its share of connections.
    Connections,
    /// The agent opens connections faster than its rate.
    ConnectionRate,
    /// The agent sends requests faster than its rate.
    RequestRate,
}

impl Limit {
    fn name(self) -> &'static str {
        match self {
            Self::Connections => "max_connections_per_agent",
            Self::ConnectionRate => "connection_rate",
            Self::RequestRate => "request_rate",
        }
    }
}

/// A refusal by a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Which limit.
    pub limit: Limit,
    /// Why, in words.
    pub reason: String,
    /// The first refusal of a burst: record it as usual. Later ones in the
    /// burst are counted into a `limited` event instead.
    pub record: bool,
}

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            last: now,
        }
    }

    fn take(&mut self, rate: Rate, now: Instant) -> bool {
        if rate.per_second <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Refusals of one agent by one limit, not yet recorded.
#[derive(Debug, Clone)]
struct Burst {
    reason: String,
    uncounted: u64,
    last: Instant,
}

#[derive(Debug)]
struct AgentState {
    open: usize,
    connections: Bucket,
    requests: Bucket,
    bursts: HashMap<Limit, Burst>,
}

/// The limits and every agent's use of them.
#[derive(Debug)]
pub struct Limits {
    config: LimitsConfig,
    share: usize,
    agents: Mutex<HashMap<AgentName, AgentState>>,
    /// Memory for messages held whole, across all sessions.
    pub budget: Arc<Budget>,
}

/// Quiet time after which a burst of refusals is over.
const BURST_GAP: Duration = Duration::from_secs(1);

/// Agents kept track of; idle ones are forgotten past this.
const AGENTS_LIMIT: usize = 4096;

/// One connection of an agent's share; given back on drop.
#[derive(Debug)]
pub struct ShareGuard {
    limits: Arc<Limits>,
    agent: AgentName,
}

impl Drop for ShareGuard {
    fn drop(&mut self) {
        let mut agents = self.limits.lock();
        if let Some(state) = agents.get_mut(&self.agent) {
            state.open = state.open.saturating_sub(1);
        }
    }
}

impl Limits {
    /// From config; `max_connections` is the listener's global maximum.
    pub fn new(config: &LimitsConfig, max_connections: usize) -> Self {
        Self {
            share: config.connections_per_agent(max_connections),
            config: config.clone(),
            agents: Mutex::default(),
            budget: Budget::new(config.buffer_budget.0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentName, AgentState>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state<'a>(
        &self,
        agents: &'a mut HashMap<AgentName, AgentState>,
        agent: &AgentName,
        now: Instant,
    ) -> &'a mut AgentState {
        if agents.len() >= AGENTS_LIMIT && !agents.contains_key(agent) {
            agents.retain(|_, s| s.open > 0 || !s.bursts.is_empty());
        }
        agents.entry(agent.clone()).or_insert_with(|| AgentState {
            open: 0,
            connections: Bucket::full(self.config.connection_rate, now),
            requests: Bucket::full(self.config.request_rate, now),
            bursts: HashMap::new(),
        })
    }

    /// Takes one of `agent`'s connections, or says which limit refuses it.
    pub fn admit_connection(self: &Arc<Self>, agent: &AgentName) -> Result<ShareGuard, Refused> {
        let now = Instant::now();
        let mut agents = self.lock();
        let state = self.state(&mut agents, agent, now);
        let refused = if state.open >= self.share {
            Some((
                Limit::Connections,
                format!("agent {agent} holds its share of connections ({} at once)", self.share),
            ))
        } else if !state.connections.take(self.config.connection_rate, now) {
            Some((
                Limit::ConnectionRate,
                format!(
                    "agent {agent} opens connections faster than {}/s (burst {})",
                    self.config.connection_rate.per_second, self.config.connection_rate.burst
                ),
            ))
        } else {
            None
        };
        match refused {
            Some((limit, reason)) => Err(refusal(state, limit, reason, now)),
            None => {
                state.open += 1;
                Ok(ShareGuard {
                    limits: self.clone(),
                    agent: agent.clone(),
                })
            }
        }
    }

    /// Counts one request of `agent`, or refuses it past its rate.
    pub fn admit_request(&self, agent: &AgentName) -> Result<(), Refused> {
        if self.config.request_rate.per_second <= 0.0 {
            // Off: no shared lock on every request.
            return Ok(());
        }
        let now = Instant::now();
        let mut agents = self.lock();
        let state = self.state(&mut agents, agent, now);
        if state.requests.take(self.config.request_rate, now) {
            return Ok(());
        }
        let rate = self.config.request_rate;
        let reason = format!(
            "agent {agent} sends requests faster than {}/s (burst {})",
            rate.per_second, rate.burst
        );
        Err(refusal(state, Limit::RequestRate, reason, now))
    }

    /// The refusals counted since the last call, as events; bursts that
    /// have gone quiet are closed (their next refusal is recorded as usual).
    fn take_counts(&self, now: Instant) -> Vec<Event> {
        let mut out = Vec::new();
        let mut agents = self.lock();
        for (agent, state) in agents.iter_mut() {
            state.bursts.retain(|limit, burst| {
                if burst.uncounted > 0 {
                    out.push(Event::Limited {
                        time: audit::now(),
                        agent: agent.clone(),
                        limit: limit.name().to_owned(),
                        reason: burst.reason.clone(),
                        refused: burst.uncounted,
                    });
                    burst.uncounted = 0;
                }
                now.saturating_duration_since(burst.last) < BURST_GAP
            });
        }
        out
    }

    /// Records the counted refusals about once a second, until the task is dropped.
    pub async fn record_counts(self: Arc<Self>, events: EventSink) {
        let mut tick = tokio::time::interval(BURST_GAP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for event in self.take_counts(Instant::now()) {
                if let Err(e) = events.record(event).await {
                    tracing::error!("limit refusals not recorded: {e}");
                }
            }
        }
    }
}

/// Notes a refusal in its burst: the first is to be recorded, the rest counted.
fn refusal(state: &mut AgentState, limit: Limit, reason: String, now: Instant) -> Refused {
    let record = match state.bursts.get_mut(&limit) {
        Some(burst) => {
            burst.uncounted += 1;
            burst.last = now;
            false
        }
        None => {
            state.bursts.insert(
                limit,
                Burst {
                    reason: reason.clone(),
                    uncounted: 0,
                    last: now,
                },
            );
            true
        }
    };
    Refused { limit, reason, record }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(share: usize, conn: (f64, u32), req: (f64, u32)) -> Arc<Limits> {
        let config = LimitsConfig {
            max_connections_per_agent: Some(share),
            connection_rate: Rate {
                per_second: conn.0,
                burst: conn.1,
            },
            request_rate: Rate {
                per_second: req.0,
                burst: req.1,
            },
            ..LimitsConfig::default()
        };
        Arc::new(Limits::new(&config, 100))
    }

    #[test]
    fn an_agent_past_its_share_is_refused_and_others_are_not() {
        let l = limits(2, (0.0, 0), (0.0, 0));
        let (a, b) = (AgentName("a".into()), AgentName("b".into()));
        let g1 = l.admit_connection(&a).unwrap();
        let _g2 = l.admit_connection(&a).unwrap();
        let first = l.admit_connection(&a).unwrap_err();
        assert_eq!(first.limit, Limit::Connections);
        assert!(first.record, "the first refusal of a burst is recorded");
        assert!(!l.admit_connection(&a).unwrap_err().record);
        assert!(!l.admit_connection(&a).unwrap_err().record);
        assert!(l.admit_connection(&b).is_ok(), "another agent is served");
        drop(g1);
        let _g3 = l.admit_connection(&a).expect("a share given back is usable");
        // The counted refusals become one event; a quiet burst then closes.
        let events = l.take_counts(Instant::now());
        assert_eq!(events.len(), 1);
        let Event::Limited { refused, ref limit, .. } = events[0] else {
            panic!("{events:?}")
        };
        assert_eq!((refused, limit.as_str()), (2, "max_connections_per_agent"));
        assert!(l.take_counts(Instant::now() + BURST_GAP * 2).is_empty());
        assert!(
            l.admit_connection(&a).unwrap_err().record,
            "a new burst is recorded again"
        );
    }

    #[test]
    fn rates_refill_over_time() {
        let l = limits(100, (10.0, 3), (5.0, 2));
        let a = AgentName("a".into());
        let mut guards = Vec::new();
        for _ in 0..3 {
            guards.push(l.admit_connection(&a).unwrap());
        }
        assert_eq!(l.admit_connection(&a).unwrap_err().limit, Limit::ConnectionRate);
        assert!(l.admit_request(&a).is_ok());
        assert!(l.admit_request(&a).is_ok());
        assert_eq!(l.admit_request(&a).unwrap_err().limit, Limit::RequestRate);
        std::thread::sleep(Duration::from_millis(250));
        assert!(l.admit_connection(&a).is_ok(), "tokens came back");
        assert!(l.admit_request(&a).is_ok());
    }
}
