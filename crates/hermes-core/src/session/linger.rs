//! Boxes that outlive their last session for `container_pool.reuse.linger`, as a real
//! server runs on after a logout: the source's next login finds what it left running,
//! and PID 1 and `uptime` as old as before. A lingering box is held by its last
//! session's connection, which captures its files once more before it stops. It
//! counts toward `max_containers`; a login that finds that cap reached stops the box
//! lingering longest first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::Connection;
use super::files::Pass;
use crate::events::{EventBuilder, EventId};
use crate::machines::Machine;
use crate::sandbox::{Lease, SandboxError};

/// One lingering box.
struct LingeringBox {
    /// The session that used it last.
    conn: Arc<Connection>,
    machine: Arc<Machine>,
    generation: u64,
    /// When its last session ended (files changed since then are the next session's).
    since: SystemTime,
    /// Ends its timer when the box is taken again or stopped another way.
    timer: CancellationToken,
}

/// The lingering boxes, by container id.
#[derive(Default)]
pub struct Lingering {
    boxes: Mutex<HashMap<String, LingeringBox>>,
}

impl Lingering {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, LingeringBox>> {
        self.boxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether no box lingers.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Takes `container_id` out (its source is back, or it stops): its timer ends.
    /// Returns when its last session ended.
    fn take(&self, container_id: &str) -> Option<SystemTime> {
        let taken = self.lock().remove(container_id)?;
        taken.timer.cancel();
        Some(taken.since)
    }

    /// The box lingering longest, to stop at the container cap.
    fn longest(&self) -> Option<(String, Arc<Connection>, Arc<Machine>, u64)> {
        self.lock()
            .iter()
            .min_by_key(|(_, lingering)| lingering.since)
            .map(|(id, lingering)| {
                (
                    id.clone(),
                    Arc::clone(&lingering.conn),
                    Arc::clone(&lingering.machine),
                    lingering.generation,
                )
            })
    }

    /// Forgets `container_id`'s entry if it is still linger `generation`'s.
    fn forget_stale(&self, container_id: &str, generation: u64) {
        let mut boxes = self.lock();
        if boxes
            .get(container_id)
            .is_some_and(|lingering| lingering.generation == generation)
            && let Some(lingering) = boxes.remove(container_id)
        {
            lingering.timer.cancel();
        }
    }
}

impl Connection {
    /// This session was the last on `lease`'s box: it runs on (frozen if so
    /// configured) until the linger time passes, Hermes shuts down, or the source
    /// logs in again.
    pub(super) async fn linger(
        self: &Arc<Self>,
        machine: Arc<Machine>,
        lease: Lease,
        generation: u64,
    ) {
        let machines = &self.services.machines;
        let linger = machines.linger();
        let frozen = machines.freeze_lingering();
        if frozen && let Err(error) = self.services.sandbox.freeze(&lease.container_id).await {
            tracing::warn!(target: "hermes::sandbox", container_id = %lease.short_id(), %error, "cannot freeze the lingering box; it runs on");
        }
        self.services.events.emit(
            EventBuilder::connection(EventId::ContainerLinger, &self.context)
                .field("container_id", lease.container_id.clone())
                .field("seconds", linger.as_secs())
                .field("frozen", frozen)
                .message(format!(
                    "Container {} lingers for {} s after its last session",
                    lease.short_id(),
                    linger.as_secs()
                )),
        );
        let timer = CancellationToken::new();
        let previous = self.services.lingering.lock().insert(
            lease.container_id.clone(),
            LingeringBox {
                conn: Arc::clone(self),
                machine: Arc::clone(&machine),
                generation,
                since: SystemTime::now(),
                timer: timer.clone(),
            },
        );
        if let Some(previous) = previous {
            previous.timer.cancel();
        }
        let conn = Arc::clone(self);
        let mut shutdown = self.services.shutdown.clone();
        // Shutdown cuts the linger short and waits for the box's last capture and
        // its stop.
        self.services.linger_timers.spawn(async move {
            tokio::select! {
                _ = timer.cancelled() => return,
                _ = tokio::time::sleep(linger) => {}
                _ = async {
                    if shutdown.wait_for(|down| *down).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => {}
            }
            conn.end_linger(&machine, &lease.container_id, generation)
                .await;
        });
    }

    /// Stops a lingering box, after one last capture pass, unless its source took
    /// it again meanwhile. Returns whether it stopped it.
    async fn end_linger(&self, machine: &Machine, container_id: &str, generation: u64) -> bool {
        let _one_at_a_time = machine.lock().await;
        let Some(lease) = machine.end_linger(generation) else {
            return false;
        };
        self.services.lingering.take(container_id);
        if self.services.machines.freeze_lingering()
            && let Err(error) = self.services.sandbox.thaw(&lease.container_id).await
        {
            tracing::warn!(target: "hermes::sandbox", container_id = %lease.short_id(), %error, "cannot thaw the lingering box before its stop");
        }
        self.final_capture(&lease, Pass::Last).await;
        self.stop(lease);
        true
    }

    /// The source's box, still running after its last session: taken again (thawed,
    /// checked, started again if it died meanwhile). None when it no longer exists.
    pub(super) async fn take_lingering(
        &self,
        machine: &Machine,
        lease: Lease,
    ) -> Result<Option<Lease>, SandboxError> {
        let since = self.services.lingering.take(&lease.container_id);
        let sandbox = &self.services.sandbox;
        if self.services.machines.freeze_lingering()
            && let Err(error) = sandbox.thaw(&lease.container_id).await
        {
            tracing::warn!(target: "hermes::sandbox", session_id = %self.context.session, container_id = %lease.short_id(), %error, "cannot thaw the lingering box");
        }
        match sandbox.resume(&lease.container_id).await {
            Ok(resumed) => {
                machine.rejoin();
                // What the box wrote while it lingered is this session's to capture.
                self.state().files_since = since;
                Ok(Some(resumed))
            }
            Err(SandboxError::ContainerGone(_)) => {
                // Given back all the same: the engine's count of running boxes
                // still holds it.
                if let Some(lease) = machine.take_lingering() {
                    self.stop(lease);
                }
                Ok(None)
            }
            Err(error) => {
                if let Some(lease) = machine.take_lingering() {
                    self.stop(lease);
                }
                Err(error)
            }
        }
    }

    /// Stops the box lingering longest, so that a login at `max_containers` gets
    /// one. Returns whether one was stopped.
    pub(super) async fn stop_longest_lingering(&self) -> bool {
        // Each round takes one entry out of the set: stopped, or (rejoined meanwhile)
        // forgotten.
        while let Some((container_id, conn, machine, generation)) =
            self.services.lingering.longest()
        {
            let short = container_id.get(..12).unwrap_or(&container_id);
            tracing::info!(target: "hermes::sandbox", session_id = %self.context.session, container_id = %short, "max_containers reached: stopping the box that lingered longest");
            if conn.end_linger(&machine, &container_id, generation).await {
                return true;
            }
            self.services
                .lingering
                .forget_stale(&container_id, generation);
        }
        false
    }
}
