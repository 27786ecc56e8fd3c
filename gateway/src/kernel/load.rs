//! Loading the embedded eBPF object, adopting pinned maps, and bringing the
//! hooks up on the configured cgroups.
use std::path::PathBuf;

use aya::{
    maps::{MapData, RingBuf},
    programs::Program,
    Ebpf, EbpfLoader,
};
use gateway_common::{Settings, MAP_EXEC_EVENTS, PINNED_MAPS};

use super::{
    attach::{self, AttachedLink, Attachment, GLOBAL_PROGRAMS, PROGRAMS},
    maps::{Handoff, KernelMaps, KernelView},
    pins::PinLayout,
    rules::CompiledRules,
    KernelError,
};

/// The eBPF object built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/interlock-ebpf"));

/// What the kernel side should look like.
pub struct LoadOptions {
    /// Pin directory.
    pub pin_dir: PathBuf,
    /// Cgroups to attach every program to.
    pub attach_points: Vec<PathBuf>,
    /// Settings for the hooks.
    pub settings: Settings,
    /// Selected cgroup ids (used when `settings.select_all` is off).
    pub selected_cgroups: Vec<u64>,
    /// Selected uids.
    pub selected_uids: Vec<u32>,
    /// Compiled redirect rules.
    pub rules: CompiledRules,
}

/// The loaded, attached kernel side.
pub struct Kernel {
    /// Kept alive for the kernel log bridge; the links are pinned.
    _ebpf: Ebpf,
    /// The rule, settings and counter maps.
    pub maps: KernelMaps,
    layout: PinLayout,
    attachments: Vec<Attachment>,
    exec_events: Option<RingBuf<MapData>>,
}

impl Kernel {
    /// Loads the programs, adopts or creates the pinned maps, writes settings,
    /// selection and rules, then attaches (replacing any previous gateway's
    /// links without a gap). Kernel log lines go to `tracing` from then on.
    /// Returns the kernel handle and the hand-off map the listener consumes.
    pub fn start(opts: LoadOptions) -> Result<(Self, Handoff), KernelError> {
        let layout = PinLayout::new(&opts.pin_dir);
        layout.create()?;
        let map_paths: Vec<(&str, PathBuf)> = PINNED_MAPS.iter().map(|name| (*name, layout.map(name))).collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| KernelError::Load(super::chain(&e)))?;
        start_log_bridge(&mut ebpf);
        for name in PROGRAMS.into_iter().chain(GLOBAL_PROGRAMS.map(|(p, _, _)| p)) {
            let program = ebpf
                .program_mut(name)
                .ok_or_else(|| KernelError::Load(format!("program {name} missing from the object")))?;
            let loaded = match program {
                Program::CgroupSockAddr(p) => p.load(),
                Program::SockOps(p) => p.load(),
                Program::CgroupSock(p) => p.load(),
                Program::CgroupSkb(p) => p.load(),
                Program::TracePoint(p) => p.load(),
                other => {
                    return Err(KernelError::Load(format!(
                        "{name}: unexpected type {:?}",
                        other.prog_type()
                    )))
                }
            };
            loaded.map_err(|e| KernelError::Load(format!("{name}: {}", super::chain(&e))))?;
        }
        let (mut maps, handoff) = KernelMaps::from_loaded(&mut ebpf)?;
        let exec_events = ebpf
            .take_map(MAP_EXEC_EVENTS)
            .ok_or_else(|| KernelError::Load(format!("map {MAP_EXEC_EVENTS} missing from the object")))
            .and_then(|m| RingBuf::try_from(m).map_err(|e| KernelError::Load(super::chain(&e))))?;
        maps.set_selection(&opts.selected_cgroups, &opts.selected_uids)?;
        maps.apply_rules(&opts.rules)?;
        maps.set_settings(opts.settings)?;
        let attachments = attach::attach_all(&mut ebpf, &layout, &opts.attach_points)?;
        let kernel = Self {
            _ebpf: ebpf,
            maps,
            layout,
            attachments,
            exec_events: Some(exec_events),
        };
        Ok((kernel, handoff))
    }

    /// The ring buffer of exec announcements (taken once, by the exec checker).
    pub fn take_exec_events(&mut self) -> Option<RingBuf<MapData>> {
        self.exec_events.take()
    }

    /// Second, read-only handles on the maps the listener reads.
    pub fn listener_view(&self) -> Result<KernelView, KernelError> {
        KernelView::open(&self.layout)
    }

    /// The cgroups the programs are attached to.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// The pinned links as the kernel reports them.
    pub fn links(&self) -> Vec<AttachedLink> {
        attach::list_links(&self.layout)
    }
}

/// Forwards aya-log records from the kernel to `tracing` (through the `log`
/// facade, which tracing-subscriber bridges).
fn start_log_bridge(ebpf: &mut Ebpf) {
    let logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(e) => {
            tracing::warn!("kernel log bridge unavailable: {e}");
            return;
        }
    };
    // SAFETY: the logger owns its ring-buffer fd, which stays open and the same
    // for as long as the logger (now owned by the AsyncFd) lives.
    let registered = unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let Ok(mut logger) = registered else {
        tracing::warn!("kernel log bridge: cannot poll the log buffer");
        return;
    };
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = logger.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

/// Lists pinned links without loading anything (for status with the daemon down).
pub fn pinned_links(pin_dir: &std::path::Path) -> Vec<AttachedLink> {
    attach::list_links(&PinLayout::new(pin_dir))
}
