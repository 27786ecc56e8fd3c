//! The control socket: a unix socket in the run directory, mode 0600, that
//! also checks each peer's credentials. Only root may operate the gateway.
use std::{path::Path, sync::Arc};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::Mutex,
};

use super::{GrantBook, Request, Response, RevocationBook, RuleBook, RuleView, StatusReport};
use crate::{
    audit::{self, Event, EventSink},
    kernel::{rules::CompiledRules, Handoff, Kernel},
    policy::Gate,
    proxy::LiveTable,
};
use gateway_common::{SLOT_DEFAULT, SLOT_DNS, SLOT_DOT, SLOT_QUIC, SLOT_SOCKET, SLOT_UDP_DEFAULT};

/// What the control socket operates on.
pub struct ControlState {
    /// Rules.
    pub book: Mutex<RuleBook>,
    /// Grants.
    pub grants: Mutex<GrantBook>,
    /// Revocations.
    pub revocations: Mutex<RevocationBook>,
    /// The cgroup2 mount (for revocations by cgroup).
    pub cgroup_mount: std::path::PathBuf,
    /// Agents, targets and policy (grants are applied to it).
    pub gate: Arc<Gate>,
    /// Kernel side.
    pub kernel: Mutex<Kernel>,
    /// Live connections.
    pub live: Arc<LiveTable>,
    /// Hand-off records (for the leak check in status).
    pub handoff: Arc<Handoff>,
    /// Events.
    pub events: EventSink,
    /// Listener addresses, for status.
    pub listeners: Vec<String>,
    /// Pin directory, for status.
    pub pin_dir: String,
    /// Held requests.
    pub reviews: Arc<crate::review::Reviews>,
    /// Members of this group may operate the gateway besides root.
    pub admin_gid: Option<u32>,
}

/// Largest request accepted.
const MAX_REQUEST: usize = 64 * 1024;

/// Serves the control socket at `path` until the task is dropped.
pub async fn serve(path: &Path, state: Arc<ControlState>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    // Root, and the admin group when one is configured.
    let mode = if state.admin_gid.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    if let Some(gid) = state.admin_gid {
        std::os::unix::fs::chown(path, Some(0), Some(gid))?;
    }
    loop {
        let (stream, _) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = session(stream, state).await {
                tracing::debug!("control session ended: {e}");
            }
        });
    }
}

async fn session(stream: UnixStream, state: Arc<ControlState>) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    let response = if !admitted(cred.uid(), cred.gid(), state.admin_gid) {
        tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), "control request refused: not root nor in the admin group");
        Response::Error {
            message: "only root and the configured admin group may operate the gateway".into(),
        }
    } else {
        let mut line = String::new();
        let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
        reader.read_line(&mut line).await?;
        match serde_json::from_str::<Request>(&line) {
            Ok(request) => handle(request, &state, cred.uid()).await,
            Err(e) => Response::Error {
                message: format!("malformed request: {e}"),
            },
        }
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await
}

use tokio::io::AsyncReadExt as _;

/// Root, or a member of the admin group (by the peer's group or the
/// supplementary groups of its user).
fn admitted(uid: u32, gid: u32, admin_gid: Option<u32>) -> bool {
    if uid == 0 {
        return true;
    }
    let Some(admin) = admin_gid else { return false };
    if gid == admin {
        return true;
    }
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return false;
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return false;
    };
    nix::unistd::getgrouplist(&name, user.gid).is_ok_and(|groups| groups.iter().any(|g| g.as_raw() == admin))
}

async fn handle(request: Request, state: &ControlState, uid: u32) -> Response {
    handle_as(request, state, super::review_ops::unix_person(uid)).await
}

/// How a person is named in grant and revocation records.
pub fn label(person: &crate::review::Person) -> String {
    if person.issuer == "unix" {
        return person.name.clone();
    }
    let email = person.email.as_deref().map(|e| format!(" <{e}>")).unwrap_or_default();
    format!("{}{email} [{} {}]", person.name, person.issuer, person.subject)
}

