//! Boxes that outlive their last session for `container_pool.reuse.linger`, as a real
//! server runs on after a logout: the source's next login finds what it left running,
//! and PID 1 and `uptime` as old as before. A lingering box is held by the last
//! session that used it, which captures its files once more before it stops. It
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

/// The session a lingering box is held by: the last that used it, and when it ended
/// (files changed since then are the next session's).
#[derive(Clone)]
pub(super) struct LastUse {
    conn: Arc<Connection>,
    since: SystemTime,
}

/// One lingering box.
struct LingeringBox {
    last: LastUse,
    machine: Arc<Machine>,
    generation: u64,
    /// The freeze worked: it must be thawed before anything runs there.
    frozen: bool,
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
    fn take(&self, container_id: &str) -> Option<LingeringBox> {
        let taken = self.lock().remove(container_id)?;
        taken.timer.cancel();
        Some(taken)
    }

    fn frozen(&self, container_id: &str) -> bool {
        self.lock()
            .get(container_id)
            .is_some_and(|lingering| lingering.frozen)
    }

    fn set_frozen(&self, container_id: &str, frozen: bool) {
        if let Some(lingering) = self.lock().get_mut(container_id) {
            lingering.frozen = frozen;
        }
    }

    /// The box lingering longest, to stop at the container cap.
    fn longest(&self) -> Option<(String, Arc<Connection>, Arc<Machine>, u64)> {
        self.lock()
            .iter()
            .min_by_key(|(_, lingering)| lingering.last.since)
            .map(|(id, lingering)| {
                (
                    id.clone(),
                    Arc::clone(&lingering.last.conn),
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
    /// logs in again. `used`: the session had the box (a lease it never used leaves
    /// the box to the session before it, which captured it last).
    pub(super) async fn linger(
        self: &Arc<Self>,
        machine: Arc<Machine>,
        lease: Lease,
        generation: u64,
        used: bool,
    ) {
        let machines = &self.services.machines;
        let linger = machines.linger();
        let frozen = machines.freeze_lingering()
            && match self.services.sandbox.freeze(&lease.container_id).await {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(target: "hermes::sandbox", container_id = %lease.short_id(), %error, "cannot freeze the lingering box; it runs on");
                    false
                }
            };
        let earlier = self.state().took_lingering.take();
        let last = match earlier {
            Some(earlier) if !used => earlier,
            _ => LastUse {
                conn: Arc::clone(self),
                since: SystemTime::now(),
            },
        };
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
        let conn = Arc::clone(&last.conn);
        let previous = self.services.lingering.lock().insert(
            lease.container_id.clone(),
            LingeringBox {
                last,
                machine: Arc::clone(&machine),
                generation,
                frozen,
                timer: timer.clone(),
            },
        );
        if let Some(previous) = previous {
            previous.timer.cancel();
        }
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
        let taken = self.services.lingering.take(container_id);
        if taken.is_some_and(|lingering| lingering.frozen)
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
    /// On any other error it lingers on, and its timer still ends it.
    pub(super) async fn take_lingering(
        &self,
        machine: &Machine,
        lease: Lease,
    ) -> Result<Option<Lease>, SandboxError> {
        let id = &lease.container_id;
        let sandbox = &self.services.sandbox;
        let lingering = &self.services.lingering;
        if lingering.frozen(id) {
            sandbox.thaw(id).await?;
            lingering.set_frozen(id, false);
        }
        match sandbox.resume(id).await {
            Ok(resumed) => {
                let taken = lingering.take(id);
                machine.rejoin();
                if let Some(taken) = &taken {
                    let seen = taken.last.conn.files().seen_snapshot();
                    self.files().inherit_seen(seen);
                }
                let mut state = self.state();
                // What the box wrote while it lingered is this session's to capture.
                state.files_since = taken.as_ref().map(|t| t.last.since);
                state.took_lingering = taken.map(|t| t.last);
                Ok(Some(resumed))
            }
            Err(SandboxError::ContainerGone(_)) => {
                let taken = lingering.take(id);
                // Given back all the same (the engine's count of running boxes still
                // holds it), in the name of the session that left it.
                if let Some(gone) = machine.take_lingering() {
                    match taken {
                        Some(taken) => taken.last.conn.stop(gone),
                        None => self.stop(gone),
                    }
                }
                Ok(None)
            }
            Err(error) => Err(error),
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
