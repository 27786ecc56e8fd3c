//! The redirect rules: built-in, from the config file, and added at runtime.
//! Runtime rules persist in the state directory. Every change is compiled and
//! checked before it replaces what the kernel has.
use std::{collections::HashMap, path::PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, PortRange, RuleAction, RuleSpec, Transport},
    kernel::rules::{compile, CompiledRules, KernelRule},
};
use gateway_common::{FIRST_RULE_SLOT, MAX_RULE_SLOTS};

/// Where a rule was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleSource {
    /// Added with `interlock rules add`, kept in the state directory.
    Runtime,
    /// From the config file.
    Config,
    /// Implied by `pass_loopback`.
    Builtin,
}

/// Errors changing or loading rules (operator input).
#[derive(Debug, thiserror::Error)]
pub enum RuleBookError {
    /// A rule with this name exists.
    #[error("a rule named `{0}` already exists")]
    Duplicate(String),
    /// No rule with this name.
    #[error("no rule named `{0}`")]
    NotFound(String),
    /// The rule is not a runtime rule.
    #[error("rule `{name}` comes from the {origin:?} rules; change the config file instead")]
    NotRuntime {
        /// Name.
        name: String,
        /// Where it was defined.
        origin: RuleSource,
    },
    /// The rule itself is malformed.
    #[error("rule `{name}`: {message}")]
    Invalid {
        /// Name.
        name: String,
        /// Why.
        message: String,
    },
    /// The whole set cannot be put in the kernel.
    #[error("{0}")]
    Capacity(String),
    /// The state file is unreadable or malformed.
    #[error("rule state {path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StateFile {
    rules: Vec<RuleSpec>,
}

/// The rule set and its counter slots.
pub struct RuleBook {
    runtime: Vec<RuleSpec>,
    config: Vec<RuleSpec>,
    builtin: Vec<RuleSpec>,
    slots: HashMap<String, u16>,
    state_file: PathBuf,
}

fn builtin_rules(config: &Config) -> Vec<RuleSpec> {
    let mut rules = Vec::new();
    let mut add = |name: &str, cidr: &str, ports: PortRange| {
        rules.push(RuleSpec {
            name: name.to_owned(),
            cidr: cidr.parse::<IpNet>().expect("static CIDR"),
            ports,
            action: RuleAction::Pass,
            protocol: Transport::Tcp,
        });
    };
    if config.intercept.pass_loopback {
        add("builtin-loopback-v4", "127.0.0.0/8", PortRange::ALL);
        add("builtin-loopback-v6", "::1/128", PortRange::ALL);
    }
    rules
}

impl RuleBook {
    /// Builds the book from config and the persisted runtime rules.
    pub fn load(config: &Config) -> Result<Self, RuleBookError> {
        let state_file = config.paths.state_dir.join("rules.json");
        let runtime = crate::persist::load_json::<StateFile>(&state_file)
            .map_err(|e| RuleBookError::State {
                path: state_file.clone(),
                message: e.to_string(),
            })?
            .rules;
        let mut book = Self {
            runtime,
            config: config.rules.clone(),
            builtin: builtin_rules(config),
            slots: HashMap::new(),
            state_file,
        };
        for rule in &book.runtime {
            rule.validate().map_err(|message| RuleBookError::State {
                path: book.state_file.clone(),
                message: format!("rule `{}`: {message}", rule.name),
            })?;
        }
        book.check_names()?;
        book.assign_slots()?;
        Ok(book)
    }

    /// Every rule with its source. Runtime rules come first, so an operator's
    /// rule wins a tie (same network, same port width) over config and built-ins.
    pub fn all(&self) -> impl Iterator<Item = (RuleSource, &RuleSpec)> {
        self.runtime
            .iter()
            .map(|r| (RuleSource::Runtime, r))
            .chain(self.config.iter().map(|r| (RuleSource::Config, r)))
            .chain(self.builtin.iter().map(|r| (RuleSource::Builtin, r)))
    }

