//! How much may still be fetched: per session (fetches, bytes) and for the whole
//! sensor per hour. Bytes are granted as they arrive, so concurrent fetches of one
//! session, or of all sessions, can never overshoot a limit together.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A limit that stopped a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `egress.limits.fetches_per_session`.
    Fetches,
    /// `egress.limits.session_bytes`.
    SessionBytes,
    /// `egress.limits.hourly_bytes`.
    HourlyBytes,
}

impl Limit {
    /// The name in events and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Limit::Fetches => "fetches_per_session",
            Limit::SessionBytes => "session_bytes",
            Limit::HourlyBytes => "hourly_bytes",
        }
    }
}

const HOUR: Duration = Duration::from_secs(3600);
/// Sessions remembered before idle ones are forgotten.
const SESSIONS_KEPT: usize = 4096;
/// Failed fetches reported per session; past it a box looping on a refused address
/// fills no event log.
pub const FAILURES_REPORTED: u32 = 100;

#[derive(Debug)]
struct Usage {
    fetches: u32,
    bytes: u64,
    failures: u32,
    last: Instant,
}

impl Usage {
    fn new(now: Instant) -> Usage {
        Usage {
            fetches: 0,
            bytes: 0,
            failures: 0,
            last: now,
        }
    }
}

#[derive(Debug)]
struct Inner {
    sessions: HashMap<String, Usage>,
    hour_start: Instant,
    hour_bytes: u64,
}

/// The fetch budget of the sensor.
#[derive(Debug)]
pub struct Budget {
    fetches_per_session: u32,
    session_bytes: u64,
    hourly_bytes: u64,
    inner: Mutex<Inner>,
}

impl Budget {
    /// A budget with these limits, its hour starting now.
    pub fn new(fetches_per_session: u32, session_bytes: u64, hourly_bytes: u64) -> Self {
        Budget {
            fetches_per_session,
            session_bytes,
            hourly_bytes,
            inner: Mutex::new(Inner {
                sessions: HashMap::new(),
                hour_start: Instant::now(),
                hour_bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(inner.hour_start) >= HOUR {
            inner.hour_start = now;
            inner.hour_bytes = 0;
        }
        inner
    }

    /// Counts a fetch of `session`, or says which limit refuses it.
    pub fn admit(&self, session: &str) -> Result<(), Limit> {
        let mut inner = self.lock();
        if inner.hour_bytes >= self.hourly_bytes {
            return Err(Limit::HourlyBytes);
        }
        let now = Instant::now();
        if inner.sessions.len() >= SESSIONS_KEPT && !inner.sessions.contains_key(session) {
            inner
                .sessions
                .retain(|_, usage| now.duration_since(usage.last) < HOUR);
        }
        let usage = inner
            .sessions
            .entry(session.to_owned())
            .or_insert_with(|| Usage::new(now));
        usage.last = now;
        if usage.fetches >= self.fetches_per_session {
            return Err(Limit::Fetches);
        }
        if usage.bytes >= self.session_bytes {
            return Err(Limit::SessionBytes);
        }
        usage.fetches += 1;
        Ok(())
    }

    /// Grants up to `wanted` bytes to `session`: the bytes granted, and the limit
    /// that held back the rest.
    pub fn take(&self, session: &str, wanted: u64) -> (u64, Option<Limit>) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let hour_left = self.hourly_bytes.saturating_sub(inner.hour_bytes);
        let usage = inner
            .sessions
            .entry(session.to_owned())
            .or_insert_with(|| Usage::new(Instant::now()));
        let session_left = self.session_bytes.saturating_sub(usage.bytes);
        let granted = wanted.min(hour_left).min(session_left);
        usage.bytes += granted;
        inner.hour_bytes += granted;
        let limit = if granted == wanted {
            None
        } else if granted == session_left {
            Some(Limit::SessionBytes)
        } else {
            Some(Limit::HourlyBytes)
        };
        (granted, limit)
    }

    /// Whether a failed fetch of `session` gets an event (the first
    /// [`FAILURES_REPORTED`] do); counts it.
    pub fn report_failure(&self, session: &str) -> bool {
        let mut inner = self.lock();
        let usage = inner
            .sessions
            .entry(session.to_owned())
            .or_insert_with(|| Usage::new(Instant::now()));
        usage.failures = usage.failures.saturating_add(1);
        usage.failures <= FAILURES_REPORTED
    }

    /// Forgets a session that ended.
    pub fn forget(&self, session: &str) {
        self.lock().sessions.remove(session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetches_per_session_are_counted_per_session() {
        let budget = Budget::new(2, 1000, 1000);
        assert_eq!(budget.admit("a"), Ok(()));
        assert_eq!(budget.admit("a"), Ok(()));
        assert_eq!(budget.admit("a"), Err(Limit::Fetches));
        assert_eq!(budget.admit("b"), Ok(()));
        budget.forget("a");
        assert_eq!(budget.admit("a"), Ok(()));
    }

    #[test]
    fn failures_are_reported_up_to_the_cap_per_session() {
        let budget = Budget::new(1, 1, 1);
        for _ in 0..FAILURES_REPORTED {
            assert!(budget.report_failure("a"));
        }
        assert!(!budget.report_failure("a"));
        assert!(budget.report_failure("b"));
    }

    #[test]
    fn session_bytes_then_hourly_bytes_hold_back_the_rest() {
        let budget = Budget::new(100, 10, 25);
        assert_eq!(budget.take("a", 6), (6, None));
        assert_eq!(budget.take("a", 6), (4, Some(Limit::SessionBytes)));
        assert_eq!(budget.admit("a"), Err(Limit::SessionBytes));
        assert_eq!(budget.take("b", 10), (10, None));
        assert_eq!(budget.take("c", 10), (5, Some(Limit::HourlyBytes)));
        assert_eq!(budget.admit("d"), Err(Limit::HourlyBytes));
    }

    #[tokio::test(start_paused = true)]
    async fn the_hourly_budget_starts_again_after_an_hour() {
        let budget = Budget::new(100, 1000, 10);
        assert_eq!(budget.take("a", 10), (10, None));
        assert_eq!(budget.admit("b"), Err(Limit::HourlyBytes));
        tokio::time::advance(HOUR - Duration::from_secs(1)).await;
        assert_eq!(budget.take("b", 1), (0, Some(Limit::HourlyBytes)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(budget.admit("b"), Ok(()));
        assert_eq!(budget.take("b", 4), (4, None));
    }
}
