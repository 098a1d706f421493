//! The pool of pre-warmed containers and the [`Sandbox`] implementation on Docker.
//!
//! `size` containers are kept started and unused. A login takes the oldest one and a
//! replacement is started in the background; an empty pool creates one on demand. The
//! ready set never grows past `size`. Released containers are stopped in the background
//! and kept for forensics until the retention sweep removes them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::ExecConfig;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use hermes_core::boxnet::BoxNetwork;
use hermes_core::events::{EventBuilder, EventBus, EventId};
use hermes_core::ids::SessionId;
use hermes_core::metrics::{Histogram, render_family};
use hermes_core::sandbox::{
    ChangedFile, ContainerUsage, FileRead, IoPath, Lease, LeaseSource, OutputChunk, Process,
    ProcessSpec, Sandbox, SandboxError, StandbySpec, TtySize, VolatileFile, VolatileScan,
};

use crate::endpoint::{Endpoint, EndpointError};
use crate::error::{engine, failure, is_not_found, is_not_modified};
use crate::exec::{DirectOutput, ExecControl, MuxOutput, ResizeTurns, TtyOutput, resize_exec};
use crate::profile::{BootPriority, ContainerProfile, SESSION_CPU_SHARES};
use crate::retention::{self, Rules, Stopped};
use crate::standby::Standby;
use crate::{BANNER_LABEL, ROLE_LABEL, SENSOR_LABEL, hijack};
use crate::{direct, files};

mod boot;
mod containers;
mod name_files;
mod network;
mod past;
mod trust;

pub use past::INSTALLED_LABEL;

use containers::stop_container;
mod health;
mod init;
mod processes;
mod resources;
mod sweep;
mod takeover;

