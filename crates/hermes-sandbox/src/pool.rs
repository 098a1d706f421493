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

use hermes_core::events::{EventBuilder, EventBus, EventId};
use hermes_core::ids::SessionId;
use hermes_core::metrics::{Histogram, render_family};
use hermes_core::sandbox::{
    ChangedFile, ContainerUsage, FileRead, IoPath, Lease, LeaseSource, OutputChunk, Process,
    ProcessSpec, Sandbox, SandboxError, StandbySpec, TtySize, VolatileFile,
};

use crate::endpoint::{Endpoint, EndpointError};
use crate::error::{engine, failure, is_not_found, is_not_modified};
use crate::exec::{DirectOutput, ExecControl, MuxOutput, ResizeTurns, TtyOutput, resize_exec};
use crate::profile::ContainerProfile;
use crate::retention::{self, Rules, Stopped};
use crate::standby::Standby;
use crate::{BANNER_LABEL, ROLE_LABEL, SENSOR_LABEL, hijack};
use crate::{direct, files};

/// How long a new standby login gets to quiet its terminal.
const STANDBY_READY_WAIT: Duration = Duration::from_secs(10);
/// Bucket bounds of the container creation time, seconds.
const CREATE_BOUNDS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];
/// The health check's engine ping waits this long.
const HEALTH_PING_TIMEOUT: Duration = Duration::from_secs(3);
/// With no ready container, this many failed creations in a row make Hermes unhealthy.
const UNHEALTHY_AFTER_FAILURES: u32 = 3;
/// Containers created at once while refilling.
const MAX_PARALLEL_CREATES: usize = 4;
/// Grace period given to a container's PID 1 on stop (ours exits on SIGTERM at once).
const STOP_GRACE_SECS: i32 = 3;
/// How often the pool re-checks its size even without a wake-up.
const REFILL_TICK: Duration = Duration::from_secs(5);
/// How often stopped containers are checked against the retention rules (also soon
/// after each release, at most once per `RETENTION_MIN_GAP`).
const RETENTION_TICK: Duration = Duration::from_secs(3600);
const RETENTION_MIN_GAP: Duration = Duration::from_secs(5);
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
            spawn_timeout: Duration::from_secs(pool.spawn_timeout),
            retention: (pool.cleanup_stopped_after_days > 0)
                .then(|| Duration::from_secs(u64::from(pool.cleanup_stopped_after_days) * 86_400)),
            max_containers: pool.max_containers as usize,
            max_stopped: pool.max_stopped_containers as usize,
            max_stopped_bytes: hermes_core::config::parse_memory_size(&pool.max_stopped_disk)
                .unwrap_or(u64::MAX),
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
        let docker = endpoint.connect().await?;
        let api_version = docker.client_version().to_string();
        tracing::info!(target: "hermes::sandbox", endpoint = %endpoint, api_version, "connected to Docker");
        // Another runtime (gVisor) keeps the container's files out of the host's view
        // of its first process.
        let direct_io = profile.runtime.is_none();
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
            direct_io,
            engine_only: Mutex::new(HashSet::new()),
            resizes: Arc::new(ResizeTurns::default()),
            stopped: AtomicUsize::new(0),
            create_seconds: Histogram::new(CREATE_BOUNDS),
        }))
    }

    /// The persona banner the image was built with (its `hermes.persona.ssh_banner`
    /// label). Fails when the image is missing.
    pub async fn image_banner(&self) -> Result<Option<String>, SandboxError> {
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

    /// Starts the standby process in a new ready container; without one, logins there
    /// start their process the ordinary way.
    async fn start_standby(&self, container_id: &str) {
        let Some(standby) = &self.settings.standby else {
            return;
        };
        match self.exec(container_id, &standby.process).await {
            Ok((exec_id, stream)) => {
                let mut waiting = Standby::new(exec_id, stream);
                if waiting.wait_ready(&standby.ready, STANDBY_READY_WAIT).await {
                    self.standbys().insert(container_id.to_owned(), waiting);
                } else {
                    tracing::warn!(target: "hermes::sandbox", container_id = %short(container_id), "the standby login did not get ready; logins there start their own process");
                    waiting.cancel(&standby.cancel).await;
                }
            }
            Err(error) => {
                tracing::warn!(target: "hermes::sandbox", container_id = %short(container_id), %error, "cannot start the standby login");
            }
        }
    }

    /// Creates and starts an exec, returning its id and attached stream once the
    /// process runs.
    async fn exec(
        &self,
        container_id: &str,
        spec: &ProcessSpec,
    ) -> Result<(String, hijack::ExecStream), SandboxError> {
        self.exec_as(container_id, spec, spec.argv.clone(), true)
            .await
    }

    /// Creates and starts an exec running `argv` with `spec`'s user, environment and
    /// terminal; with `attach_io` false only its stderr comes through the engine.
    async fn exec_as(
        &self,
        container_id: &str,
        spec: &ProcessSpec,
        argv: Vec<String>,
        attach_io: bool,
    ) -> Result<(String, hijack::ExecStream), SandboxError> {
        let tty = spec.tty;
        let config = ExecConfig {
            attach_stdin: Some(attach_io),
            attach_stdout: Some(attach_io),
            attach_stderr: Some(true),
            tty: Some(tty.is_some()),
            console_size: tty.map(|s| vec![s.height as usize, s.width as usize]),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            cmd: Some(argv),
            user: Some(spec.user.clone()),
            working_dir: Some(spec.workdir.clone()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(container_id, config)
            .await
            .map_err(|error| match &error {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404 | 409,
                    ..
                } => SandboxError::ContainerGone(short(container_id).to_owned()),
                _ => engine(error),
            })?;
        let stream = hijack::start_exec(
            &self.stream_endpoint,
            &self.api_version,
            &created.id,
            tty.is_some(),
        )
        .await?;
        let stream = self.confirm_started(&created.id, stream).await?;
        Ok((created.id, stream))
    }

    /// Current counts.
    pub fn status(&self) -> PoolStatus {
        let state = self.state();
        PoolStatus {
            ready: state.ready.len(),
            creating: state.creating,
            active: state.active.len(),
            stopped: self.stopped.load(Ordering::Relaxed),
            failed_in_a_row: state.consecutive_failures,
        }
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

    fn label_filters(&self, status: Option<&[&str]>) -> HashMap<String, Vec<String>> {
        let mut filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{ROLE_LABEL}=target"),
                format!("{SENSOR_LABEL}={}", self.profile.sensor),
            ],
        )]);
        if let Some(status) = status {
            filters.insert(
                "status".to_owned(),
                status.iter().map(|s| (*s).to_owned()).collect(),
            );
        }
        filters
    }

    async fn stop_leftovers(&self) {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&self.label_filters(Some(&["running", "restarting", "paused"])))
            .build();
        let leftovers = match self.docker.list_containers(Some(options)).await {
            Ok(list) => list,
            Err(error) => {
                let error = failure(error);
                tracing::error!(target: "hermes::sandbox", error = %error, "cannot list containers of an earlier run");
                return;
            }
        };
        let mut stops = JoinSet::new();
        for container in leftovers {
            let Some(id) = container.id else { continue };
            let docker = self.docker.clone();
            stops.spawn(async move {
                let result = stop_container(&docker, &id).await;
                (id, result)
            });
        }
        while let Some(joined) = stops.join_next().await {
            if let Ok((id, result)) = joined {
                match result {
                    Ok(()) => {
                        tracing::info!(target: "hermes::sandbox", container_id = %short(&id), "stopped a container left running by an earlier run")
                    }
                    Err(error) => {
                        tracing::warn!(target: "hermes::sandbox", container_id = %short(&id), %error, "cannot stop leftover container")
                    }
                }
            }
        }
    }

    async fn refill_loop(self: Arc<Self>) {
        while !self.shutting_down.load(Ordering::Acquire) {
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
        let result = self.create_container().await;
        if let Ok(id) = &result {
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
                    tracing::debug!(target: "hermes::sandbox", ready = state.ready.len(), "pool container ready");
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

    /// Creates and starts one container within `spawn_timeout`. A container that was
    /// created but could not be started is removed: nothing half-made is left behind.
    async fn create_container(&self) -> Result<String, SandboxError> {
        let started = Instant::now();
        let created = self.create_container_untimed().await;
        if created.is_ok() {
            self.create_seconds.observe(started.elapsed().as_secs_f64());
        }
        created
    }

    async fn create_container_untimed(&self) -> Result<String, SandboxError> {
        let timeout = self.settings.spawn_timeout;
        let name = format!("hermes-{}", SessionId::random());
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = tokio::time::timeout(
            timeout,
            self.docker
                .create_container(Some(options), self.profile.create_body()),
        )
        .await;
        let id = match created {
            Ok(Ok(response)) => response.id,
            Ok(Err(error)) => return Err(engine(error)),
            Err(_) => {
                // The create may still complete on the daemon: remove by name.
                self.remove_in_background(name);
                return Err(SandboxError::Timeout(timeout.as_secs()));
            }
        };
        let started = tokio::time::timeout(timeout, self.docker.start_container(&id, None)).await;
        match started {
            Ok(Ok(())) => Ok(id),
            Ok(Err(error)) => {
                self.remove_in_background(id);
                Err(engine(error))
            }
            Err(_) => {
                self.remove_in_background(id);
                Err(SandboxError::Timeout(timeout.as_secs()))
            }
        }
    }

    async fn exists(&self, id: &str) -> Result<bool, SandboxError> {
        match self.docker.inspect_container(id, None).await {
            Ok(_) => Ok(true),
            Err(error) if is_not_found(&error) => Ok(false),
            Err(error) => Err(engine(error)),
        }
    }

    async fn is_running(&self, id: &str) -> Result<bool, SandboxError> {
        match self.docker.inspect_container(id, None).await {
            Ok(inspect) => Ok(inspect.state.and_then(|s| s.running).unwrap_or(false)),
            Err(error) if is_not_found(&error) => Ok(false),
            Err(error) => Err(engine(error)),
        }
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
        self.engine_only
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.resizes.forget(id);
    }

    /// Whether this container's file transfers may use [`direct`] pipes.
    fn direct_io_for(&self, container_id: &str) -> bool {
        self.direct_io
            && !self
                .engine_only
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(container_id)
    }

    /// From now on this container's transfers use the engine's stream.
    fn engine_only(&self, container_id: &str) {
        self.engine_only
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(container_id.to_owned());
    }

    fn remove_in_background(&self, id: String) {
        self.forget_host_views(&id);
        let docker = self.docker.clone();
        self.spawn_background(async move {
            let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
            if let Err(error) = docker.remove_container(&id, Some(options)).await
                && !is_not_found(&error)
            {
                let error = failure(error);
                tracing::warn!(target: "hermes::sandbox", container_id = %short(&id), error = %error, "cannot remove container");
            }
        });
    }

    async fn retention_loop(self: Arc<Self>) {
        while !self.shutting_down.load(Ordering::Acquire) {
            self.sweep_stopped().await;
            tokio::select! {
                _ = tokio::time::sleep(RETENTION_TICK) => {}
                _ = self.sweep.notified() => tokio::time::sleep(RETENTION_MIN_GAP).await,
            }
        }
    }

    /// Removes this sensor's stopped containers past the age limit, then the oldest
    /// until the count and disk caps hold. Each removal is an event.
    pub async fn sweep_stopped(&self) -> usize {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .size(true)
            .filters(&self.label_filters(Some(&["exited", "dead", "created"])))
            .build();
        let stopped = match self.docker.list_containers(Some(options)).await {
            Ok(list) => list,
            Err(error) => {
                let error = failure(error);
                tracing::warn!(target: "hermes::sandbox", error = %error, "retention sweep cannot list containers");
                return 0;
            }
        };
        let mut stopped: Vec<Stopped> = stopped
            .into_iter()
            .filter_map(|c| {
                Some(Stopped {
                    id: c.id?,
                    created: c.created.unwrap_or(0),
                    finished: None,
                    size: c.size_rw.unwrap_or(0).max(0) as u64,
                })
            })
            .collect();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let rules = Rules {
            max_age: self.settings.retention,
            max_count: self.settings.max_stopped,
            max_bytes: self.settings.max_stopped_bytes,
        };
        if retention::caps_exceeded(&stopped, now, rules) {
            // Which went first matters now: ask each for its stop time.
            for container in &mut stopped {
                if let Ok(inspect) = self.docker.inspect_container(&container.id, None).await {
                    container.finished = inspect
                        .state
                        .and_then(|s| s.finished_at)
                        .and_then(|t| retention::parse_time(&t));
                }
            }
        }
        let mut removed = 0;
        let found = stopped.len();
        for (id, reason) in retention::choose(stopped, now, rules) {
            let options = RemoveContainerOptionsBuilder::default().v(true).build();
            match self.docker.remove_container(&id, Some(options)).await {
                Ok(()) => {
                    removed += 1;
                    self.forget_host_views(&id);
                    self.events.emit(
                        EventBuilder::global(EventId::ContainerRemove)
                            .field("container_id", id.clone())
                            .field("reason", reason.as_str())
                            .message(format!(
                                "Container {} removed: {}",
                                short(&id),
                                reason.describe()
                            )),
                    );
                }
                Err(error) => {
                    let error = failure(error);
                    tracing::warn!(target: "hermes::sandbox", container_id = %short(&id), error = %error, "retention sweep cannot remove container");
                }
            }
        }
        self.stopped
            .store(found.saturating_sub(removed), Ordering::Relaxed);
        removed
    }

    /// Appends the pool's metrics (Prometheus text format).
    pub fn render_metrics(&self, out: &mut String) {
        let status = self.status();
        render_family(
            out,
            "hermes_pool_containers",
            "gauge",
            "Containers of this sensor by state (stopped: as of the last retention sweep).",
            &[
                ("state=\"ready\"", status.ready as u64),
                ("state=\"creating\"", status.creating as u64),
                ("state=\"active\"", status.active as u64),
                ("state=\"stopped\"", status.stopped as u64),
            ],
        );
        render_family(
            out,
            "hermes_pool_create_failures_in_a_row",
            "gauge",
            "Pool container creations that failed in a row.",
            &[("", u64::from(status.failed_in_a_row))],
        );
        self.create_seconds.render(
            out,
            "hermes_container_create_seconds",
            "Time to create and start a container (successful ones).",
        );
        render_family(
            out,
            "hermes_docker_errors_total",
            "counter",
            "Errors from the Docker engine or the connection to it.",
            &[("", crate::error::engine_errors())],
        );
    }

    /// Ok when the engine answers and the pool can be refilled; else why not.
    pub async fn health(&self) -> Result<(), String> {
        match tokio::time::timeout(HEALTH_PING_TIMEOUT, self.docker.ping()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(format!("Docker engine: {}", failure(error))),
            Err(_) => {
                return Err(format!(
                    "Docker engine did not answer within {} s",
                    HEALTH_PING_TIMEOUT.as_secs()
                ));
            }
        }
        let status = self.status();
        if status.ready == 0 && status.failed_in_a_row >= UNHEALTHY_AFTER_FAILURES {
            return Err(format!(
                "the pool cannot be refilled: the last {} container creations failed",
                status.failed_in_a_row
            ));
        }
        Ok(())
    }

    fn container_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .container_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Drop locks nobody holds any more, so the map does not grow.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        Arc::clone(locks.entry(id.to_owned()).or_default())
    }

    /// Room for one more running container under `max_containers`; reserved as
    /// "creating" until the caller calls `done_creating`.
    fn reserve(&self) -> Result<(), SandboxError> {
        let mut state = self.state();
        let running = state.ready.len() + state.creating + state.active.len();
        if running >= self.settings.max_containers {
            return Err(SandboxError::Unavailable(format!(
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
            self.spawn_background(async move {
                if let Err(error) = stop_container(&docker, &id).await {
                    tracing::warn!(target: "hermes::sandbox", container_id = %short(&id), %error, "cannot stop container at shutdown");
                }
            });
        }
        let mut set =
            std::mem::take(&mut *self.background.lock().unwrap_or_else(|p| p.into_inner()));
        while set.join_next().await.is_some() {}
    }
}

async fn stop_container(docker: &Docker, id: &str) -> Result<(), SandboxError> {
    let options = StopContainerOptionsBuilder::default()
        .t(STOP_GRACE_SECS)
        .build();
    match docker.stop_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(error) if is_not_modified(&error) || is_not_found(&error) => Ok(()),
        Err(error) => Err(engine(error)),
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
                let created = self.create_container().await;
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
        let lock = self.container_lock(&lease.container_id);
        // Taken now when free, so a `resume` that comes right after waits for the stop
        // (and starts the container again) instead of handing out one about to stop.
        let held = Arc::clone(&lock).try_lock_owned().ok();
        self.sweep.notify_one();
        self.spawn_background(async move {
            let _stopping = match held {
                Some(guard) => guard,
                None => lock.lock_owned().await,
            };
            match stop_container(&docker, &lease.container_id).await {
                Ok(()) => tracing::info!(target: "hermes::sandbox", container_id = %lease.short_id(), "container stopped and kept"),
                Err(error) => tracing::warn!(target: "hermes::sandbox", container_id = %lease.short_id(), %error, "cannot stop released container"),
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
            self.reserve()?;
            let started = tokio::time::timeout(
                self.settings.spawn_timeout,
                self.docker.start_container(container_id, None),
            )
            .await;
            self.done_creating();
            match started {
                Ok(Ok(())) => {}
                Ok(Err(error)) if is_not_found(&error) => {
                    return Err(SandboxError::ContainerGone(short(container_id).to_owned()));
                }
                Ok(Err(error)) => return Err(engine(error)),
                Err(_) => return Err(SandboxError::Timeout(self.settings.spawn_timeout.as_secs())),
            }
        }
        self.state().active.insert(container_id.to_owned());
        Ok(Lease {
            container_id: container_id.to_owned(),
            source: LeaseSource::Reused,
        })
    }

    async fn usage(&self, lease: &Lease) -> Result<ContainerUsage, SandboxError> {
        let options = bollard::query_parameters::InspectContainerOptionsBuilder::default()
            .size(true)
            .build();
        match self
            .docker
            .inspect_container(&lease.container_id, Some(options))
            .await
        {
            Ok(inspect) => Ok(ContainerUsage {
                running: inspect.state.and_then(|s| s.running).unwrap_or(false),
                disk_bytes: inspect.size_rw.unwrap_or(0).max(0) as u64,
            }),
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
        files::changed_paths(&self.docker, &lease.container_id, upper, max).await
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
        running_only: bool,
        max_files: usize,
        max_size: u64,
    ) -> Result<Vec<VolatileFile>, SandboxError> {
        let inspect = self
            .docker
            .inspect_container(&lease.container_id, None)
            .await
            .map_err(engine)?;
        let state = inspect.state.unwrap_or_default();
        if !state.running.unwrap_or(false) {
            return Ok(Vec::new());
        }
        let init_pid = state.pid.and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        let mut found = if init_pid > 0 {
            tokio::task::spawn_blocking(move || {
                files::deleted_open_files(init_pid, max_files, max_size)
            })
            .await
            .unwrap_or_default()
        } else {
            Vec::new()
        };
        if !running_only && found.len() < max_files {
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

/// Longest a `/dev/shm` archive may take to arrive.
const SHM_READ_TIMEOUT: Duration = Duration::from_secs(20);

impl DockerSandbox {
    /// `/dev/shm` as a tar stream, made by the container's `tar` (the engine's archive
    /// endpoint does not reach into the container's tmpfs mounts).
    async fn shm_archive(
        &self,
        lease: &Lease,
        max_files: usize,
        max_size: u64,
    ) -> Result<Vec<u8>, SandboxError> {
        let spec = ProcessSpec {
            argv: [
                "tar",
                "-C",
                "/dev/shm",
                "--one-file-system",
                "-cf",
                "-",
                ".",
            ]
            .map(str::to_owned)
            .to_vec(),
            env: Vec::new(),
            user: "root".to_owned(),
            workdir: "/".to_owned(),
            tty: None,
            standby_input: None,
            file_transfer: false,
        };
        let mut process = self.spawn(lease, spec).await?;
        drop(process.input);
        let cap = (max_files as u64)
            .saturating_mul(max_size.saturating_add(1024))
            .min(1 << 30);
        let mut archive = Vec::new();
        let read = async {
            while let Some(chunk) = process.output.next_chunk().await? {
                if let OutputChunk::Stdout(bytes) = chunk {
                    archive.extend_from_slice(&bytes);
                    if archive.len() as u64 > cap {
                        break;
                    }
                }
            }
            Ok::<(), std::io::Error>(())
        };
        match tokio::time::timeout(SHM_READ_TIMEOUT, read).await {
            Ok(Ok(())) => Ok(archive),
            Ok(Err(error)) => Err(SandboxError::Engine(error.to_string())),
            Err(_) => Err(SandboxError::Timeout(SHM_READ_TIMEOUT.as_secs())),
        }
    }
}

impl DockerSandbox {
    /// Starts a file-transfer process with its stdin and stdout on FIFOs opened from
    /// the host ([`direct`]). Ok(None) when that cannot be done here, before anything
    /// ran in the container (the caller then starts it the ordinary way).
    async fn spawn_direct(
        &self,
        lease: &Lease,
        spec: &ProcessSpec,
    ) -> Result<Option<Process>, SandboxError> {
        let container_id = &lease.container_id;
        let inspect = match self.docker.inspect_container(container_id, None).await {
            Ok(inspect) => inspect,
            Err(error) if is_not_found(&error) => {
                return Err(SandboxError::ContainerGone(short(container_id).to_owned()));
            }
            Err(error) => return Err(engine(error)),
        };
        let state = inspect.state.unwrap_or_default();
        if state.running != Some(true) {
            return Err(SandboxError::ContainerGone(short(container_id).to_owned()));
        }
        let pid = state.pid.unwrap_or(0);
        let fifos = match direct::Fifos::make(pid, container_id) {
            Ok(fifos) => fifos,
            Err(error) => {
                self.engine_only(container_id);
                tracing::info!(target: "hermes::sandbox", container_id = %short(container_id), %error, "this container's file transfers go through the engine's stream (its processes are not reachable from here)");
                return Ok(None);
            }
        };
        let stdout = match fifos.open_stdout() {
            Ok(stdout) => stdout,
            Err(error) => {
                tracing::warn!(target: "hermes::sandbox", container_id = %short(container_id), %error, "cannot open a transfer's output pipe; using the engine's stream");
                return Ok(None);
            }
        };
        let (exec_id, stream) = match self
            .exec_as(container_id, spec, fifos.wrap(&spec.argv), false)
            .await
        {
            Ok(started) => started,
            Err(error) => {
                fifos.release_waiting();
                return Err(error);
            }
        };
        let docker = self.docker.clone();
        let exec = exec_id.clone();
        let stdin = fifos
            .open_stdin(|| {
                let docker = docker.clone();
                let exec = exec.clone();
                async move {
                    docker
                        .inspect_exec(&exec)
                        .await
                        .map(|i| i.running == Some(false))
                        .unwrap_or(false)
                }
            })
            .await;
        let stdin = match stdin {
            Ok(stdin) => stdin,
            Err(error) => {
                // Nothing of the program ran: its shell stops at the redirection.
                fifos.release_waiting();
                self.engine_only(container_id);
                tracing::warn!(target: "hermes::sandbox", container_id = %short(container_id), %error, "a transfer's process did not open its pipes; this container's file transfers go through the engine's stream from now on");
                return Ok(None);
            }
        };
        drop(fifos);
        let (reader, _unused_writer) = tokio::io::split(stream);
        Ok(Some(Process {
            output: Box::new(DirectOutput::new(stdout, reader)),
            input: Box::new(direct::Input::new(stdin)),
            control: Box::new(ExecControl {
                docker: self.docker.clone(),
                exec_id,
                container_id: container_id.clone(),
                resizes: Arc::clone(&self.resizes),
            }),
            path: IoPath::Direct,
        }))
    }

    /// Waits until the engine has started the exec's process. When it could not (the
    /// program is missing, say), the engine writes its own error text into the stream;
    /// that text must never reach the attacker, so it becomes an error here.
    async fn confirm_started(
        &self,
        exec_id: &str,
        mut stream: hijack::ExecStream,
    ) -> Result<hijack::ExecStream, SandboxError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let inspect = self.docker.inspect_exec(exec_id).await.map_err(engine)?;
            if inspect.pid.is_some_and(|pid| pid > 0) {
                return Ok(stream);
            }
            if inspect.running == Some(false) && inspect.exit_code.is_some() {
                let mut text = vec![0u8; 4096];
                let read = tokio::time::timeout(
                    Duration::from_millis(500),
                    tokio::io::AsyncReadExt::read(&mut stream, &mut text),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
                let text = String::from_utf8_lossy(&text[..read]);
                return Err(SandboxError::Engine(format!(
                    "exec did not start: {}",
                    hermes_core::escape::escape_untrusted(text.trim())
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                // Still starting after this long: let the output decide.
                return Ok(stream);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Daemons before API 1.42 ignore the exec's console size: set it right after the
    /// start, retrying briefly while the exec is still coming up.
    async fn initial_resize(&self, exec_id: &str, size: TtySize) {
        for attempt in 0..5 {
            match resize_exec(&self.docker, exec_id, size).await {
                Ok(()) => return,
                Err(error) if attempt == 4 => {
                    tracing::warn!(target: "hermes::sandbox", %error, "cannot set the terminal size");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
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
