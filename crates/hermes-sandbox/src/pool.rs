//! The pool of pre-warmed containers and the [`Sandbox`] implementation on Docker.
//!
//! `size` containers are kept started and unused. A login takes the oldest one and a
//! replacement is started in the background; an empty pool creates one on demand. The
//! ready set never grows past `size`. Released containers are stopped in the background
//! and kept for forensics until the retention sweep removes them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
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
use hermes_core::sandbox::{
    Lease, LeaseSource, Process, ProcessSpec, Sandbox, SandboxError, TtySize,
};

use crate::endpoint::{Endpoint, EndpointError};
use crate::error::{describe, engine, is_not_found, is_not_modified};
use crate::exec::{ExecControl, MuxOutput, TtyOutput, resize_exec};
use crate::profile::ContainerProfile;
use crate::{BANNER_LABEL, ROLE_LABEL, SENSOR_LABEL, hijack};

/// Containers created at once while refilling.
const MAX_PARALLEL_CREATES: usize = 4;
/// Grace period given to a container's PID 1 on stop (ours exits on SIGTERM at once).
const STOP_GRACE_SECS: i32 = 3;
/// How often the pool re-checks its size even without a wake-up.
const REFILL_TICK: Duration = Duration::from_secs(5);
/// How often stopped containers are checked against the retention rule.
const RETENTION_TICK: Duration = Duration::from_secs(3600);

/// Pool sizing and timing, from `container_pool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Ready containers to keep.
    pub size: usize,
    /// Limit on one create-and-start.
    pub spawn_timeout: Duration,
    /// Stopped containers older than this are removed; None keeps them.
    pub retention: Option<Duration>,
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
    endpoint: Endpoint,
    api_version: String,
    profile: ContainerProfile,
    settings: PoolSettings,
    events: EventBus,
    state: Mutex<PoolState>,
    wake: Notify,
    shutting_down: AtomicBool,
    background: Mutex<JoinSet<()>>,
}

