//! A [`Sandbox`] without an engine: leases are names, processes are channels the test
//! writes their output into, and every stage can be held or made to fail.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::watch;

use super::process::FakeProcess;
use crate::ids::SessionId;
use crate::sandbox::{
    ContainerUsage, Lease, LeaseSource, Process, ProcessSpec, Sandbox, SandboxError,
};

/// A call of the engine a test can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// [`Sandbox::lease`].
    Lease,
    /// [`Sandbox::resume`].
    Resume,
    /// [`Sandbox::spawn`] (exec create and start).
    Spawn,
    /// [`Sandbox::usage`] (the periodic check).
    Usage,
    /// [`ProcessControl::resize`](crate::sandbox::ProcessControl::resize).
    Resize,
    /// [`ProcessControl::exit_status`](crate::sandbox::ProcessControl::exit_status).
    ExitStatus,
    /// [`ProcessControl::signal`](crate::sandbox::ProcessControl::signal).
    Signal,
    /// [`Sandbox::changed_paths`] (the file capture's listing).
    ChangedPaths,
}

/// What the fake engine was asked, in the order it was asked.
#[derive(Default)]
struct Calls {
    lease_requests: u32,
    leased: Vec<Lease>,
    resumed: Vec<String>,
    released: Vec<Lease>,
    spawned: Vec<(String, ProcessSpec)>,
    usage_checks: u32,
    listings: u32,
    thawed: Vec<String>,
}

/// The failures in force, shared with every process's control.
pub(super) type Failures = Arc<Mutex<HashMap<Stage, SandboxError>>>;

pub(super) fn failure(failures: &Failures, stage: Stage) -> Result<(), SandboxError> {
    match failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&stage)
    {
        Some(error) => Err(error.clone()),
        None => Ok(()),
    }
}

struct State {
    calls: Calls,
    next_container: u64,
    /// Containers that exist (running or stopped), for `resume`.
    known: Vec<String>,
    disk_bytes: u64,
    running: bool,
    processes: Vec<FakeProcess>,
    /// Containers leased or resumed and not released yet, at most (None: no cap).
    capacity: Option<usize>,
    /// Containers frozen now.
    frozen: HashSet<String>,
}

impl State {
    /// Containers leased or resumed and not released since.
    fn running_ids(&self) -> Vec<String> {
        let mut running: Vec<String> = Vec::new();
        for lease in &self.calls.leased {
            if !running.contains(&lease.container_id) {
                running.push(lease.container_id.clone());
            }
        }
        // Each release stops one start (leased, or a stopped one resumed).
        let mut starts: HashMap<&str, i64> = HashMap::new();
        for lease in &self.calls.leased {
            *starts.entry(&lease.container_id).or_default() += 1;
        }
        for lease in &self.calls.released {
            *starts.entry(&lease.container_id).or_default() -= 1;
        }
        running.retain(|id| starts.get(id.as_str()).copied().unwrap_or(0) > 0);
        running
    }

