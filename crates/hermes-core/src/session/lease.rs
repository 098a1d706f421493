//! A connection's container: got at login (the source's own machine when it comes
//! back, otherwise one from the pool), watched while in use (time limits, disk), and
//! given back at the end.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::files::Pass;
use super::login_ready::Settles;
use super::{Connection, LeaseState};
use crate::events::{EventBuilder, EventId};
use crate::machines::{Machine, Release};
use crate::record::EndReason;
use crate::sandbox::{Lease, LeaseSource, SandboxError};

/// How often a leased container is checked: still running, and its writable layer
/// against `disk_limit`.
const USAGE_CHECK_INTERVAL: Duration = Duration::from_secs(3);

/// What a channel waiting for the container gets from the state it settled in (None:
/// the connection went away while waiting).
pub(super) fn outcome(state: Option<LeaseState>) -> Result<Lease, EndReason> {
    match state {
        Some(LeaseState::Ready(lease)) => Ok(lease),
        Some(LeaseState::Failed(reason)) => Err(reason),
        Some(LeaseState::Released) => Err(EndReason::ClientClosed),
        Some(LeaseState::NotRequested | LeaseState::Pending) | None => {
            Err(EndReason::ContainerUnavailable)
        }
    }
}

impl Connection {
    /// Gets the container for a logged-in connection and publishes it to its channels;
    /// `settles` goes with the login to the box's sshd, and is dropped when that is
    /// made or failed (or when there is none to make).
    pub(super) async fn acquire_lease(self: Arc<Self>, settles: Settles) {
        let result = if self.services.machines.enabled() {
            self.lease_returning_machine().await
        } else {
            self.with_room(|| self.services.sandbox.lease(self.context.session))
                .await
        };
        match result {
            Ok(lease) => {
                if self.state().finished {
                    // The client left while the container was coming: give it back.
                    self.give_back(lease).await;
                    return;
                }
                self.services.events.emit(
                    EventBuilder::connection(EventId::ContainerAllocate, &self.context)
                        .field("container_id", lease.container_id.clone())
                        .field("source", lease.source.as_str())
                        .message(format!(
                            "Container {} allocated ({})",
                            lease.short_id(),
                            lease.source.as_str()
                        )),
                );
                if matches!(lease.source, LeaseSource::Reused | LeaseSource::Shared) {
                    self.services.events.emit(
                        EventBuilder::connection(EventId::ContainerReuse, &self.context)
                            .field("container_id", lease.container_id.clone())
                            .field("source", lease.source.as_str())
                            .message(format!(
                                "Container {} of this source reused ({})",
                                lease.short_id(),
                                lease.source.as_str()
                            )),
                    );
                }
                self.state().metadata.container_id = Some(lease.container_id.clone());
                self.write_metadata();
                if self.services.uses_box_sshd() {
                    self.prepare_box_login(&lease).await;
                }
                self.start_baseline(&lease).await;
                let hints = self.fetch_hints();
                self.services
                    .box_owners
                    .set(&lease.container_id, &self.context, &hints);
                self.lease.send_replace(LeaseState::Ready(lease.clone()));
                if self.services.uses_box_sshd() {
                    // Logged in to the box's sshd while the client opens its channel.
                    let conn = Arc::clone(&self);
                    tokio::spawn(async move {
                        let _ = conn.box_session(&lease).await;
                        drop(settles);
                    });
                }
                // finish() may have run between the check above and the send: it
                // releases what it finds, so look once more.
                if self.state().finished {
                    self.release_lease().await;
                }
            }
            Err(error) => {
                tracing::error!(target: "hermes::session", session_id = %self.context.session, %error, "no container for session");
                self.emit_session_error("container_allocation", &error.to_string());
                self.lease
                    .send_replace(LeaseState::Failed(EndReason::ContainerUnavailable));
            }
        }
    }