    /// The counter slot of a rule.
    pub fn slot(&self, name: &str) -> Option<u16> {
        self.slots.get(name).copied()
    }

    fn check_names(&self) -> Result<(), RuleBookError> {
        let mut seen = std::collections::HashSet::new();
        for (_, r) in self.all() {
            if !seen.insert(r.name.as_str()) {
                return Err(RuleBookError::Duplicate(r.name.clone()));
            }
        }
        Ok(())
    }

    /// Gives every rule a slot, keeping existing ones; returns newly used slots.
    fn assign_slots(&mut self) -> Result<Vec<u16>, RuleBookError> {
        let names: Vec<String> = self.all().map(|(_, r)| r.name.clone()).collect();
        self.slots.retain(|name, _| names.contains(name));
        let mut fresh = Vec::new();
        for name in names {
            if self.slots.contains_key(&name) {
                continue;
            }
            let used: std::collections::HashSet<u16> = self.slots.values().copied().collect();
            let slot = (FIRST_RULE_SLOT..MAX_RULE_SLOTS as u16)
                .find(|s| !used.contains(s))
                .ok_or_else(|| {
                    RuleBookError::Capacity(format!("more than {} rules", MAX_RULE_SLOTS as u16 - FIRST_RULE_SLOT))
                })?;
            self.slots.insert(name, slot);
            fresh.push(slot);
        }
        Ok(fresh)
    }

    /// The kernel's view of the rules.
    pub fn compile(&self) -> Result<CompiledRules, RuleBookError> {
        let rules: Vec<KernelRule> = self
            .all()
            .map(|(_, r)| KernelRule {
                slot: self.slots[&r.name],
                cidr: r.cidr,
                port_lo: r.ports.lo,
                port_hi: r.ports.hi,
                action: r.action.to_kernel(),
                protocol: r.protocol.ip_protocol(),
            })
            .collect();
        compile(&rules).map_err(|e| RuleBookError::Capacity(e.to_string()))
    }

    /// Adds a runtime rule; returns the compiled set and the new slot. Nothing
    /// changes if the result could not be compiled.
    pub fn add(&mut self, rule: RuleSpec) -> Result<(CompiledRules, Vec<u16>), RuleBookError> {
        rule.validate().map_err(|message| RuleBookError::Invalid {
            name: rule.name.clone(),
            message,
        })?;
        if self.all().any(|(_, r)| r.name == rule.name) {
            return Err(RuleBookError::Duplicate(rule.name));
        }
        self.runtime.insert(0, rule);
        let result = self.assign_slots().and_then(|fresh| Ok((self.compile()?, fresh)));
        if result.is_err() {
            self.runtime.remove(0);
            self.assign_slots()?;
        }
        result
    }

    /// Removes a runtime rule; returns the compiled set.
    pub fn remove(&mut self, name: &str) -> Result<CompiledRules, RuleBookError> {
        let Some(pos) = self.runtime.iter().position(|r| r.name == name) else {
            return match self.all().find(|(_, r)| r.name == name) {
                Some((origin, _)) => Err(RuleBookError::NotRuntime {
                    name: name.to_owned(),
                    origin,
                }),
                None => Err(RuleBookError::NotFound(name.to_owned())),
            };
        };
        let removed = self.runtime.remove(pos);
        match self.assign_slots().and_then(|_| self.compile()) {
            Ok(compiled) => Ok(compiled),
            Err(e) => {
                self.runtime.insert(pos, removed);
                self.assign_slots()?;
                Err(e)
            }
        }
    }

    /// Replaces the config-file rules (on reload); returns the compiled set and new slots.
    pub fn replace_config(&mut self, config: &Config) -> Result<(CompiledRules, Vec<u16>), RuleBookError> {
        let old = (
            std::mem::replace(&mut self.config, config.rules.clone()),
            std::mem::replace(&mut self.builtin, builtin_rules(config)),
        );
        let result = self
            .check_names()
            .and_then(|()| self.assign_slots())
            .and_then(|fresh| Ok((self.compile()?, fresh)));
        if result.is_err() {
            (self.config, self.builtin) = old;
            self.assign_slots()?;
        }
        result
    }