    fn check_capacity(&self) -> Result<(), SandboxError> {
        match self.capacity {
            Some(capacity) if self.running_ids().len() >= capacity => {
                Err(SandboxError::AtCapacity(format!(
                    "container_pool.max_containers ({capacity}) reached"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The fake engine. Cheap to share: tests keep an `Arc` and hand a clone to the
/// services.
pub struct FakeSandbox {
    state: Mutex<State>,
    failures: Failures,
    /// Stages whose calls wait until they are let through.
    held: watch::Sender<HashSet<Stage>>,
    /// Counts spawned processes, for [`FakeSandbox::process`].
    spawned: watch::Sender<usize>,
}

impl Default for FakeSandbox {
    fn default() -> Self {
        FakeSandbox {
            state: Mutex::new(State {
                calls: Calls::default(),
                next_container: 1,
                known: Vec::new(),
                disk_bytes: 0,
                running: true,
                processes: Vec::new(),
                capacity: None,
                frozen: HashSet::new(),
            }),
            failures: Failures::default(),
            held: watch::channel(HashSet::new()).0,
            spawned: watch::channel(0).0,
        }
    }
}

impl FakeSandbox {
    /// An engine that answers everything at once and successfully.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every later call of `stage` fail with `error` (until [`Self::heal`]).
    pub fn fail(&self, stage: Stage, error: SandboxError) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(stage, error);
    }

    /// Makes `stage` succeed again.
    pub fn heal(&self, stage: Stage) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&stage);
    }

    fn failure(&self, stage: Stage) -> Result<(), SandboxError> {
        failure(&self.failures, stage)
    }

    /// Calls of `stage` wait (after being counted) until [`Self::let_through`].
    pub fn hold(&self, stage: Stage) {
        self.held.send_modify(|held| {
            held.insert(stage);
        });
    }

    /// Lets waiting and later calls of `stage` through.
    pub fn let_through(&self, stage: Stage) {
        self.held.send_modify(|held| {
            held.remove(&stage);
        });
    }

    /// Leases and resumes wait until [`Self::let_leases_through`].
    pub fn hold_leases(&self) {
        self.hold(Stage::Lease);
        self.hold(Stage::Resume);
    }

    /// Lets waiting and later leases and resumes through.
    pub fn let_leases_through(&self) {
        self.let_through(Stage::Lease);
        self.let_through(Stage::Resume);
    }

    /// What the periodic usage check reports from now on.
    pub fn set_usage(&self, running: bool, disk_bytes: u64) {
        let mut state = self.state();
        state.running = running;
        state.disk_bytes = disk_bytes;
    }

    /// At most `capacity` containers run at once (leased or resumed, not yet
    /// released): past it, leases and resumes fail as `max_containers` makes them.
    pub fn set_capacity(&self, capacity: usize) {
        self.state().capacity = Some(capacity);
    }

    /// The containers thawed, in order.
    pub fn thawed(&self) -> Vec<String> {
        self.state().calls.thawed.clone()
    }

    /// The containers frozen now.
    pub fn frozen(&self) -> Vec<String> {
        self.state().frozen.iter().cloned().collect()
    }

    /// How many times a lease was asked for (held ones included).
    pub fn lease_requests(&self) -> u32 {
        self.state().calls.lease_requests
    }

    /// The leases handed out, in order.
    pub fn leased(&self) -> Vec<Lease> {
        self.state().calls.leased.clone()
    }

    /// The container ids asked to be resumed, in order.
    pub fn resumed(&self) -> Vec<String> {
        self.state().calls.resumed.clone()
    }

    /// The leases given back, in order (each one should appear once).
    pub fn released(&self) -> Vec<Lease> {
        self.state().calls.released.clone()
    }

    /// The processes asked for: container id and spec.
    pub fn spawned(&self) -> Vec<(String, ProcessSpec)> {
        self.state().calls.spawned.clone()
    }

    /// How many usage checks were made.
    pub fn usage_checks(&self) -> u32 {
        self.state().calls.usage_checks
    }

    /// How many times the changed files were listed (file capture).
    pub fn listings(&self) -> u32 {
        self.state().calls.listings
    }

    /// The `index`th process started (from 0), once it has been.
    pub async fn process(&self, index: usize) -> FakeProcess {
        let mut spawned = self.spawned.subscribe();
        // The sender lives in self, so the wait ends only when the process exists.
        let _ = spawned.wait_for(|count| *count > index).await;
        let state = self.state();
        match state.processes.get(index) {
            Some(process) => process.clone(),
            None => unreachable!("process {index} counted but not kept"),
        }
    }

    /// Waits while `stage` is held, then fails if `stage` is set to.
    async fn stage(&self, stage: Stage) -> Result<(), SandboxError> {
        let mut held = self.held.subscribe();
        let _ = held.wait_for(|held| !held.contains(&stage)).await;
        self.failure(stage)
    }
}

#[async_trait]
impl Sandbox for FakeSandbox {
    async fn lease(&self, _session: SessionId) -> Result<Lease, SandboxError> {
        self.state().calls.lease_requests += 1;
        self.stage(Stage::Lease).await?;
        let mut state = self.state();
        state.check_capacity()?;
        let lease = Lease {
            container_id: format!("{:064x}", state.next_container),
            source: LeaseSource::Pool,
        };
        state.next_container += 1;
        state.known.push(lease.container_id.clone());
        state.calls.leased.push(lease.clone());
        Ok(lease)
    }

    async fn resume(&self, container_id: &str) -> Result<Lease, SandboxError> {
        self.state().calls.resumed.push(container_id.to_owned());
        self.stage(Stage::Resume).await?;
        let mut state = self.state();
        if !state.known.iter().any(|id| id == container_id) {
            return Err(SandboxError::ContainerGone(container_id.to_owned()));
        }
        let lease = Lease {
            container_id: container_id.to_owned(),
            source: LeaseSource::Reused,
        };
        // A running box (a lingering one) is handed back as it is; a stopped one
        // is started again, under the cap.
        if !state.running_ids().iter().any(|id| id == container_id) {
            state.check_capacity()?;
            state.calls.leased.push(lease.clone());
        }
        Ok(lease)
    }

    fn release(&self, lease: Lease) {
        self.state().calls.released.push(lease);
    }

    async fn freeze(&self, container_id: &str) -> Result<(), SandboxError> {
        self.state().frozen.insert(container_id.to_owned());
        Ok(())
    }

    async fn thaw(&self, container_id: &str) -> Result<(), SandboxError> {
        let mut state = self.state();
        state.calls.thawed.push(container_id.to_owned());
        state.frozen.remove(container_id);
        Ok(())
    }

    async fn usage(&self, _lease: &Lease) -> Result<ContainerUsage, SandboxError> {
        self.state().calls.usage_checks += 1;
        self.failure(Stage::Usage)?;
        let state = self.state();
        Ok(ContainerUsage {
            running: state.running,
            disk_bytes: state.disk_bytes,
        })
    }

    async fn spawn(&self, lease: &Lease, spec: ProcessSpec) -> Result<Process, SandboxError> {
        self.state()
            .calls
            .spawned
            .push((lease.container_id.clone(), spec.clone()));
        self.failure(Stage::Spawn)?;
        let (process, fake) = FakeProcess::start(Arc::clone(&self.failures), spec);
        let count = {
            let mut state = self.state();
            state.processes.push(fake);
            state.processes.len()
        };
        self.spawned.send_replace(count);
        Ok(process)
    }

    async fn changed_paths(
        &self,
        _lease: &Lease,
        _max: usize,
    ) -> Result<Vec<String>, SandboxError> {
        self.state().calls.listings += 1;
        self.stage(Stage::ChangedPaths).await?;
        Ok(Vec::new())
    }
}