    /// The source's own machine: joined when another of its sessions runs, started
    /// again when it is kept stopped, or a fresh one that becomes its machine.
    async fn lease_returning_machine(&self) -> Result<Lease, SandboxError> {
        let source = self.context.src.ip().to_canonical();
        let username = self.state().metadata.username.clone().unwrap_or_default();
        let machines = &self.services.machines;
        let (key, machine) = machines.machine_for(source, &username);
        let _one_at_a_time = machine.lock().await;
        if let Some(lingering) = machine.lingering() {
            match self.take_lingering(&machine, lingering).await? {
                Some(lease) => {
                    self.state().machine = Some(Arc::clone(&machine));
                    return Ok(lease);
                }
                None => {
                    tracing::info!(target: "hermes::session", session_id = %self.context.session, machine = %key, "the source's lingering container is gone; giving it a new one");
                    machines.forget(&machine);
                }
            }
        }
        if let Some(lease) = machine.join_running() {
            self.state().machine = Some(Arc::clone(&machine));
            return Ok(Lease {
                source: LeaseSource::Shared,
                ..lease
            });
        }
        let mut lease = None;
        if let Some(container_id) = machine.kept_container() {
            match self
                .with_room(|| self.services.sandbox.resume(&container_id))
                .await
            {
                Ok(resumed) => lease = Some(resumed),
                Err(SandboxError::ContainerGone(_)) => {
                    tracing::info!(target: "hermes::session", session_id = %self.context.session, machine = %key, "the source's earlier container is gone; giving it a new one");
                    machines.forget(&machine);
                }
                Err(error) => return Err(error),
            }
        }
        let lease = match lease {
            Some(lease) => lease,
            None => {
                self.with_room(|| self.services.sandbox.lease(self.context.session))
                    .await?
            }
        };
        machines.assigned(&machine, source, &lease);
        self.state().machine = Some(Arc::clone(&machine));
        // Saved before the session can write anything there: a Hermes killed while
        // the session runs gives the source this machine back after its restart.
        let registry = Arc::clone(machines);
        let saved = tokio::task::spawn_blocking(move || registry.save_if_dirty()).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(target: "hermes::sandbox", session_id = %self.context.session, %error, "cannot save the returning-source machine map")
            }
            Err(error) => {
                tracing::error!(target: "hermes::sandbox", session_id = %self.context.session, %error, "saving the returning-source machine map failed")
            }
        }
        Ok(lease)
    }

    /// Runs `get` (a lease or a resume) again after stopping the box that lingered
    /// longest, for as long as `max_containers` is what refuses it and boxes linger.
    async fn with_room<F, Fut>(&self, mut get: F) -> Result<Lease, SandboxError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Lease, SandboxError>>,
    {
        loop {
            match get().await {
                Err(SandboxError::AtCapacity(reason))
                    if !self.shutting_down() && !self.services.lingering.is_empty() =>
                {
                    if !self.stop_longest_lingering().await {
                        return Err(SandboxError::AtCapacity(reason));
                    }
                }
                other => return other,
            }
        }
    }

    /// Gives a container back: through the returning-source map when it came from it
    /// (stopped, or left to linger, only when its last session ends), directly
    /// otherwise. No capture: for a container no session used.
    async fn give_back(self: &Arc<Self>, lease: Lease) {
        self.stop_unless_shared(lease, false, self.may_linger())
            .await;
    }

    fn shutting_down(&self) -> bool {
        *self.services.shutdown.borrow()
    }

    /// Whether a box whose last session ends now runs on (`reuse.linger`): never
    /// once Hermes is shutting down.
    fn may_linger(&self) -> bool {
        !self.services.machines.linger().is_zero() && !self.shutting_down()
    }

    /// Stops the container now that this session is done with it, unless another
    /// session of the same source still uses it. The source's machine is held while
    /// the decision and the stop's start are made, so a login of that source cannot
    /// slip in between and be handed a container about to stop: it either joins this
    /// one first (and the stop is not made) or waits for the stop and starts it again.
    /// `used`: the session had the box (see [`Connection::linger`]); `linger`: the
    /// box runs on if this was its last session (see [`Connection::may_linger`]).
    async fn stop_unless_shared(self: &Arc<Self>, lease: Lease, used: bool, linger: bool) {
        let machine: Option<Arc<Machine>> = self.state().machine.take();
        match machine {
            Some(machine) => {
                let _one_at_a_time = machine.lock().await;
                match self.services.machines.release(&machine, linger) {
                    Release::Stop(lease) => self.stop(lease),
                    Release::Linger { lease, generation } => {
                        self.linger(Arc::clone(&machine), lease, generation, used)
                            .await;
                    }
                    Release::StillInUse => {}
                }
            }
            None => self.stop(lease),
        }
    }

    pub(super) fn stop(&self, lease: Lease) {
        self.services.events.emit(
            EventBuilder::connection(EventId::ContainerRelease, &self.context)
                .field("container_id", lease.container_id.clone())
                .message(format!("Container {} released", lease.short_id())),
        );
        self.services.sandbox.release(lease);
    }

    /// Releases the connection's container, if it has one, after the session's last
    /// capture pass (the final one, reaching into `/dev/shm`, when no other session of
    /// the source uses it; an ordinary one otherwise).
    pub(super) async fn release_lease(self: &Arc<Self>) {
        let previous = self.lease.send_replace(LeaseState::Released);
        // The box's sshd ends its session first (logout records, auth.log), whatever
        // comes of the lease.
        self.close_box_session().await;
        let LeaseState::Ready(lease) = previous else {
            return;
        };
        self.services
            .box_owners
            .clear(&lease.container_id, self.context.session);
        // Captured while the container is still this session's: a returning source
        // that logs in meanwhile joins it rather than waiting for a stop and a start.
        let last = self
            .state()
            .machine
            .as_ref()
            .is_none_or(|machine| machine.sessions() <= 1);
        // Decided once: the pass below and the release must agree.
        let linger = self.state().machine.is_some() && self.may_linger();
        if last {
            // A box that lingers gets its last pass (with a process of its own for
            // `/dev/shm`) when it stops; the attacker's processes may still watch it.
            let pass = if linger { Pass::Ended } else { Pass::Last };
            self.final_capture(&lease, pass).await;
        } else {
            self.capture_pass(&lease, Pass::Running).await;
        }
        self.stop_unless_shared(lease, true, linger).await;
    }

    /// Ends the session at `server.session_timeout`, `max_session_duration`, shutdown,
    /// when the container's writable layer passes `disk_limit`, or when the container
    /// dies under it.
    pub(super) async fn watch_limits(self: Arc<Self>) {
        let config = &self.services.config;
        let limit = config
            .server
            .session_timeout
            .min(config.container_pool.max_session_duration);
        let disk_limit = config.container_pool.security.disk_limit.bytes();
        let deadline = tokio::time::sleep(limit.get());
        tokio::pin!(deadline);
        let idle_limit = config.server.idle_timeout.get();
        let idle_check = tokio::time::sleep_until(self.last_input() + idle_limit);
        tokio::pin!(idle_check);
        let mut usage_check = tokio::time::interval(USAGE_CHECK_INTERVAL);
        usage_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = self.services.shutdown.clone();
        let mut terminated = self.terminated.subscribe();
        let reason = loop {
            tokio::select! {
                _ = &mut deadline => break EndReason::Timeout,
                _ = &mut idle_check, if !idle_limit.is_zero() => {
                    let idle_until = self.last_input() + idle_limit;
                    if idle_until <= Instant::now() {
                        break EndReason::IdleTimeout;
                    }
                    idle_check.as_mut().reset(idle_until);
                }
                _ = async {
                    if shutdown.wait_for(|down| *down).await.is_err() {
                        // The sender is gone only when the process is ending anyway.
                        std::future::pending::<()>().await;
                    }
                } => break EndReason::Shutdown,
                // Ended some other way: nothing to enforce.
                _ = async { terminated.wait_for(|t| t.is_some()).await.is_ok() } => return,
                // The check walks the box's writable layer: held for a pause in typing
                // (at most `MAX_POSTPONE`), as capture passes are.
                _ = async {
                    usage_check.tick().await;
                    self.until_typing_pauses().await;
                } => {
                    if let Some(reason) = self.check_usage(disk_limit).await {
                        break reason;
                    }
                }
            }
        };
        match reason {
            EndReason::DiskLimit => self.emit_session_error(
                "disk_limit",
                &format!(
                    "the container's writable layer passed container_pool.security.disk_limit ({})",
                    config.container_pool.security.disk_limit
                ),
            ),
            EndReason::StreamError => self.emit_session_error("stream", "the container stopped"),
            _ => {}
        }
        self.terminate(reason).await;
    }

    /// The reason to end the session, if the container died or filled its disk.
    async fn check_usage(&self, disk_limit: u64) -> Option<EndReason> {
        let lease = match &*self.lease.borrow() {
            LeaseState::Ready(lease) => lease.clone(),
            _ => return None,
        };
        match self.services.sandbox.usage(&lease).await {
            Ok(usage) if !usage.running => Some(EndReason::StreamError),
            Ok(usage) if usage.disk_bytes > disk_limit => Some(EndReason::DiskLimit),
            Ok(_) => None,
            Err(error) => {
                // The engine may be restarting; the stream tells when it is gone.
                tracing::debug!(target: "hermes::session", session_id = %self.context.session, %error, "cannot check the container");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_after_the_release_ends_as_the_client_closed() {
        assert_eq!(
            outcome(Some(LeaseState::Released)),
            Err(EndReason::ClientClosed)
        );
        assert_eq!(
            outcome(Some(LeaseState::Failed(EndReason::Capacity))),
            Err(EndReason::Capacity)
        );
        assert_eq!(outcome(None), Err(EndReason::ContainerUnavailable));
        let lease = Lease {
            container_id: "0123456789abcdef".into(),
            source: LeaseSource::Pool,
        };
        assert_eq!(outcome(Some(LeaseState::Ready(lease.clone()))), Ok(lease));
    }
}
