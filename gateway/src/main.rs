//! The `interlock` command line. Each subcommand calls into the library.
use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gateway::{
    cli,
    config::{PortRange, RuleAction, RuleSpec, Transport},
    control::RevokeRequest,
    daemon,
    policy::ActionKind,
    review,
};

/// jemalloc, measured against glibc's allocator and mimalloc in the bench
/// (bench/OPTIMISATIONS.md): less time in malloc on the proxy path, and
/// freed memory goes back to the system after load.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"narenas:1,dirty_decay_ms:300,muzzy_decay_ms:0,background_thread:true\0";

#[derive(Parser)]
#[command(
    name = "interlock",
    version,
    about = "Host-level gateway that controls what AI agents reach"
)]
struct Cli {
    /// Configuration file (TOML). Without it, the embedded defaults apply.
    #[arg(short, long, global = true, env = "INTERLOCK_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the kernel programs and run the gateway.
    Run,
    /// Show programs, pins, rules, counters and live connections.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Names agents resolved through the gateway, with the addresses they
    /// are bound to (connects there are judged as the name).
    Names {
        /// Only this address.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List or edit redirect rules on the running gateway.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Run a command as an agent, inside the gateway-managed cgroup.
    Exec {
        /// Cgroup to run in (default: the first configured agent cgroup).
        #[arg(long)]
        cgroup: Option<String>,
        /// Pass this inherited descriptor on to the command (repeatable);
        /// every other one above stderr is closed, since a socket opened
        /// outside the agent cgroup would reach the agent unhooked.
        #[arg(long = "keep-fd", value_name = "FD")]
        keep_fd: Vec<i32>,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// Remove the pinned kernel programs and maps. Agents stop being intercepted.
    Detach,
    /// Grant an agent time-limited access on top of policy.
    Grant {
        /// Agent name.
        #[arg(long)]
        agent: String,
        /// Target name or ip:port.
        #[arg(long)]
        target: String,
        /// connect, http_request or sql_statement (repeatable; default all).
        #[arg(long = "action")]
        actions: Vec<String>,
        /// How long, e.g. 30m, 2h.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// List grants, or end one early.
    Grants {
        #[command(subcommand)]
        command: Option<GrantsCommand>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The local CA used for TLS interception.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Cut off processes at once: new connections refused in the kernel, live sessions cut.
    Revoke {
        /// A process (and the children it starts).
        #[arg(long, group = "what")]
        pid: Option<u32>,
        /// Every process running this executable, now or later.
        #[arg(long, group = "what")]
        exe: Option<String>,
        /// A cgroup and its descendants.
        #[arg(long, group = "what")]
        cgroup: Option<String>,
        /// Every process the named agent matches, now or later.
        #[arg(long, group = "what")]
        agent: Option<String>,
        /// Every process of a user.
        #[arg(long, group = "what")]
        uid: Option<u32>,
        /// Lift it automatically after this long (e.g. 1h).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// Why (recorded with who issued it).
        #[arg(long)]
        reason: String,
    },
    /// List revocations in force.
    Revocations {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lift a revocation.
    Unrevoke {
        /// Revocation id (r-N).
        id: String,
    },
    /// Check policy files, or explain a decision.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Requests held for review: list, show, approve, deny.
    Approvals {
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// Verify, search, follow and export the audit trail.
    Audit {
        #[command(subcommand)]
        command: cli::AuditCommand,
    },
}

#[derive(Subcommand)]
enum ApprovalsCommand {
    /// Reviews of this run.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One review, whole.
    Show {
        /// Review id (rv-N).
        id: String,
    },
    /// Approve a held request (this one only, unless a scope is given).
    Approve {
        /// Review id (rv-N).
        id: String,
        /// Also let the agent's identical requests through for this long (e.g. 30m).
        #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "grant_for")]
        identical_for: Option<std::time::Duration>,
        /// Turn the approval into a grant for the agent on the target for this long.
        #[arg(long, value_parser = humantime::parse_duration)]
        grant_for: Option<std::time::Duration>,
    },
    /// Deny a held request.
    Deny {
        /// Review id (rv-N).
        id: String,
        /// Why (shown to the agent and recorded).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Print the CA certificate (PEM) for agents' trust stores.
    Export,
}

#[derive(Subcommand)]
enum GrantsCommand {
    /// End a grant before it expires.
    Revoke {
        /// Grant id (g-N).
        id: String,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy directory (default: the configured one) against its schema.
    Check {
        /// Directory with one *.cedarschema and *.cedar files.
        dir: Option<PathBuf>,
    },
    /// Show the decision for a request and the policies that made it.
    Explain {
        /// A configured agent name.
        #[arg(long, conflicts_with = "pid", required_unless_present = "pid")]
        agent: Option<String>,
        /// A live process (named by the configured agents).
        #[arg(long)]
        pid: Option<u32>,
        /// A configured target name, or an address like 10.0.0.5:5432.
        #[arg(long)]
        target: String,
        /// An HTTP request: METHOD PATH.
        #[arg(long, num_args = 2, value_names = ["METHOD", "PATH"], conflicts_with = "sql")]
        http: Option<Vec<String>>,
        /// A SQL statement.
        #[arg(long)]
        sql: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// List rules with their counters.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a rule (kept across restarts).
    Add {
        /// Rule name.
        name: String,
        /// Destination network, e.g. 10.0.0.0/8 or 2001:db8::/32.
        #[arg(long)]
        cidr: ipnet::IpNet,
        /// Port or range, e.g. 5432 or 1024-65535.
        #[arg(long, default_value = "1-65535")]
        ports: PortRange,
        /// redirect, pass or deny.
        #[arg(long)]
        action: RuleAction,
        /// tcp or udp (a udp rule can only pass or deny).
        #[arg(long, default_value = "tcp")]
        protocol: Transport,
    },
    /// Remove a rule added with `rules add`.
    Remove {
        /// Rule name.
        name: String,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("interlock: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let args = Cli::parse();
    let config = cli::load_config(args.config.as_deref())?;
    if let Command::Exec {
        cgroup,
        keep_fd,
        command,
    } = &args.command
    {
        // exec replaces this process: no runtime needed.
        return cli::exec(&config, cgroup.as_deref(), keep_fd, command).map_err(Into::into);
    }
    match &args.command {
        Command::Detach => return cli::detach(&config).map_err(Into::into),
        Command::Policy { command } => return policy(&config, command),
        Command::Audit { command } => return cli::audit(&config, command).map_err(Into::into),
        Command::Ca {
            command: CaCommand::Export,
        } => return cli::ca_export(&config).map_err(Into::into),
        _ => {}
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        match args.command {
            Command::Run => daemon::run(config, args.config).await?,
            Command::Approvals { command } => match command {
                ApprovalsCommand::List { json } => cli::approvals_list(&config, json).await?,
                ApprovalsCommand::Show { id } => cli::approvals_show(&config, id).await?,
                ApprovalsCommand::Approve {
                    id,
                    identical_for,
                    grant_for,
                } => {
                    let minutes = |d: std::time::Duration| d.as_secs().div_ceil(60).max(1);
                    let scope = match (identical_for, grant_for) {
                        (Some(d), _) => review::Scope::Identical { minutes: minutes(d) },
                        (None, Some(d)) => review::Scope::Grant { minutes: minutes(d) },
                        (None, None) => review::Scope::Once,
                    };
                    cli::approvals_approve(&config, id, scope).await?
                }
                ApprovalsCommand::Deny { id, reason } => cli::approvals_deny(&config, id, reason).await?,
            },
            Command::Status { json } => cli::status(&config, json).await?,
            Command::Names { ip, json } => cli::names(&config, ip, json).await?,
            Command::Rules { command } => match command {
                RulesCommand::List { json } => cli::rules_list(&config, json).await?,
                RulesCommand::Add {
                    name,
                    cidr,
                    ports,
                    action,
                    protocol,
                } => {
                    cli::rules_add(
                        &config,
                        RuleSpec {
                            name,
                            cidr,
                            ports,
                            action,
                            protocol,
                        },
                    )
                    .await?
                }
                RulesCommand::Remove { name } => cli::rules_remove(&config, name).await?,
            },
            Command::Grant {
                agent,
                target,
                actions,
                duration,
                reason,
            } => cli::grant(&config, agent, target, actions, duration, reason).await?,
            Command::Grants { command: None, json } => cli::grants_list(&config, json).await?,
            Command::Revoke {
                pid,
                exe,
                cgroup,
                agent,
                uid,
                duration,
                reason,
            } => {
                let request = RevokeRequest {
                    pid,
                    exe,
                    cgroup,
                    agent,
                    uid,
                    seconds: duration.map(|d| d.as_secs().max(1)),
                    reason,
                };
                cli::revoke(&config, request).await?
            }
            Command::Revocations { json } => cli::revocations(&config, json).await?,
            Command::Unrevoke { id } => cli::unrevoke(&config, id).await?,
            Command::Grants {
                command: Some(GrantsCommand::Revoke { id }),
                ..
            } => cli::grants_revoke(&config, id).await?,
            Command::Exec { .. }
            | Command::Detach
            | Command::Policy { .. }
            | Command::Ca { .. }
            | Command::Audit { .. } => {
                unreachable!("handled above")
            }
        }
        Ok(())
    })
}

fn policy(config: &gateway::config::Config, command: &PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check { dir } => cli::policy_check(config, dir.as_deref())?,
        PolicyCommand::Explain {
            agent,
            pid,
            target,
            http,
            sql,
            json,
        } => {
            let subject = match (agent, pid) {
                (Some(name), _) => cli::Subject::Agent(name.clone()),
                (None, Some(pid)) => cli::Subject::Pid(*pid),
                (None, None) => anyhow::bail!("give --agent NAME or --pid PID"),
            };
            let action = match (http, sql) {
                (Some(h), _) => ActionKind::http(&h[0].to_uppercase(), &h[1]),
                (None, Some(sql)) => gateway::sql::classify(sql)?,
                (None, None) => ActionKind::Connect,
            };
            cli::policy_explain(config, subject, target, action, *json)?;
        }
    }
    Ok(())
}