/// Bucket bounds of the container creation time, seconds.
const CREATE_BOUNDS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];
/// Containers created at once while refilling.
const MAX_PARALLEL_CREATES: usize = 4;
/// Grace period given to a container's PID 1 on stop (ours exits on SIGTERM at once).
const STOP_GRACE_SECS: i32 = 3;
/// How often the pool re-checks its size even without a wake-up.
const REFILL_TICK: Duration = Duration::from_secs(5);
/// How old a capture pass's count of a box's writable layer may be and still serve
/// a disk check (sessions check every 3 s, and pass about every 2 s while commands
/// run): a typing session's layer is walked once per round, not twice.
const LAYER_SIZE_FRESH: Duration = Duration::from_millis(3500);
/// The shortest time between two looks for deleted open files in one box while its
/// session runs (a capture pass follows every burst of commands, 2 s later): the
/// look reads every process's descriptor table and cost a typing session more than
/// its keystrokes. A program that deletes its file and keeps running is still found
/// at the next look or at the session's end; one that also ends within this time
/// may be missed.
const RUNNING_FD_SCAN_INTERVAL: Duration = Duration::from_secs(6);
/// Longest wait between attempts to create containers while creation fails (the
/// engine is down, for example).
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Pool sizing and timing, from `container_pool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Ready containers to keep.
    pub size: usize,
    /// Limit on one create-and-start.
    pub spawn_timeout: Duration,
    /// Stopped containers older than this are removed; None keeps them.
    pub retention: Option<Duration>,
    /// Running containers (ready and leased) at most.
    pub max_containers: usize,
    /// Stopped containers kept at most.
    pub max_stopped: usize,
    /// Bytes of stopped containers' writable layers kept at most.
    pub max_stopped_bytes: u64,
    /// A process to start ahead in each ready container (a login is then a write to
    /// it instead of engine round trips); None starts every process at its request.
    pub standby: Option<StandbySpec>,
}

impl PoolSettings {
    /// From a validated configuration.
    pub fn from_config(config: &hermes_core::config::Config) -> Self {
        let pool = &config.container_pool;
        PoolSettings {
            size: pool.size as usize,
            spawn_timeout: pool.spawn_timeout.get(),
            retention: pool.cleanup_stopped_after_days.non_zero(),
            max_containers: pool.max_containers as usize,
            max_stopped: pool.max_stopped_containers as usize,
            max_stopped_bytes: pool.max_stopped_disk.bytes(),
            standby: None,
        }
    }
}

/// Counts for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStatus {
    /// Started, unused.
    pub ready: usize,
    /// Being created.
    pub creating: usize,
    /// Leased to sessions.
    pub active: usize,
    /// Stopped and kept for forensics (as of the last retention sweep).
    pub stopped: usize,
    /// Pool container creations that failed in a row (0 after a success).
    pub failed_in_a_row: u32,
}

#[derive(Default)]
struct PoolState {
    ready: VecDeque<String>,
    creating: usize,
    active: HashSet<String>,
    consecutive_failures: u32,
    retry_at: Option<Instant>,
}

/// Target containers on a Docker engine.
pub struct DockerSandbox {
    docker: Docker,
    /// Where exec streams are opened (the socket proxy's stream port, or the API's
    /// own endpoint).
    stream_endpoint: Endpoint,
    api_version: String,
    profile: ContainerProfile,
    settings: PoolSettings,
    events: EventBus,
    state: Mutex<PoolState>,
    wake: Notify,
    sweep: Notify,
    /// Signalled each time a container joins the ready set.
    became_ready: Notify,
    shutting_down: AtomicBool,
    background: Mutex<JoinSet<()>>,
    /// Held while a container is being stopped, so a returning source's resume waits
    /// for the stop instead of racing it.
    container_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Standby processes waiting in ready (and just leased) containers, by container.
    standbys: Mutex<HashMap<String, Standby>>,
    /// Containers' overlay upper directories on this host (None: not reachable here),
    /// looked up once each.
    upper_dirs: Mutex<HashMap<String, Option<std::path::PathBuf>>>,
    /// Each box's writable layer as last counted on this host, and when: a capture
    /// pass's walk also answers the next disk check.
    layer_sizes: Mutex<HashMap<String, (Instant, u64)>>,
    /// What the last looks for deleted open files saw in each box.
    fd_scans: Mutex<HashMap<String, files::FdScan>>,
    /// Each leased box's first process, where this host sees it: its sessions'
    /// checks read /proc instead of asking the engine whether it runs.
    box_inits: Mutex<HashMap<String, crate::box_init::BoxInit>>,
    /// Whether file transfers may use [`direct`] pipes at all (not under another
    /// runtime, which keeps the container's files out of the host's view).
    direct_io: bool,
    /// Containers whose transfers go through the engine's stream: their processes
    /// were out of reach, or their pipes failed a check. Only that box is affected,
    /// so one attacker's broken `/bin/sh` or raced FIFO slows nobody else.
    engine_only: Mutex<HashSet<String>>,
    /// Each container's turn for its next terminal resize.
    resizes: Arc<ResizeTurns>,
    /// Stopped containers of this sensor after the last retention sweep.
    stopped: AtomicUsize,
    /// How long successful container creations (create and start) took.
    create_seconds: Histogram,
    /// Gives each started container its network (`egress`); unset: none.
    network: std::sync::OnceLock<Arc<dyn BoxNetwork>>,
    /// A CA every box created from now on trusts (`egress` HTTPS); unset: none.
    trusted_ca: std::sync::OnceLock<trust::TrustedCa>,
    /// The past every box created from now on is given; unset: none.
    past: std::sync::OnceLock<past::PastSettings>,
    /// LXCFS, looked at before every new box.
    lxcfs: crate::lxcfs::Lxcfs,
    /// Which init the boxes boot, and their cgroups (decided at connect).
    init: init::InitChoice,
    /// Why Hermes may not start for want of the boxes' boot clock (`required`).
    clock_refused: Option<String>,
    /// Cores handed to new boxes in turn (`cpu_pinning: core`); None: every core.
    cores: Option<crate::cpu::CoreTurns>,
}

impl DockerSandbox {
    /// Connects to the engine (negotiating the API version) and checks the image.
    pub async fn connect(
        endpoint: Endpoint,
        stream_endpoint: Option<Endpoint>,
        profile: ContainerProfile,
        settings: PoolSettings,
        events: EventBus,
    ) -> Result<Arc<Self>, EndpointError> {
        let mut profile = profile;
        let docker = endpoint.connect().await?;
        let api_version = docker.client_version().to_string();
        tracing::info!(target: "hermes::sandbox", endpoint = %endpoint, api_version, "connected to Docker");
        // Another runtime (gVisor) keeps the container's files out of the host's view
        // of its first process.
        let direct_io = profile.runtime.is_none();
        let lxcfs = crate::lxcfs::Lxcfs::from_config(&profile.lxcfs);
        let cores = resources::core_turns(profile.cpu_pinning);
        let local_engine = direct_io && matches!(endpoint, Endpoint::Unix(_));
        let init = init::choose(&docker, &mut profile, local_engine).await;
        let mut clock_refused = None;
        let with_lxcfs = lxcfs.mode() != hermes_core::config::LxcfsMode::Off;
        match crate::boot_clock::choose(
            &docker,
            profile.boot_clock,
            profile.runtime.as_deref(),
            with_lxcfs,
        )
        .await
        {
            crate::boot_clock::Choice::Own => {
                tracing::info!(target: "hermes::sandbox", runtime = crate::boot_clock::RUNTIME, "boxes get a boot clock of their own");
                profile.runtime = Some(crate::boot_clock::RUNTIME.to_owned());
                if with_lxcfs {
                    lxcfs.set_own_clock(crate::clock_files::ROOT.into());
                }
            }
            crate::boot_clock::Choice::Host(why) => {
                tracing::warn!(target: "hermes::sandbox", "boxes keep the host's clocks (PID 1 looks started long after the boot): {why}");
            }
            crate::boot_clock::Choice::Refused(why) => clock_refused = Some(why),
        }
        if init.cgroups.is_some()
            && let Some(shortfall) = crate::host_limits::inotify_shortfall(
                std::path::Path::new(crate::host_limits::INOTIFY_INSTANCES),
                settings.max_containers,
            )
        {
            tracing::warn!(target: "hermes::sandbox", "{shortfall}");
        }
        Ok(Arc::new(DockerSandbox {
            docker,
            stream_endpoint: stream_endpoint.unwrap_or(endpoint),
            api_version,
            profile,
            settings,
            events,
            state: Mutex::new(PoolState::default()),
            wake: Notify::new(),
            sweep: Notify::new(),
            became_ready: Notify::new(),
            shutting_down: AtomicBool::new(false),
            background: Mutex::new(JoinSet::new()),
            container_locks: Mutex::new(HashMap::new()),
            standbys: Mutex::new(HashMap::new()),
            upper_dirs: Mutex::new(HashMap::new()),
            layer_sizes: Mutex::new(HashMap::new()),
            fd_scans: Mutex::new(HashMap::new()),
            box_inits: Mutex::new(HashMap::new()),
            direct_io,
            engine_only: Mutex::new(HashSet::new()),
            resizes: Arc::new(ResizeTurns::default()),
            stopped: AtomicUsize::new(0),
            create_seconds: Histogram::new(CREATE_BOUNDS),
            network: std::sync::OnceLock::new(),
            trusted_ca: std::sync::OnceLock::new(),
            past: std::sync::OnceLock::new(),
            lxcfs,
            init,
            clock_refused,
            cores,
        }))
    }

    /// The persona banner the image was built with (its `hermes.persona.ssh_banner`
    /// label). Fails when the image is missing.
    pub async fn image_banner(&self) -> Result<Option<String>, SandboxError> {
        if let Some(problem) = self.init.problem.as_ref().or(self.clock_refused.as_ref()) {
            return Err(SandboxError::Unavailable(problem.clone()));
        }
        let image = self
            .docker
            .inspect_image(&self.profile.image)
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    SandboxError::Unavailable(format!(
                        "image {} not found; build it with images/target/build.sh {}",
                        self.profile.image, self.profile.image
                    ))
                } else {
                    engine(e)
                }
            })?;
        Ok(image
            .config
            .and_then(|c| c.labels)
            .and_then(|labels| labels.get(BANNER_LABEL).cloned()))
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn box_inits(&self) -> MutexGuard<'_, HashMap<String, crate::box_init::BoxInit>> {
        self.box_inits.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn layer_sizes(&self) -> MutexGuard<'_, HashMap<String, (Instant, u64)>> {
        self.layer_sizes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The box's writable layer in bytes: counted within the last
    /// [`LAYER_SIZE_FRESH`] (by a capture pass), else walked now. None: not countable
    /// on this host (another host, or a layer past one walk's bounds).
    async fn layer_size(&self, id: &str, upper: Option<std::path::PathBuf>) -> Option<u64> {
        let recent = self
            .layer_sizes()
            .get(id)
            .filter(|(at, _)| at.elapsed() < LAYER_SIZE_FRESH)
            .map(|(_, size)| *size);
        if recent.is_some() {
            return recent;
        }
        let upper = upper?;
        let counted = crate::background::run(move || crate::upper::read_layer(&upper))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|layer| layer.size);
        if let Some(size) = counted {
            self.layer_sizes()
                .insert(id.to_owned(), (Instant::now(), size));
        }
        counted
    }

    fn fd_scans(&self) -> MutexGuard<'_, HashMap<String, files::FdScan>> {
        self.fd_scans.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn standbys(&self) -> MutexGuard<'_, HashMap<String, Standby>> {
        self.standbys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The container's upper directory when this host has it (cached per container).
    async fn upper_dir(
        &self,
        container_id: &str,
    ) -> Result<Option<std::path::PathBuf>, SandboxError> {
        let known = self
            .upper_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(container_id)
            .cloned();
        if let Some(known) = known {
            return Ok(known.filter(|dir| dir.is_dir()));
        }
        let found = files::upper_dir(&self.docker, container_id).await?;
        self.upper_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(container_id.to_owned(), found.clone());
        Ok(found)
    }

    /// The PID on this host of the box's first process while the box runs (None:
    /// it does not). Known without the engine while that same process lives (every
    /// capture pass of every session asks); otherwise inspected, and remembered when
    /// the box's layer is on this host (only then is the engine's PID one of ours).
    async fn init_pid(&self, id: &str) -> Result<Option<i32>, SandboxError> {
        let known = self.box_inits().get(id).copied();
        if let Some(init) = known {
            if init.alive() {
                return Ok(Some(init.pid()));
            }
            self.box_inits().remove(id);
        }
        let state = match self.docker.inspect_container(id, None).await {
            Ok(inspect) => inspect.state.unwrap_or_default(),
            Err(error) if is_not_found(&error) => return Ok(None),
            Err(error) => return Err(engine(error)),
        };
        if !state.running.unwrap_or(false) {
            return Ok(None);
        }
        let pid = state.pid.and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        if self.upper_dir(id).await.ok().flatten().is_some()
            && let Some(init) = crate::box_init::BoxInit::read(pid)
        {
            self.box_inits().insert(id.to_owned(), init);
        }
        Ok(Some(pid))
    }

    /// Stops containers an earlier run left running, then starts the refill and
    /// retention loops.
    pub async fn start(self: &Arc<Self>) {
        self.stop_leftovers().await;
        let pool = Arc::clone(self);
        tokio::spawn(async move { pool.refill_loop().await });
        let pool = Arc::clone(self);
        tokio::spawn(async move { pool.retention_loop().await });
    }

    /// Waits until the pool holds `size` ready containers, or `timeout` passes.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.status().ready >= self.settings.size {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn refill_loop(self: Arc<Self>) {
        while !self.shutting_down.load(Ordering::Acquire) {
            self.watch_lxcfs().await;
            let (to_start, wait) = {
                let mut state = self.state();
                let now = Instant::now();
                match state.retry_at {
                    Some(at) if at > now => (0, at - now),
                    _ => {
                        state.retry_at = None;
                        let have = state.ready.len() + state.creating;
                        let room = self
                            .settings
                            .max_containers
                            .saturating_sub(have + state.active.len());
                        let missing = self.settings.size.saturating_sub(have).min(room);
                        let start =
                            missing.min(MAX_PARALLEL_CREATES.saturating_sub(state.creating));
                        state.creating += start;
                        (start, REFILL_TICK)
                    }
                }
            };
            for _ in 0..to_start {
                let pool = Arc::clone(&self);
                tokio::spawn(async move { pool.create_for_pool().await });
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn create_for_pool(self: Arc<Self>) {
        let began = Instant::now();
        let result = self.create_container(BootPriority::Background).await;
        let create_ms = began.elapsed().as_millis() as u64;
        if let Ok(id) = &result {
            self.raise_cpu_weight(id).await;
            self.start_standby(id).await;
        }
        let leftover = {
            let mut state = self.state();
            state.creating = state.creating.saturating_sub(1);
            match result {
                Ok(id) if self.shutting_down.load(Ordering::Acquire) => Some(id),
                Ok(id) => {
                    state.consecutive_failures = 0;
                    state.ready.push_back(id);
                    self.became_ready.notify_waiters();
                    tracing::debug!(target: "hermes::sandbox", ready = state.ready.len(), create_ms, "pool container ready");
                    None
                }
                Err(error) => {
                    state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                    let backoff = backoff(state.consecutive_failures);
                    state.retry_at = Some(Instant::now() + backoff);
                    tracing::error!(target: "hermes::sandbox", %error, retry_in_ms = backoff.as_millis() as u64, "cannot create pool container");
                    None
                }
            }
        };
        if let Some(id) = leftover {
            self.standbys().remove(&id);
            self.remove_in_background(id);
        }
        self.wake.notify_one();
    }

    fn spawn_background(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut set = self.background.lock().unwrap_or_else(|p| p.into_inner());
        // Reap finished tasks so the set does not grow over a long run.
        while set.try_join_next().is_some() {}
        set.spawn(task);
    }

    /// Forgets what was learnt of a removed container on this host.
    fn forget_host_views(&self, id: &str) {
        self.upper_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.layer_sizes().remove(id);
        self.fd_scans().remove(id);
        self.box_inits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.engine_only
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.resizes.forget(id);
    }

    /// Room for one more running container under `max_containers`; reserved as
    /// "creating" until the caller calls `done_creating`.
    fn reserve(&self) -> Result<(), SandboxError> {
        let mut state = self.state();
        let running = state.ready.len() + state.creating + state.active.len();
        if running >= self.settings.max_containers {
            return Err(SandboxError::AtCapacity(format!(
                "container_pool.max_containers ({}) reached",
                self.settings.max_containers
            )));
        }
        state.creating += 1;
        Ok(())
    }

    fn done_creating(&self) {
        let mut state = self.state();
        state.creating = state.creating.saturating_sub(1);
    }

    /// Stops everything: no new containers, ready ones removed (never used), leased
    /// ones stopped (kept for forensics), pending stops awaited.
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.wake.notify_one();
        // Containers still being created are removed by their task when they finish.
        let deadline = Instant::now() + self.settings.spawn_timeout;
        while self.state().creating > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.standbys().clear();
        let (ready, active): (Vec<String>, Vec<String>) = {
            let mut state = self.state();
            (
                state.ready.drain(..).collect(),
                state.active.drain().collect(),
            )
        };
        for id in ready {
            self.remove_in_background(id);
        }
        for id in active {
            let docker = self.docker.clone();
            let network = self.network().cloned();
            self.spawn_background(async move {
                if let Err(error) = stop_container(&docker, &id).await {
                    tracing::warn!(target: "hermes::sandbox", container_id = %short(&id), %error, "cannot stop container at shutdown");
                }
                if let Some(network) = network {
                    network.detach(&id).await;
                }
            });
        }
        let mut set =
            std::mem::take(&mut *self.background.lock().unwrap_or_else(|p| p.into_inner()));
        while set.join_next().await.is_some() {}
    }
}

impl DockerSandbox {
    /// Pauses or unpauses a container (a lingering box), bounded by `spawn_timeout`.
    /// An unpause of one not paused (409: it died, or was never frozen) succeeds.
    async fn set_paused(&self, container_id: &str, paused: bool) -> Result<(), SandboxError> {
        let limit = self.settings.spawn_timeout;
        let call = async {
            if paused {
                self.docker.pause_container(container_id).await
            } else {
                self.docker.unpause_container(container_id).await
            }
        };
        let answer = tokio::time::timeout(limit, call)
            .await
            .map_err(|_| SandboxError::Timeout(limit.as_secs()))?;
        match answer {
            Ok(()) => Ok(()),
            Err(error) if is_not_found(&error) => {
                Err(SandboxError::ContainerGone(short(container_id).to_owned()))
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) if !paused => Ok(()),
            Err(error) => Err(engine(error)),
        }
    }
}

fn backoff(failures: u32) -> Duration {
    let millis = 500u64.saturating_mul(1 << failures.min(6));
    Duration::from_millis(millis).min(MAX_BACKOFF)
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[async_trait]
impl Sandbox for DockerSandbox {
    async fn lease(&self, session: SessionId) -> Result<Lease, SandboxError> {
        loop {
            if self.shutting_down.load(Ordering::Acquire) {
                return Err(SandboxError::Unavailable("shutting down".to_owned()));
            }
            // Registered before looking, so a container that becomes ready meanwhile
            // is not missed.
            let became_ready = self.became_ready.notified();
            tokio::pin!(became_ready);
            became_ready.as_mut().enable();
            // Taken from ready and counted as active in one step, so the refill loop
            // never sees the cap free while the lease is checked.
            let candidate = {
                let mut state = self.state();
                let candidate = state.ready.pop_front();
                if let Some(id) = &candidate {
                    state.active.insert(id.clone());
                }
                candidate
            };
            self.wake.notify_one();
            let Some(id) = candidate else {
                if let Err(full) = self.reserve() {
                    // At the cap, but a container is on its way: wait for it.
                    if self.state().creating == 0 {
                        return Err(full);
                    }
                    if tokio::time::timeout(self.settings.spawn_timeout, became_ready)
                        .await
                        .is_err()
                    {
                        return Err(full);
                    }
                    continue;
                }
                tracing::warn!(target: "hermes::sandbox", session_id = %session, "pool empty; creating a container on demand");
                let created = self.create_container(BootPriority::Foreground).await;
                let mut state = self.state();
                state.creating = state.creating.saturating_sub(1);
                let id = created?;
                state.active.insert(id.clone());
                return Ok(Lease {
                    container_id: id,
                    source: LeaseSource::OnDemand,
                });
            };
            // A standby still waiting there proves the container runs: no round trip.
            let standby_waiting = self.standbys().get_mut(&id).map(Standby::is_waiting);
            if standby_waiting == Some(true) {
                return Ok(Lease {
                    container_id: id,
                    source: LeaseSource::Pool,
                });
            }
            if standby_waiting == Some(false) {
                self.standbys().remove(&id);
            }
            match self.is_running(&id).await {
                Ok(true) => {
                    return Ok(Lease {
                        container_id: id,
                        source: LeaseSource::Pool,
                    });
                }
                Ok(false) => {
                    // Died while waiting (OOM, daemon restart): it served nobody, drop it.
                    tracing::warn!(target: "hermes::sandbox", container_id = %short(&id), "ready container is not running; discarding it");
                    self.state().active.remove(&id);
                    self.standbys().remove(&id);
                    self.remove_in_background(id);
                }
                Err(error) => {
                    self.state().active.remove(&id);
                    return Err(error);
                }
            }
        }
    }

    fn release(&self, lease: Lease) {
        self.state().active.remove(&lease.container_id);
        self.standbys().remove(&lease.container_id);
        let docker = self.docker.clone();
        let network = self.network().cloned();
        let lock = self.container_lock(&lease.container_id);
        // Taken now when free, so a `resume` that comes right after waits for the stop
        // (and starts the container again) instead of handing out one about to stop.
        let held = Arc::clone(&lock).try_lock_owned().ok();
        self.sweep.notify_one();
        let cgroups = self.cgroups();
        self.spawn_background(async move {
            let _stopping = match held {
                Some(guard) => guard,
                None => lock.lock_owned().await,
            };
            match stop_container(&docker, &lease.container_id).await {
                Ok(()) => {
                    tracing::info!(target: "hermes::sandbox", container_id = %lease.short_id(), "container stopped and kept");
                    init::drop_cgroups(cgroups, &lease.container_id).await;
                }
                Err(error) => tracing::warn!(target: "hermes::sandbox", container_id = %lease.short_id(), %error, "cannot stop released container"),
            }
            if let Some(network) = network {
                network.detach(&lease.container_id).await;
            }
        });
    }

    async fn resume(&self, container_id: &str) -> Result<Lease, SandboxError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(SandboxError::Unavailable("shutting down".to_owned()));
        }
        let lock = self.container_lock(container_id);
        let _guard = lock.lock().await;
        if !self.is_running(container_id).await? {
            if !self.exists(container_id).await? {
                return Err(SandboxError::ContainerGone(short(container_id).to_owned()));
            }
            // A lingering box that died meanwhile still holds its place under the
            // cap: starting it again takes no second one.
            let reserved = !self.state().active.contains(container_id);
            if reserved {
                self.reserve()?;
            }
            let done = || {
                if reserved {
                    self.done_creating();
                }
            };
            if let Err(error) = self.prepare_kept_cgroup(container_id).await {
                done();
                return Err(error);
            }
            let started = tokio::time::timeout(
                self.settings.spawn_timeout,
                self.docker.start_container(container_id, None),
            )
            .await;
            done();
            match started {
                Ok(Ok(())) => {}
                Ok(Err(error)) if is_not_found(&error) => {
                    return Err(SandboxError::ContainerGone(short(container_id).to_owned()));
                }
                Ok(Err(error)) if self.lxcfs_gone_for_kept_box().await => {
                    // Its binds name LXCFS's files, which are not there now: the
                    // source gets a new box rather than no login.
                    tracing::warn!(target: "hermes::sandbox", container_id = %short(container_id), error = %failure(error), "a kept box cannot start without LXCFS; the source gets a new one");
                    return Err(SandboxError::ContainerGone(short(container_id).to_owned()));
                }
                Ok(Err(error)) => return Err(engine(error)),
                Err(_) => return Err(SandboxError::Timeout(self.settings.spawn_timeout.as_secs())),
            }
            self.watch_cgroups(container_id);
            // Started again, it has a new network namespace: link it anew.
            if let Err(error) = self.attach_network(container_id).await {
                let _ = stop_container(&self.docker, container_id).await;
                return Err(error);
            }
            // Booted again: its services run before the attacker is back.
            if let Err(error) = self.ensure_booted(container_id).await {
                let _ = stop_container(&self.docker, container_id).await;
                return Err(error);
            }
        }
        self.state().active.insert(container_id.to_owned());
        Ok(Lease {
            container_id: container_id.to_owned(),
            source: LeaseSource::Reused,
        })
    }

    async fn freeze(&self, container_id: &str) -> Result<(), SandboxError> {
        self.set_paused(container_id, true).await
    }

    async fn thaw(&self, container_id: &str) -> Result<(), SandboxError> {
        self.set_paused(container_id, false).await
    }

    async fn usage(&self, lease: &Lease) -> Result<ContainerUsage, SandboxError> {
        let id = &lease.container_id;
        // Counted here where the layer is on this host: the engine's own count walks
        // the layer in dockerd, every few seconds for every session.
        let upper = self.upper_dir(id).await.ok().flatten();
        let on_this_host = upper.is_some();
        let counted = self.layer_size(id, upper).await;
        let known_init = self.box_inits().get(id).copied();
        if let (Some(disk_bytes), Some(init)) = (counted, known_init) {
            if init.alive() {
                return Ok(ContainerUsage {
                    running: true,
                    disk_bytes,
                });
            }
            self.box_inits().remove(id);
        }
        let options = bollard::query_parameters::InspectContainerOptionsBuilder::default()
            .size(counted.is_none())
            .build();
        match self.docker.inspect_container(id, Some(options)).await {
            Ok(inspect) => {
                let state = inspect.state.unwrap_or_default();
                let running = state.running.unwrap_or(false);
                // Only where the layer is on this host is the engine's PID one of ours.
                if running
                    && on_this_host
                    && let Some(init) = state
                        .pid
                        .and_then(|pid| i32::try_from(pid).ok())
                        .and_then(crate::box_init::BoxInit::read)
                {
                    self.box_inits().insert(id.clone(), init);
                }
                Ok(ContainerUsage {
                    running,
                    disk_bytes: counted.unwrap_or(inspect.size_rw.unwrap_or(0).max(0) as u64),
                })
            }
            Err(error) if is_not_found(&error) => Ok(ContainerUsage {
                running: false,
                disk_bytes: 0,
            }),
            Err(error) => Err(engine(error)),
        }
    }

    async fn spawn(&self, lease: &Lease, spec: ProcessSpec) -> Result<Process, SandboxError> {
        let standby = self.standbys().remove(&lease.container_id);
        if let Some(standby) = standby {
            match (&spec.standby_input, spec.tty) {
                (Some(input), Some(_)) => {
                    if let Some(process) = standby
                        .take_over(input, &self.docker, &lease.container_id, &self.resizes)
                        .await
                    {
                        return Ok(process);
                    }
                    tracing::warn!(target: "hermes::sandbox", container_id = %lease.short_id(), "the standby login is gone; starting the session's process");
                }
                _ => {
                    if let Some(settings) = &self.settings.standby {
                        standby.cancel(&settings.cancel).await;
                    }
                }
            }
        }
        if spec.file_transfer && spec.tty.is_none() && self.direct_io_for(&lease.container_id) {
            match self.spawn_direct(lease, &spec).await {
                Ok(Some(process)) => return Ok(process),
                Ok(None) => {}
                Err(error) => return Err(error),
            }
        }
        let tty = spec.tty;
        let (exec_id, stream) = self.exec(&lease.container_id, &spec).await?;
        if let Some(size) = tty {
            self.initial_resize(&exec_id, size).await;
        }
        let (reader, writer) = tokio::io::split(stream);
        let output: Box<dyn hermes_core::sandbox::ProcessOutput> = if tty.is_some() {
            Box::new(TtyOutput::new(reader))
        } else {
            Box::new(MuxOutput::new(reader))
        };
        Ok(Process {
            output,
            input: Box::new(writer),
            control: Box::new(ExecControl {
                docker: self.docker.clone(),
                exec_id,
                container_id: lease.container_id.clone(),
                resizes: Arc::clone(&self.resizes),
            }),
            path: IoPath::Engine,
        })
    }

    async fn changed_paths(&self, lease: &Lease, max: usize) -> Result<Vec<String>, SandboxError> {
        let upper = self.upper_dir(&lease.container_id).await?;
        let (paths, size) =
            files::changed_paths(&self.docker, &lease.container_id, upper, max).await?;
        if let Some(size) = size {
            self.layer_sizes()
                .insert(lease.container_id.clone(), (Instant::now(), size));
        }
        Ok(paths)
    }

    async fn edit_etc_file(
        &self,
        lease: &Lease,
        name: &'static str,
        edit: hermes_core::sandbox::FileEdit,
    ) -> Result<Option<Vec<ChangedFile>>, SandboxError> {
        let container_id = lease.container_id.clone();
        let Some(pid) = self.init_pid(&container_id).await? else {
            return Err(SandboxError::ContainerGone(short(&container_id).to_owned()));
        };
        let pid = i64::from(pid);
        tokio::task::spawn_blocking(move || {
            // Not reachable from here (another host, another runtime): not an error.
            let Ok(root) = crate::openat::container_root(pid, &container_id) else {
                return Ok(None);
            };
            crate::etc_file::rewrite(&root, name, edit)
                .map(|files| files.map(Vec::from))
                .map_err(|error| {
                    SandboxError::Engine(format!("rewriting /etc/{name} from the host: {error}"))
                })
        })
        .await
        .map_err(|error| SandboxError::Engine(format!("rewriting /etc/{name}: {error}")))?
    }

    async fn stat_files(
        &self,
        lease: &Lease,
        paths: Vec<String>,
    ) -> Result<Vec<ChangedFile>, SandboxError> {
        let upper = self.upper_dir(&lease.container_id).await.ok().flatten();
        Ok(files::stat_files(&self.docker, &lease.container_id, upper, paths).await)
    }

    async fn read_files(
        &self,
        lease: &Lease,
        paths: Vec<String>,
        max_size: u64,
        content: bool,
    ) -> Result<Vec<(ChangedFile, FileRead)>, SandboxError> {
        let upper = self.upper_dir(&lease.container_id).await.ok().flatten();
        Ok(files::read_files(
            &self.docker,
            &lease.container_id,
            upper,
            paths,
            max_size,
            content,
        )
        .await)
    }

    async fn volatile_files(
        &self,
        lease: &Lease,
        scan: VolatileScan,
        max_files: usize,
        max_size: u64,
    ) -> Result<Vec<VolatileFile>, SandboxError> {
        let Some(init_pid) = self.init_pid(&lease.container_id).await? else {
            return Ok(Vec::new());
        };
        let mut found = if init_pid > 0 {
            let id = &lease.container_id;
            // Taken out while in use: of two passes on one box at once, the second
            // finds none and looks at everything.
            let mut seen = self.fd_scans().remove(id).unwrap_or_default();
            let full = scan != VolatileScan::Running;
            let recent = seen
                .looked_at
                .is_some_and(|at| at.elapsed() < RUNNING_FD_SCAN_INTERVAL);
            if !full && recent {
                self.fd_scans().insert(id.clone(), seen);
                return Ok(Vec::new());
            }
            seen.looked_at = Some(Instant::now());
            let looked = crate::background::run(move || {
                let found =
                    files::deleted_open_files(init_pid, max_files, max_size, &mut seen, full);
                (found, seen)
            })
            .await;
            match looked {
                Ok((found, seen)) => {
                    // Kept only while the box is known here (not once it is removed).
                    if self.box_inits().contains_key(id) {
                        self.fd_scans().insert(id.clone(), seen);
                    }
                    found
                }
                Err(_) => Vec::new(),
            }
        } else {
            Vec::new()
        };
        if scan == VolatileScan::Last && found.len() < max_files {
            let room = max_files - found.len();
            if init_pid > 0 {
                let id = lease.container_id.clone();
                let read = crate::background::run(move || {
                    crate::shm::shm_files(i64::from(init_pid), &id, room, max_size)
                })
                .await;
                match read {
                    Ok(Ok(files)) => {
                        found.extend(files);
                        return Ok(found);
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(target: "hermes::capture", container = lease.short_id(), %error, "cannot read /dev/shm from the host; reading it in the box");
                    }
                    Err(_) => {}
                }
            }
            match self.shm_archive(lease, max_files, max_size).await {
                Ok(archive) => found.extend(files::files_in_archive(
                    &archive,
                    "/dev/shm",
                    max_files - found.len(),
                    max_size,
                )),
                Err(error) => {
                    tracing::warn!(target: "hermes::capture", container = lease.short_id(), %error, "cannot read /dev/shm");
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(1000));
        assert_eq!(backoff(2), Duration::from_millis(2000));
        assert_eq!(backoff(50), MAX_BACKOFF);
    }
}
