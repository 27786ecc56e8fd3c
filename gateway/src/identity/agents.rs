//! Naming the caller: the first configured agent whose every given field
//! matches the identity. A process that matches none is `unknown`.
use regex::Regex;

use super::{proc, Identity, ProcessInfo};
use crate::{
    config::{AgentSpec, UNKNOWN_AGENT},
    types::AgentName,
};

struct Compiled {
    spec: AgentSpec,
    cmdline: Option<Regex>,
}

/// The ordered agent definitions.
pub struct AgentMatcher {
    agents: Vec<Compiled>,
}

/// How far up the process tree `parent = ...` looks.
const MAX_PARENT_DEPTH: usize = 8;

impl AgentMatcher {
    /// Compiles validated specs (config validation already checked the patterns).
    pub fn new(specs: &[AgentSpec]) -> Result<Self, String> {
        let agents = specs
            .iter()
            .map(|spec| {
                let cmdline = spec
                    .cmdline
                    .as_deref()
                    .map(Regex::new)
                    .transpose()
                    .map_err(|e| format!("agent `{}`: cmdline pattern: {e}", spec.name))?;
                Ok(Compiled {
                    spec: spec.clone(),
                    cmdline,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { agents })
    }

    /// The agent name for an identity.
    pub fn name_of(&self, identity: &Identity) -> AgentName {
        let facts = Facts {
            uid: identity.uid,
            user: identity.user.as_deref(),
            process: identity.process.as_deref(),
        };
        self.match_upto(self.agents.len(), &facts, 0).map_or_else(
            || AgentName(UNKNOWN_AGENT.to_owned()),
            |name| AgentName(name.to_owned()),
        )
    }

    /// First agent among the first `limit` that matches.
    fn match_upto(&self, limit: usize, facts: &Facts<'_>, depth: usize) -> Option<&str> {
        self.agents[..limit]
            .iter()
            .enumerate()
            .find(|(i, a)| self.matches(*i, a, facts, depth))
            .map(|(_, a)| a.spec.name.as_str())
    }

    fn matches(&self, index: usize, agent: &Compiled, facts: &Facts<'_>, depth: usize) -> bool {
        let spec = &agent.spec;
        let p = facts.process;
        let field = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| have == Some(w));
        if spec.uid.is_some_and(|uid| uid != facts.uid) || !field(&spec.user, facts.user) {
            return false;
        }
        // Every other field needs /proc facts; without them, only uid/user agents match.
        let needs_process = spec.exe.is_some()
            || spec.cmdline.is_some()
            || spec.cgroup.is_some()
            || spec.unit.is_some()
            || spec.container.is_some()
            || spec.parent.is_some();
        if !needs_process {
            return true;
        }
        let Some(p) = p else { return false };
        let exe = p.exe.as_ref().and_then(|e| e.to_str());
        if !field(&spec.exe, exe) || !field(&spec.unit, p.systemd_unit.as_deref()) {
            return false;
        }
        if let Some(re) = &agent.cmdline {
            if !re.is_match(&p.cmdline.join(" ")) {
                return false;
            }
        }
        if let Some(prefix) = &spec.cgroup {
            let prefix = prefix.trim_end_matches('/');
            let ok = p
                .cgroup
                .as_deref()
                .is_some_and(|c| c == prefix || c.starts_with(&format!("{prefix}/")));
            if !ok {
                return false;
            }
        }
        if let Some(want) = &spec.container {
            if !p.container.as_ref().is_some_and(|c| c.id.starts_with(want.as_str())) {
                return false;
            }
        }
        if let Some(parent) = &spec.parent {
            if depth >= MAX_PARENT_DEPTH {
                return false;
            }
            let Some(parent_facts) = proc::read_process(p.ppid) else {
                return false;
            };
            let facts = Facts {
                uid: parent_facts.0,
                user: parent_facts.1.as_deref(),
                process: Some(&parent_facts.2),
            };
            // Only agents defined earlier can be parents, so this terminates.
            return self.match_upto(index, &facts, depth + 1) == Some(parent.as_str());
        }
        true
    }
}

struct Facts<'a> {
    uid: u32,
    user: Option<&'a str>,
    process: Option<&'a ProcessInfo>,
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, sync::Arc};

