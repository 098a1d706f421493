//! Per-source penalties, after OpenSSH 9.8's PerSourcePenalties: a source whose
//! connections keep ending without an authentication attempt (idle, cut by the login
//! grace time, closed to make room) collects penalty time; once it holds `min`, its
//! new connections are refused until the time runs out. The table is bounded: past
//! `max_sources` the entry closest to expiry makes room.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// The penalty settings, from `server.penalties`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Penalties {
    /// Added when a connection ends without any authentication attempt.
    pub noauth: Duration,
    /// Added when the login grace time ran out.
    pub grace_exceeded: Duration,
    /// Added when the connection was closed to make room for a new one.
    pub evicted: Duration,
    /// Penalty time a source must hold before it is refused.
    pub min: Duration,
    /// Cap on a source's penalty time.
    pub max: Duration,
    /// Sources tracked at most.
    pub max_sources: usize,
}

/// How an unauthenticated connection ended, for its penalty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offence {
    /// Closed without an authentication attempt.
    NoAuth,
    /// The login grace time ran out.
    GraceExceeded,
    /// Closed to make room for a new connection.
    Evicted,
}

impl Penalties {
    fn time_for(&self, offence: Offence) -> Duration {
        match offence {
            Offence::NoAuth => self.noauth,
            Offence::GraceExceeded => self.grace_exceeded,
            Offence::Evicted => self.evicted,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    expiry: Instant,
    /// Reached `min`: refused until `expiry`.
    active: bool,
}

/// The sources under penalty.
#[derive(Debug, Default)]
pub(crate) struct PenaltyTable {
    by_source: HashMap<IpAddr, Entry>,
    by_expiry: BTreeSet<(Instant, IpAddr)>,
}

impl PenaltyTable {
    /// Whether `source` is refused now.
    pub(crate) fn refuses(&mut self, source: IpAddr, now: Instant) -> bool {
        self.expire(now);
        self.by_source
            .get(&source)
            .is_some_and(|entry| entry.active && entry.expiry > now)
    }

    /// Adds the penalty for `offence` to `source`.
    pub(crate) fn penalise(
        &mut self,
        source: IpAddr,
        offence: Offence,
        settings: &Penalties,
        now: Instant,
    ) {
        self.expire(now);
        let time = settings.time_for(offence);
        if time.is_zero() || settings.max_sources == 0 {
            return;
        }
        let cap = now + settings.max;
        let entry = match self.by_source.get(&source).copied() {
            Some(old) => {
                self.by_expiry.remove(&(old.expiry, source));
                let expiry = (old.expiry.max(now) + time).min(cap);
                Entry {
                    expiry,
                    active: old.active || expiry - now >= settings.min,
                }
            }
            None => {
                while self.by_source.len() >= settings.max_sources {
                    let Some(first) = self.by_expiry.pop_first() else {
                        break;
                    };
                    self.by_source.remove(&first.1);
                }
                let expiry = (now + time).min(cap);
                Entry {
                    expiry,
                    active: expiry - now >= settings.min,
                }
            }
        };
        self.by_source.insert(source, entry);
        self.by_expiry.insert((entry.expiry, source));
    }

    /// Sources tracked now.
    pub(crate) fn len(&self) -> usize {
        self.by_source.len()
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(expiry, source)) = self.by_expiry.first() {
            if expiry > now {
                break;
            }
            self.by_expiry.pop_first();
            self.by_source.remove(&source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Penalties {
        Penalties {
            noauth: Duration::from_secs(1),
            grace_exceeded: Duration::from_secs(10),
            evicted: Duration::from_secs(10),
            min: Duration::from_secs(15),
            max: Duration::from_secs(600),
            max_sources: 4,
        }
    }

    fn source(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[tokio::test(start_paused = true)]
    async fn penalties_add_up_to_min_then_refuse_until_they_run_out() {
        let mut table = PenaltyTable::default();
        let s = settings();
        let now = Instant::now();
        table.penalise(source(1), Offence::Evicted, &s, now);
        assert!(!table.refuses(source(1), now), "10 s is below min");
        table.penalise(source(1), Offence::GraceExceeded, &s, now);
        assert!(table.refuses(source(1), now), "20 s reaches min");
        assert!(!table.refuses(source(2), now));
        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(table.refuses(source(1), Instant::now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!table.refuses(source(1), Instant::now()));
        assert_eq!(table.len(), 0, "expired entries are gone");
    }

    #[tokio::test(start_paused = true)]
    async fn penalty_time_decays_and_is_capped() {
        let mut table = PenaltyTable::default();
        let s = settings();
        // One idle connection a second never reaches min: each second takes one off.
        for _ in 0..100 {
            table.penalise(source(1), Offence::NoAuth, &s, Instant::now());
            assert!(!table.refuses(source(1), Instant::now()));
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        // A hundred evictions at once stop at max.
        for _ in 0..100 {
            table.penalise(source(1), Offence::Evicted, &s, Instant::now());
        }
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(table.refuses(source(1), Instant::now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!table.refuses(source(1), Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded_and_keeps_the_longest_penalties() {
        let mut table = PenaltyTable::default();
        let s = settings();
        let now = Instant::now();
        for _ in 0..2 {
            table.penalise(source(1), Offence::Evicted, &s, now);
        }
        for n in 2..200 {
            table.penalise(source(n), Offence::NoAuth, &s, now);
            assert!(table.len() <= 4);
        }
        assert!(table.refuses(source(1), now), "the 20 s penalty stayed");
    }
}
