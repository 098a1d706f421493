//! How far an unauthenticated connection has come, shared between its connection
//! task (which reports what the client sends) and admission control (which picks the
//! connection to close when a new one needs its place and tells it to go).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::DropReason;
use super::penalty::Offence;

/// No complete identification line yet.
const WAITING: u8 = 0;
/// The identification line arrived.
const IDENTIFIED: u8 = 1;
/// A password or public key was tried.
const AUTH_ATTEMPTED: u8 = 2;
/// Logged in: no longer a startup, so nothing here matters any more.
const LOGGED_IN: u8 = 3;

/// Not evicted.
const NOT_EVICTED: u8 = 0;

/// One admitted connection's progress before authentication.
#[derive(Debug)]
pub struct Progress {
    pub(super) id: u64,
    pub(super) source: IpAddr,
    epoch: Instant,
    /// When the client last sent a byte, in ms since `epoch`.
    heard_ms: AtomicU64,
    stage: AtomicU8,
    grace_exceeded: AtomicBool,
    /// Never penalised (a load balancer's health check).
    exempt: AtomicBool,
    /// The limit that had this connection closed (a [`DropReason`] code), or 0.
    evicted: AtomicU8,
    wake: Notify,
}

impl Progress {
    pub(super) fn new(id: u64, source: IpAddr, epoch: Instant, now: Instant) -> Self {
        Progress {
            id,
            source,
            epoch,
            heard_ms: AtomicU64::new(now.saturating_duration_since(epoch).as_millis() as u64),
            stage: AtomicU8::new(WAITING),
            grace_exceeded: AtomicBool::new(false),
            exempt: AtomicBool::new(false),
            evicted: AtomicU8::new(NOT_EVICTED),
            wake: Notify::new(),
        }
    }

    /// The client sent something.
    pub fn heard(&self) {
        // Every read of the connection comes here; after login only this load does.
        if self.stage.load(Ordering::Relaxed) == LOGGED_IN {
            return;
        }
        let ms = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64;
        self.heard_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// The connection logged in; what it sends from now on is not tracked.
    pub(super) fn logged_in(&self) {
        self.stage.fetch_max(LOGGED_IN, Ordering::Relaxed);
    }

    /// The client's identification line is complete.
    pub fn identified(&self) {
        self.heard();
        self.stage.fetch_max(IDENTIFIED, Ordering::Relaxed);
    }

    /// The client tried a password or a public key: it is what the honeypot is for, so
    /// the connection is never penalised.
    pub fn auth_attempted(&self) {
        self.heard();
        self.stage.fetch_max(AUTH_ATTEMPTED, Ordering::Relaxed);
    }

    /// The login grace time ran out.
    pub fn grace_exceeded(&self) {
        self.grace_exceeded.store(true, Ordering::Relaxed);
    }

    /// How long the client has been silent.
    pub fn silent(&self) -> Duration {
        Instant::now().saturating_duration_since(self.heard_at())
    }

    /// However it ends, the connection adds no penalty to its source.
    pub fn exempt_from_penalties(&self) {
        self.exempt.store(true, Ordering::Relaxed);
    }

    /// When the client last sent a byte.
    pub(super) fn heard_at(&self) -> Instant {
        self.epoch + Duration::from_millis(self.heard_ms.load(Ordering::Relaxed))
    }

    /// Whether it may be closed to make room at `now`: it has not sent a complete
    /// identification line (a real client sends it at once), or it has been silent for
    /// `idle`.
    pub(super) fn stalled(&self, now: Instant, idle: Duration) -> bool {
        self.stage.load(Ordering::Relaxed) == WAITING
            || now.saturating_duration_since(self.heard_at()) >= idle
    }

    /// What a penalty would be for, if the connection ended now unauthenticated.
    pub(super) fn offence(&self) -> Option<Offence> {
        if self.stage.load(Ordering::Relaxed) >= AUTH_ATTEMPTED
            || self.exempt.load(Ordering::Relaxed)
        {
            None
        } else if self.evicted.load(Ordering::Acquire) != NOT_EVICTED {
            Some(Offence::Evicted)
        } else if self.grace_exceeded.load(Ordering::Relaxed) {
            Some(Offence::GraceExceeded)
        } else {
            Some(Offence::NoAuth)
        }
    }

    /// Marks it closed to make room (under admission's lock) and wakes its task.
    pub(super) fn evict(&self, reason: DropReason) {
        self.evicted.store(reason.code(), Ordering::Release);
        self.wake.notify_waiters();
    }

    /// The limit that had it closed, if it was.
    pub fn evicted_by(&self) -> Option<DropReason> {
        DropReason::from_code(self.evicted.load(Ordering::Acquire))
    }

    /// Resolves once the connection is to be closed to make room, with the limit
    /// that needed it.
    pub async fn evicted(&self) -> DropReason {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.evicted_by() {
                return reason;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reads_after_login_are_not_tracked() {
        let epoch = Instant::now();
        let progress = Progress::new(1, "192.0.2.1".parse().expect("ip"), epoch, epoch);
        tokio::time::advance(Duration::from_secs(2)).await;
        progress.heard();
        assert_eq!(progress.heard_at(), epoch + Duration::from_secs(2));
        progress.logged_in();
        tokio::time::advance(Duration::from_secs(5)).await;
        progress.heard();
        assert_eq!(progress.heard_at(), epoch + Duration::from_secs(2));
        assert!(progress.offence().is_none(), "a login is never penalised");
    }
}