    use super::*;
    use crate::{
        identity::Container,
        types::{CgroupId, SocketCookie},
    };

    fn identity(uid: u32, process: Option<ProcessInfo>) -> Identity {
        Identity {
            pid: 10,
            tid: 10,
            uid,
            gid: uid,
            comm: "x".into(),
            cgroup_id: CgroupId(1),
            socket_cookie: SocketCookie(1),
            netns_cookie: 1,
            user: Some(if uid == 0 { "root".into() } else { "alice".into() }),
            process: process.map(Arc::new),
        }
    }

    fn process(exe: &str, cmdline: &[&str], cgroup: &str, ppid: u32) -> ProcessInfo {
        ProcessInfo {
            start_ticks: 1,
            exe: Some(PathBuf::from(exe)),
            cmdline: cmdline.iter().map(|s| (*s).to_owned()).collect(),
            ppid,
            cgroup: Some(cgroup.into()),
            container: Some(Container {
                runtime: "docker".into(),
                id: "4f1e2d3c4b5a6978".repeat(4),
                pod_uid: None,
            }),
            systemd_unit: Some("agent.service".into()),
        }
    }

    fn matcher(toml_text: &str) -> AgentMatcher {
        let config = crate::config::Config::parse(toml_text, std::path::Path::new("t.toml")).unwrap();
        AgentMatcher::new(&config.agents).unwrap()
    }

    #[test]
    fn first_match_wins_and_every_field_must_match() {
        let m = matcher(
            r#"
[[agents]]
name = "research"
exe = "/usr/bin/python3"
cgroup = "/agents/research"
[[agents]]
name = "any-python"
cmdline = "^python3 .*agent\\.py"
[[agents]]
name = "alice"
user = "alice"
[[agents]]
name = "in-container"
container = "4f1e2d3c4b5a"
unit = "agent.service"
"#,
        );
        let name = |uid, p| m.name_of(&identity(uid, p)).0;
        assert_eq!(
            name(
                0,
                Some(process(
                    "/usr/bin/python3",
                    &["python3", "agent.py"],
                    "/agents/research/x",
                    1
                ))
            ),
            "research"
        );
        // The cgroup prefix is path-aware: /agents/research2 is not under /agents/research.
        assert_eq!(
            name(
                0,
                Some(process(
                    "/usr/bin/python3",
                    &["python3", "agent.py"],
                    "/agents/research2",
                    1
                ))
            ),
            "any-python"
        );
        assert_eq!(name(1000, Some(process("/usr/bin/curl", &["curl"], "/", 1))), "alice");
        assert_eq!(
            name(0, Some(process("/usr/bin/curl", &["curl"], "/", 1))),
            "in-container"
        );
        // Without /proc facts only uid/user agents can match.
        assert_eq!(name(1000, None), "alice");
        assert_eq!(name(0, None), UNKNOWN_AGENT);
    }

    #[test]
    fn parent_agent_matches_through_the_process_tree() {
        let me = std::env::current_exe().unwrap();
        let m = matcher(&format!(
            "[[agents]]\nname = \"runner\"\nexe = \"{}\"\n[[agents]]\nname = \"child-of-runner\"\nparent = \"runner\"\n",
            me.display()
        ));
        let child = process("/bin/sh", &["sh"], "/", std::process::id());
        assert_eq!(m.name_of(&identity(0, Some(child))).0, "child-of-runner");
        let orphan = process("/bin/sh", &["sh"], "/", 1);
        assert_eq!(m.name_of(&identity(0, Some(orphan))).0, UNKNOWN_AGENT);
    }

    #[test]
    fn agent_definitions_are_validated() {
        let bad = [
            "[[agents]]\nname = \"x\"\n",
            "[[agents]]\nname = \"unknown\"\nuid = 1\n",
            "[[agents]]\nname = \"x\"\ncmdline = \"(\"\n",
            "[[agents]]\nname = \"x\"\nparent = \"y\"\n",
            "[[agents]]\nname = \"x\"\ncontainer = \"abc\"\n",
        ];
        for text in bad {
            let err = crate::config::Config::parse(text, std::path::Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("agents[0]"), "{text} -> {err}");
        }
    }
}