/// Carries out a request for an authenticated person (socket peer or API caller).
pub async fn handle_as(request: Request, state: &ControlState, person: crate::review::Person) -> Response {
    let by = &label(&person);
    match request {
        Request::ApprovalsList => super::review_ops::list(state),
        Request::ApprovalShow { id } => super::review_ops::show(state, &id),
        Request::Approve { id, scope } => super::review_ops::approve(state, &id, scope, person).await,
        Request::Deny { id, reason } => super::review_ops::deny(state, &id, reason, person).await,
        Request::Status => match status(state).await {
            Ok(report) => Response::Status(Box::new(report)),
            Err(message) => Response::Error { message },
        },
        Request::Names { ip } => Response::Names {
            names: state.gate.learned.view(ip),
        },
        Request::RulesList => match rule_views(state).await {
            Ok(rules) => Response::Rules { rules },
            Err(message) => Response::Error { message },
        },
        Request::RulesAdd { rule } => {
            let desc = format!(
                "added rule {} {} ports {} -> {}",
                rule.name, rule.cidr, rule.ports, rule.action
            );
            let mut book = state.book.lock().await;
            let result = book.add(rule);
            finish_change(state, &mut book, result, desc).await
        }
        Request::GrantAdd { grant } => super::grant_ops::add(state, grant, by).await,
        Request::GrantsList => Response::Grants {
            grants: state.grants.lock().await.list().to_vec(),
        },
        Request::GrantRevoke { id } => super::grant_ops::revoke(state, &id, by).await,
        Request::Revoke { revoke } => super::revoke_ops::add(state, revoke, by).await,
        Request::RevocationsList => Response::Revocations {
            revocations: state.revocations.lock().await.list().to_vec(),
        },
        Request::Unrevoke { id } => super::revoke_ops::remove(state, &id, by).await,
        Request::RulesRemove { name } => {
            let desc = format!("removed rule {name}");
            let mut book = state.book.lock().await;
            let result = book.remove(&name).map(|c| (c, Vec::new()));
            finish_change(state, &mut book, result, desc).await
        }
    }
}

/// Applies a changed rule set to the kernel, persists it and records it.
async fn finish_change(
    state: &ControlState,
    book: &mut RuleBook,
    result: Result<(CompiledRules, Vec<u16>), super::RuleBookError>,
    desc: String,
) -> Response {
    let (compiled, fresh) = match result {
        Ok(ok) => ok,
        Err(e) => return Response::Error { message: e.to_string() },
    };
    {
        let mut kernel = state.kernel.lock().await;
        for slot in fresh {
            if let Err(e) = kernel.maps.reset_stats(slot) {
                tracing::warn!("resetting counters of slot {slot}: {e}");
            }
        }
        if let Err(e) = kernel.maps.apply_rules(&compiled) {
            return Response::Error {
                message: format!("kernel rejected the rules: {e}"),
            };
        }
    }
    if let Err(e) = book.persist() {
        return Response::Error {
            message: format!("rules applied but not saved: {e}"),
        };
    }
    tracing::info!("{desc}");
    let _ = state
        .events
        .record(Event::RulesChanged {
            time: audit::now(),
            change: desc.clone(),
        })
        .await;
    Response::Ok { message: desc }
}

async fn rule_views(state: &ControlState) -> Result<Vec<RuleView>, String> {
    let book = state.book.lock().await;
    let stats = state.kernel.lock().await.maps.stats().map_err(|e| e.to_string())?;
    Ok(book
        .all()
        .map(|(source, r)| {
            let slot = book.slot(&r.name).unwrap_or(0);
            let s = stats.get(&slot).copied().unwrap_or_default();
            RuleView {
                source,
                slot,
                redirected: s.redirected,
                passed: s.passed,
                denied: s.denied,
                ..RuleView::from(r)
            }
        })
        .collect())
}

async fn status(state: &ControlState) -> Result<StatusReport, String> {
    let rules = rule_views(state).await?;
    let kernel = state.kernel.lock().await;
    let stats = kernel.maps.stats().map_err(|e| e.to_string())?;
    let default = stats.get(&SLOT_DEFAULT).copied().unwrap_or_default();
    let names = state.gate.learned.view(None);
    Ok(StatusReport {
        pid: std::process::id(),
        listeners: state.listeners.clone(),
        cgroups: kernel
            .attachments()
            .iter()
            .map(|a| a.cgroup.display().to_string())
            .collect(),
        links: kernel.links(),
        pin_dir: state.pin_dir.clone(),
        rules,
        default_counts: (default.redirected, default.passed, default.denied),
        quic_denied: stats.get(&SLOT_QUIC).map_or(0, |s| s.denied),
        dns_redirected: stats.get(&SLOT_DNS).map_or(0, |s| s.redirected),
        udp_denied: stats.get(&SLOT_UDP_DEFAULT).map_or(0, |s| s.denied),
        socket_denied: stats.get(&SLOT_SOCKET).map_or(0, |s| s.denied),
        dot_denied: stats.get(&SLOT_DOT).map_or(0, |s| s.denied),
        names_total: names.len(),
        names: names.into_iter().take(super::protocol::STATUS_NAMES).collect(),
        tracked_sockets: kernel.maps.tracked_sockets(),
        pending_handoffs: state.handoff.pending(),
        connections: state.live.list(),
    })
}