impl DockerSandbox {
    /// Connects to the engine (negotiating the API version) and checks the image.
    pub async fn connect(
        endpoint: Endpoint,
        profile: ContainerProfile,
        settings: PoolSettings,
        events: EventBus,
    ) -> Result<Arc<Self>, EndpointError> {
        let docker = endpoint.connect().await?;
        let api_version = docker.client_version().to_string();
        tracing::info!(target: "hermes::sandbox", endpoint = %endpoint, api_version, "connected to Docker");
        Ok(Arc::new(DockerSandbox {
            docker,
            endpoint,
            api_version,
            profile,
            settings,
            events,
            state: Mutex::new(PoolState::default()),
            wake: Notify::new(),
            shutting_down: AtomicBool::new(false),
            background: Mutex::new(JoinSet::new()),
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

    /// Current counts.
    pub fn status(&self) -> PoolStatus {
        let state = self.state();
        PoolStatus {
            ready: state.ready.len(),
            creating: state.creating,
            active: state.active.len(),
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
                tracing::error!(target: "hermes::sandbox", error = %describe(&error), "cannot list containers of an earlier run");
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
                        let missing = self.settings.size.saturating_sub(have);
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
        let leftover = {
            let mut state = self.state();
            state.creating = state.creating.saturating_sub(1);
            match result {
                Ok(id) if self.shutting_down.load(Ordering::Acquire) => Some(id),
                Ok(id) => {
                    state.consecutive_failures = 0;
                    state.ready.push_back(id);
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
            self.remove_in_background(id);
        }
        self.wake.notify_one();
    }

    /// Creates and starts one container within `spawn_timeout`. A container that was
    /// created but could not be started is removed: nothing half-made is left behind.
    async fn create_container(&self) -> Result<String, SandboxError> {
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

    fn remove_in_background(&self, id: String) {
        let docker = self.docker.clone();
        self.spawn_background(async move {
            let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
            if let Err(error) = docker.remove_container(&id, Some(options)).await
                && !is_not_found(&error)
            {
                tracing::warn!(target: "hermes::sandbox", container_id = %short(&id), error = %describe(&error), "cannot remove container");
            }
        });
    }

    async fn retention_loop(self: Arc<Self>) {
        let Some(retention) = self.settings.retention else {
            return;
        };
        while !self.shutting_down.load(Ordering::Acquire) {
            self.sweep_stopped(retention).await;
            tokio::time::sleep(RETENTION_TICK).await;
        }
    }

    /// Removes this sensor's stopped containers created longer than `retention` ago.
    pub async fn sweep_stopped(&self, retention: Duration) -> usize {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&self.label_filters(Some(&["exited", "dead", "created"])))
            .build();
        let stopped = match self.docker.list_containers(Some(options)).await {
            Ok(list) => list,
            Err(error) => {
                tracing::warn!(target: "hermes::sandbox", error = %describe(&error), "retention sweep cannot list containers");
                return 0;
            }
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut removed = 0;
        for container in stopped {
            let (Some(id), Some(created)) = (container.id, container.created) else {
                continue;
            };
            if now.saturating_sub(created) < retention.as_secs() as i64 {
                continue;
            }
            let options = RemoveContainerOptionsBuilder::default().v(true).build();
            match self.docker.remove_container(&id, Some(options)).await {
                Ok(()) => {
                    removed += 1;
                    self.events.emit(
                        EventBuilder::global(EventId::ContainerRemove)
                            .field("container_id", id.clone())
                            .field("reason", "retention_age")
                            .message(format!(
                                "Container {} removed: older than the retention period",
                                short(&id)
                            )),
                    );
                }
                Err(error) => {
                    tracing::warn!(target: "hermes::sandbox", container_id = %short(&id), error = %describe(&error), "retention sweep cannot remove container");
                }
            }
        }
        removed
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
    Duration::from_millis(millis.min(30_000))
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
            let candidate = self.state().ready.pop_front();
            self.wake.notify_one();
            let Some(id) = candidate else {
                tracing::warn!(target: "hermes::sandbox", session_id = %session, "pool empty; creating a container on demand");
                let id = self.create_container().await?;
                self.state().active.insert(id.clone());
                return Ok(Lease {
                    container_id: id,
                    source: LeaseSource::OnDemand,
                });
            };
            if self.is_running(&id).await? {
                self.state().active.insert(id.clone());
                return Ok(Lease {
                    container_id: id,
                    source: LeaseSource::Pool,
                });
            }
            // Died while waiting (OOM, daemon restart): it served nobody, drop it.
            tracing::warn!(target: "hermes::sandbox", container_id = %short(&id), "ready container is not running; discarding it");
            self.remove_in_background(id);
        }
    }

    fn release(&self, lease: Lease) {
        self.state().active.remove(&lease.container_id);
        let docker = self.docker.clone();
        self.spawn_background(async move {
            match stop_container(&docker, &lease.container_id).await {
                Ok(()) => tracing::info!(target: "hermes::sandbox", container_id = %lease.short_id(), "container stopped and kept"),
                Err(error) => tracing::warn!(target: "hermes::sandbox", container_id = %lease.short_id(), %error, "cannot stop released container"),
            }
        });
    }

    async fn spawn(&self, lease: &Lease, spec: ProcessSpec) -> Result<Process, SandboxError> {
        let tty = spec.tty;
        let config = ExecConfig {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(tty.is_some()),
            console_size: tty.map(|s| vec![s.height as usize, s.width as usize]),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            cmd: Some(spec.argv),
            user: Some(spec.user),
            working_dir: Some(spec.workdir),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(&lease.container_id, config)
            .await
            .map_err(|error| match &error {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404 | 409,
                    ..
                } => SandboxError::ContainerGone(lease.short_id().to_owned()),
                _ => engine(error),
            })?;
        let stream = hijack::start_exec(
            &self.endpoint,
            &self.api_version,
            &created.id,
            tty.is_some(),
        )
        .await?;
        if let Some(size) = tty {
            self.initial_resize(&created.id, size).await;
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
                exec_id: created.id,
            }),
        })
    }
}

impl DockerSandbox {
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
        assert_eq!(backoff(50), Duration::from_millis(30_000));
    }
}
