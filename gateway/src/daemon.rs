//! `interlock run`: bring the kernel side up, serve the listeners and the
//! control socket, and on SIGTERM/SIGINT stop while leaving the pins in
//! place, so agents are refused (never let through) until the gateway returns.
use std::{path::PathBuf, sync::Arc};

use gateway_common::{Settings, DNS_VIA_GATEWAY, SELECT_ALL_ATTACHED};

use crate::{
    audit::{self, Event, EventSink},
    cgroup,
    config::Config,
    control::{self, ControlState, GrantBook, RevocationBook, RuleBook},
    identity::AgentMatcher,
    kernel::{self, Kernel, KernelError, LoadOptions},
    listener::{self, Shared},
    masking::Catalog,
    policy::{Gate, PolicyStore},
    proxy::{tls::LocalCa, LiveTable, ProxyCtx, ProxySettings},
    targets::TargetTable,
    types::OrigDst,
};

mod drain;
mod maintenance;
pub mod private;
mod reload;

/// Errors starting or running the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Bad configuration or state (operator input).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Bad runtime rule state (operator input).
    #[error(transparent)]
    Rules(#[from] control::RuleBookError),
    /// Bad policy files (operator input).
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// Persisted revocations are unreadable (operator state).
    #[error(transparent)]
    RevocationState(#[from] control::RevocationError),
    /// Persisted grants are unreadable (operator state).
    #[error(transparent)]
    GrantState(#[from] control::GrantError),
    /// Persisted grants do not compile against the policy schema.
    #[error("grants: {0}")]
    Grants(String),
    /// Bad agent definitions (operator input).
    #[error("config `agents`: {0}")]
    Agents(String),
    /// A configured cgroup is missing or unusable.
    #[error("config `intercept.cgroups`: {0}")]
    Cgroup(#[from] cgroup::CgroupError),
    /// The kernel side could not be set up.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A listener could not be bound.
    #[error(transparent)]
    Listener(#[from] listener::ListenerError),
    /// A configured group does not exist (operator input).
    #[error("config `{0}`: {1}")]
    Group(&'static str, String),
    /// The state or run directory could not be made private.
    #[error(transparent)]
    Private(#[from] private::PrivateError),
    /// The event log could not be opened.
    #[error(transparent)]
    Events(#[from] audit::SinkError),
    /// The audit sealing key is unusable.
    #[error(transparent)]
    AuditKey(#[from] audit::keys::KeyError),
    /// The local CA could not be loaded or created.
    #[error(transparent)]
    Tls(#[from] crate::proxy::tls::TlsError),
    /// Signal handling or the control socket failed.
    #[error("gateway: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the hooks go and who counts as an agent.
struct Placement {
    attach_points: Vec<PathBuf>,
    selected_cgroups: Vec<u64>,
    select_all: bool,
}

fn placement(config: &Config) -> Result<Placement, DaemonError> {
    let mount = cgroup::cgroup2_mount()?;
    let cgroups: Vec<PathBuf> = config
        .intercept
        .cgroups
        .iter()
        .map(|c| cgroup::resolve(&mount, c))
        .collect();
    if let Some(first) = cgroups.first() {
        // The exec cgroup is the gateway's own to create; others must exist.
        cgroup::ensure(first)?;
    }
    let selected_cgroups = cgroups.iter().map(|c| cgroup::id(c)).collect::<Result<Vec<_>, _>>()?;
    let select_all = config.intercept.uids.is_empty();
    let attach_points = if select_all {
        cgroups
    } else {
        let scope = cgroup::resolve(&mount, &config.intercept.uid_scope);
        cgroup::id(&scope)?;
        // Cgroups under the uid scope are covered by its attachment already.
        let mut points = vec![scope.clone()];
        points.extend(cgroups.into_iter().filter(|c| !c.starts_with(&scope)));
        points
    };
    Ok(Placement {
        attach_points,
        selected_cgroups,
        select_all,
    })
}

fn settings(config: &Config, fork_child_pid_offset: u16, watch_exec: bool) -> Settings {
    let l = &config.listener;
    let v6 = l.ipv6.octets();
    let word = |i: usize| u32::from_ne_bytes([v6[i], v6[i + 1], v6[i + 2], v6[i + 3]]);
    Settings {
        configured: 1,
        bypass_mark: config.intercept.bypass_mark,
        proxy_ip4: u32::from_ne_bytes(l.ipv4.octets()),
        proxy_ip6: [word(0), word(4), word(8), word(12)],
        proxy_port: l.port,
        default_action: config.intercept.default_action.to_kernel() as u8,
        select_all: if config.intercept.uids.is_empty() {
            SELECT_ALL_ATTACHED
        } else {
            0
        },
        fork_child_pid_offset,
        // On while exe/agent revocations exist (set before attaching, so no
        // image slips through at start).
        watch_exec: u8::from(watch_exec),
        dns: if config.dns.enabled { DNS_VIA_GATEWAY } else { 0 },
        _pad1: 0,
    }
}

/// Runs the gateway until SIGTERM or SIGINT.
pub async fn run(config: Config, config_path: Option<PathBuf>) -> Result<(), DaemonError> {
    // Before anything is written: what the gateway keeps is root's alone.
    let openings = private::Openings {
        admin_gid: config
            .control
            .admin_gid()
            .map_err(|m| DaemonError::Group("control.admin_group", m))?,
        mirror_gid: config
            .audit
            .mirror_gid()
            .map_err(|m| DaemonError::Group("audit.mirror_group", m))?,
    };
    private::lock_down(
        &config.paths.state_dir,
        &config.paths.run_dir,
        &config.paths.events_file(),
        openings,
    )?;
    let placement = placement(&config)?;
    let book = RuleBook::load(&config)?;
    let catalog = Catalog::new(&config.masking);
    let gate = Arc::new(Gate::new(
        PolicyStore::load(config.policy.dir.clone(), catalog.names())?,
        AgentMatcher::new(&config.agents).map_err(DaemonError::Agents)?,
        TargetTable::new(&config.targets),
    ));
    let mut grants = GrantBook::load(&config)?;
    grants.expire(control::now_unix());
    control::apply_grants(&gate, &grants).map_err(DaemonError::Grants)?;
    let policies = gate.policies.current();
    tracing::info!(source = %policies.source, count = policies.len(), "policies loaded");
    let mut revocations = RevocationBook::load(&config)?;
    revocations.expire(control::now_unix());
    let compiled = book.compile()?;
    let events = EventSink::open(&config).await?;
    let net = Arc::new(crate::net::Net::new(
        config.intercept.bypass_mark,
        config.listener.connect_timeout,
    ));
    let reviews = Arc::new(crate::review::Reviews::new(
        events.clone(),
        net.clone(),
        &config.paths.state_dir,
        config.review.timeout,
        config.review.public_url.clone(),
    ));
    reviews.recover().await;

    // Bind before attaching, so redirected connections find a listener at once.
    // With a NAT port of its own, the main port takes only kernel redirects.
    let redirect = listener::Arrival::Redirect {
        nat: config.listener.nat_redirect && config.listener.nat_port.is_none(),
    };
    let nat = config
        .listener
        .nat_addresses()
        .into_iter()
        .map(|a| (a, listener::Arrival::Redirect { nat: true }));
    let explicit = config
        .listener
        .explicit
        .iter()
        .map(|e| (e.listen, listener::Arrival::Explicit(OrigDst(e.destination))));
    let bound = config
        .listener
        .addresses()
        .into_iter()
        .map(|a| (a, redirect))
        .chain(nat)
        .chain(explicit)
        .map(|(a, arrival)| listener::bind(a, arrival))
        .collect::<Result<Vec<_>, _>>()?;
    // The resolver's datagram sockets, on the same addresses and port.
    let bound_udp = if config.dns.enabled {
        config
            .listener
            .addresses()
            .into_iter()
            .map(listener::bind_udp)
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };

    let (kernel, handoff) = Kernel::start(LoadOptions {
        pin_dir: config.paths.pin_dir.clone(),
        attach_points: placement.attach_points.clone(),
        settings: settings(
            &config,
            kernel::field_offset("sched", "sched_process_fork", "child_pid")?,
            revocations.watches_exec(),
        ),
        selected_cgroups: placement.selected_cgroups,
        selected_uids: config.intercept.uids.clone(),
        rules: compiled,
    })?;
    let mut kernel = kernel;
    // Re-apply revocations on top of the pinned entries: those survived (and
    // the fork tracepoint kept extending them while the gateway was away);
    // this adds processes started from revoked exes or agents meanwhile.
    // Entries of processes that have exited are dropped by the upkeep task.
    for r in revocations.list() {
        control::apply_revocation(&mut kernel.maps, &gate, r)?;
    }
    let exec_events = kernel.take_exec_events();
    for slot in book.all().filter_map(|(_, r)| book.slot(&r.name)).chain([
        gateway_common::SLOT_DEFAULT,
        gateway_common::SLOT_QUIC,
        gateway_common::SLOT_REVOKED,
        gateway_common::SLOT_DNS,
        gateway_common::SLOT_UDP_DEFAULT,
        gateway_common::SLOT_SOCKET,
        gateway_common::SLOT_DOT,
    ]) {
        let _ = kernel.maps.reset_stats(slot);
    }
    let cgroups: Vec<String> = placement
        .attach_points
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    tracing::info!(
        ?cgroups,
        select_all = placement.select_all,
        port = config.listener.port,
        "gateway running"
    );
    events
        .record(Event::GatewayStarted {
            time: audit::now(),
            cgroups,
        })
        .await?;

    let live = Arc::new(LiveTable::default());
    let proxy_settings = ProxySettings {
        bypass_mark: config.intercept.bypass_mark,
        connect_timeout: config.listener.connect_timeout,
        idle_timeout: config.listener.idle_timeout,
        header_timeout: config.listener.header_timeout,
        max_request_head: config.listener.max_request_head,
        park_idle: config.listener.park_idle,
        body_cap: config.audit.body_cap,
    };
    let handoff = Arc::new(handoff);
    let ca = Arc::new(LocalCa::load_or_create(&config.paths.state_dir.join("ca"))?);
    let limits = Arc::new(crate::limits::Limits::new(
        &config.limits,
        config.listener.max_connections,
    ));
    let ctx = Arc::new(ProxyCtx::new(crate::proxy::ProxyParts {
        settings: proxy_settings,
        net: net.clone(),
        live: live.clone(),
        events: events.clone(),
        gate: gate.clone(),
        ca,
        catalog,
        sealer: Arc::new(crate::audit::seal::Sealer::load_or_create(&config.paths.state_dir)?),
        reviews: reviews.clone(),
        limits: limits.clone(),
        dns: Arc::new(crate::proxy::dns::Guards::new(
            &config.dns,
            &crate::proxy::dns::guard::nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()),
        )),
    }));
    let shared = Arc::new(Shared::new(
        handoff.clone(),
        kernel.listener_view()?,
        cgroup::cgroup2_mount()?,
        ctx.clone(),
        config.listener.max_connections,
        config.listener.detect_timeout,
    ));
    let listeners: Vec<String> = bound
        .iter()
        .filter_map(|b| b.local_addr())
        .map(|a| a.to_string())
        .collect();
    // The accept loops apart from the other tasks: they stop first.
    let mut accepting = tokio::task::JoinSet::new();
    for b in bound {
        accepting.spawn(listener::serve(b, shared.clone()));
    }
    for b in bound_udp {
        accepting.spawn(listener::serve_udp(b, shared.clone()));
    }
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(limits.record_counts(events.clone()));
    let state = Arc::new(ControlState {
        book: tokio::sync::Mutex::new(book),
        grants: tokio::sync::Mutex::new(grants),
        revocations: tokio::sync::Mutex::new(revocations),
        cgroup_mount: cgroup::cgroup2_mount()?,
        gate: gate.clone(),
        kernel: tokio::sync::Mutex::new(kernel),
        live,
        handoff,
        events: events.clone(),
        listeners,
        pin_dir: config.paths.pin_dir.display().to_string(),
        reviews: reviews.clone(),
        admin_gid: config.control.admin_gid().unwrap_or(None),
    });
    let socket = config.paths.control_socket();
    {
        let state = state.clone();
        let socket = socket.clone();
        tasks.spawn(async move {
            if let Err(e) = control::serve(&socket, state).await {
                tracing::error!("control socket {} failed: {e}", socket.display());
            }
        });
    }
    {
        let (gate, events) = (gate.clone(), events.clone());
        tasks.spawn(async move { reload::watch_policies(&gate, &events).await });
    }
    if config.api.listen.is_some() {
        let (api, state, net) = (config.api.clone(), state.clone(), net.clone());
        tasks.spawn(async move {
            if let Err(e) = crate::api::serve(api, state, net).await {
                tracing::error!("operator API stopped: {e}");
            }
        });
    }
    maintenance::spawn(&mut tasks, &state, exec_events);
    reload::wait_for_shutdown(config_path.as_deref(), &state, &gate).await?;
    // Held requests fail now, cleanly, and their records say why.
    reviews.fail_all("the gateway stopped while the request was held").await;
    // Stop accepting (the listening sockets close as their tasks end), then
    // drain the sessions: each records its own connection event.
    accepting.abort_all();
    while accepting.join_next().await.is_some() {}
    drain::drain(&shared.sessions, &shared.ctx.live, config.listener.drain_timeout).await;
    // A request held while draining was failed when its session closed.
    reviews.fail_all("the gateway stopped while the request was held").await;
    tasks.abort_all();
    let _ = std::fs::remove_file(&socket);
    events.record(Event::GatewayStopped { time: audit::now() }).await?;
    // A checkpoint covers the newest records, not only the head file.
    events.seal().await?;
    tracing::info!("gateway stopped; kernel programs stay pinned, so agents are refused until it is back");
    Ok(())
}