    /// Writes the runtime rules to the state file (atomically).
    pub fn persist(&self) -> Result<(), RuleBookError> {
        let state = StateFile {
            rules: self.runtime.clone(),
        };
        crate::persist::save_json(&self.state_file, &state).map_err(|e| RuleBookError::State {
            path: self.state_file.clone(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(dir: &std::path::Path) -> RuleBook {
        let mut config = Config::default();
        config.paths.state_dir = dir.to_owned();
        RuleBook::load(&config).unwrap()
    }

    fn spec(name: &str, cidr: &str, action: RuleAction) -> RuleSpec {
        RuleSpec {
            name: name.into(),
            cidr: cidr.parse().unwrap(),
            ports: PortRange::ALL,
            action,
            protocol: Transport::Tcp,
        }
    }

    #[test]
    fn runtime_rules_persist_and_reload() {
        let dir = tempdir();
        let mut b = book(&dir);
        b.add(spec("block-db", "10.9.0.0/16", RuleAction::Deny)).unwrap();
        b.persist().unwrap();
        let b2 = book(&dir);
        assert!(b2.all().any(|(s, r)| s == RuleSource::Runtime && r.name == "block-db"));
        assert!(b2.slot("block-db").is_some());
    }

    #[test]
    fn duplicates_and_builtin_removal_are_refused() {
        let dir = tempdir();
        let mut b = book(&dir);
        b.add(spec("x", "10.0.0.0/8", RuleAction::Pass)).unwrap();
        assert!(matches!(
            b.add(spec("x", "10.0.0.0/8", RuleAction::Pass)),
            Err(RuleBookError::Duplicate(_))
        ));
        assert!(matches!(
            b.remove("builtin-loopback-v4"),
            Err(RuleBookError::NotRuntime { .. })
        ));
        assert!(matches!(b.remove("nope"), Err(RuleBookError::NotFound(_))));
        b.remove("x").unwrap();
        assert!(b.slot("x").is_none());
    }

    #[test]
    fn a_rule_that_cannot_compile_leaves_the_book_unchanged() {
        let dir = tempdir();
        let mut b = book(&dir);
        for i in 0..14 {
            b.add(RuleSpec {
                ports: PortRange {
                    lo: 1000 + i,
                    hi: 1000 + i,
                },
                ..spec(&format!("r{i}"), "10.0.0.0/8", RuleAction::Deny)
            })
            .unwrap();
        }
        let before: Vec<String> = b.all().map(|(_, r)| r.name.clone()).collect();
        // 14 + s14 + s15 = 16 fit; s16 overflows the 16-entry limit.
        b.add(RuleSpec {
            ports: PortRange { lo: 2000, hi: 2000 },
            ..spec("s14", "10.0.0.0/8", RuleAction::Deny)
        })
        .unwrap();
        b.add(RuleSpec {
            ports: PortRange { lo: 2001, hi: 2001 },
            ..spec("s15", "10.0.0.0/8", RuleAction::Deny)
        })
        .unwrap();
        let err = b.add(RuleSpec {
            ports: PortRange { lo: 2002, hi: 2002 },
            ..spec("s16", "10.0.0.0/8", RuleAction::Deny)
        });
        assert!(matches!(err, Err(RuleBookError::Capacity(_))), "{:?}", err.err());
        assert!(b.slot("s16").is_none());
        assert_eq!(b.all().count(), before.len() + 2);
    }

    #[test]
    fn corrupt_state_file_names_file_and_line() {
        let dir = tempdir();
        std::fs::write(dir.join("rules.json"), "{\n  \"rules\": [ {\"name\": 1} ]\n}").unwrap();
        let mut config = Config::default();
        config.paths.state_dir = dir.clone();
        let err = RuleBook::load(&config).err().unwrap().to_string();
        assert!(err.contains("rules.json") && err.contains("line 2"), "{err}");
    }

    fn tempdir() -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("interlock-rulebook-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
