//! Admission control before authentication: which accepted TCP connections get an SSH
//! banner and which are closed at once, as sshd's MaxStartups and PerSourceMaxStartups
//! do, plus caps on all connections per source and in total.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::RngExt;

use crate::config::{MaxStartups, ServerConfig};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// `max_connections` reached.
    MaxConnections,
    /// `max_connections_per_source` reached for this address.
    PerSourceConnections,
    /// `per_source_max_startups` reached for this address.
    PerSourceStartups,
    /// `max_startups`' random early drop (or its full mark).
    MaxStartups,
}

impl DropReason {
    /// Name used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::MaxConnections => "max_connections",
            DropReason::PerSourceConnections => "max_connections_per_source",
            DropReason::PerSourceStartups => "per_source_max_startups",
            DropReason::MaxStartups => "max_startups",
        }
    }
}

/// The limits, from `server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// MaxStartups for unauthenticated connections.
    pub max_startups: MaxStartups,
    /// Unauthenticated connections per source.
    pub per_source_startups: u32,
    /// All connections per source.
    pub per_source_connections: u32,
    /// All connections.
    pub connections: u32,
}

impl Limits {
    /// From the `server` section.
    pub fn from_config(server: &ServerConfig) -> Self {
        Limits {
            max_startups: server.max_startups(),
            per_source_startups: server.per_source_max_startups,
            per_source_connections: server.max_connections_per_source,
            connections: server.max_connections,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    startups: u32,
    connections: u32,
}

#[derive(Debug, Default)]
struct State {
    total: Counts,
    per_source: HashMap<IpAddr, Counts>,
}

/// Counts connections and decides admissions. Shared by the accept loop.
#[derive(Debug)]
pub struct Admission {
    limits: Mutex<Limits>,
    state: Mutex<State>,
}

/// An admitted connection. Dropping it gives its places back.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    source: IpAddr,
    startup: AtomicBool,
}

impl Admission {
    /// New, with nothing admitted.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Admission {
            limits: Mutex::new(limits),
            state: Mutex::new(State::default()),
        })
    }

    /// Replaces the limits (configuration reload); connections already admitted keep
    /// their places and count against the new limits.
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits or refuses a new connection from `source`.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Ticket, DropReason> {
        let roll = rand::rng().random_range(0..100u32);
        self.admit_with_roll(source, roll)
    }

    /// [`Admission::admit`] with the random draw (0..100) given, for tests.
    pub fn admit_with_roll(
        self: &Arc<Self>,
        source: IpAddr,
        roll: u32,
    ) -> Result<Ticket, DropReason> {
        let limits = *self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = self.state();
        let here = state.per_source.get(&source).copied().unwrap_or_default();
        if state.total.connections >= limits.connections {
            return Err(DropReason::MaxConnections);
        }
        if here.connections >= limits.per_source_connections {
            return Err(DropReason::PerSourceConnections);
        }
        if here.startups >= limits.per_source_startups {
            return Err(DropReason::PerSourceStartups);
        }
        if startup_dropped(limits.max_startups, state.total.startups, roll) {
            return Err(DropReason::MaxStartups);
        }
        state.total.startups += 1;
        state.total.connections += 1;
        let entry = state.per_source.entry(source).or_default();
        entry.startups += 1;
        entry.connections += 1;
        Ok(Ticket {
            admission: Arc::clone(self),
            source,
            startup: AtomicBool::new(true),
        })
    }

    /// (unauthenticated, all) connections now held.
    pub fn counts(&self) -> (u32, u32) {
        let state = self.state();
        (state.total.startups, state.total.connections)
    }
}

/// sshd's drop_connection(): past `start` unauthenticated connections drop with a
/// probability rising linearly from `rate`% to 100% at `full`.
fn startup_dropped(limits: MaxStartups, startups: u32, roll: u32) -> bool {
    if startups < limits.start {
        return false;
    }
    if startups >= limits.full {
        return true;
    }
    let span = (limits.full - limits.start).max(1);
    let p = limits.rate + (100 - limits.rate) * (startups - limits.start) / span;
    roll < p
}

impl Ticket {
    /// The connection logged in: it no longer counts as a startup.
    pub fn authenticated(&self) {
        if self.startup.swap(false, Ordering::AcqRel) {
            let mut state = self.admission.state();
            state.total.startups = state.total.startups.saturating_sub(1);
            if let Some(entry) = state.per_source.get_mut(&self.source) {
                entry.startups = entry.startups.saturating_sub(1);
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let was_startup = self.startup.load(Ordering::Acquire);
        let mut state = self.admission.state();
        if was_startup {
            state.total.startups = state.total.startups.saturating_sub(1);
        }
        state.total.connections = state.total.connections.saturating_sub(1);
        let remove = match state.per_source.get_mut(&self.source) {
            Some(entry) => {
                if was_startup {
                    entry.startups = entry.startups.saturating_sub(1);
                }
                entry.connections = entry.connections.saturating_sub(1);
                entry.connections == 0
            }
            None => false,
        };
        if remove {
            state.per_source.remove(&self.source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_startups: MaxStartups {
                start: 10,
                rate: 30,
                full: 100,
            },
            per_source_startups: 8,
            per_source_connections: 32,
            connections: 1024,
        }
    }

    fn source(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000u32 + n))
    }

    #[test]
    fn sshd_drop_probability() {
        let l = limits().max_startups;
        assert!(!startup_dropped(l, 9, 0));
        // At start: 30 %.
        assert!(startup_dropped(l, 10, 29));
        assert!(!startup_dropped(l, 10, 30));
        // Halfway (55): 30 + 70 * 45 / 90 = 65 %.
        assert!(startup_dropped(l, 55, 64));
        assert!(!startup_dropped(l, 55, 65));
        assert!(startup_dropped(l, 100, 99));
    }

    #[test]
    fn one_source_cannot_hold_more_than_its_share() {
        let admission = Admission::new(limits());
        let held: Vec<_> = (0..8)
            .map(|_| admission.admit_with_roll(source(1), 99).expect("admitted"))
            .collect();
        assert_eq!(
            admission.admit_with_roll(source(1), 99).err(),
            Some(DropReason::PerSourceStartups)
        );
        // Others are unaffected: below MaxStartups' start.
        assert!(admission.admit_with_roll(source(2), 0).is_ok());
        // Logged-in connections leave the startup count but still count per source.
        for ticket in &held {
            ticket.authenticated();
        }
        let more: Vec<_> = (0..8)
            .map(|_| {
                admission
                    .admit_with_roll(source(1), 99)
                    .expect("room again")
            })
            .collect();
        assert_eq!(admission.counts(), (8, 16));
        drop(held);
        drop(more);
        assert_eq!(admission.counts(), (0, 0));
    }

    #[test]
    fn caps_on_connections() {
        let admission = Admission::new(Limits {
            per_source_connections: 3,
            connections: 5,
            ..limits()
        });
        let mut tickets = Vec::new();
        for _ in 0..3 {
            let t = admission.admit_with_roll(source(1), 99).expect("ok");
            t.authenticated();
            tickets.push(t);
        }
        assert_eq!(
            admission.admit_with_roll(source(1), 99).err(),
            Some(DropReason::PerSourceConnections)
        );
        tickets.push(admission.admit_with_roll(source(2), 99).expect("ok"));
        tickets.push(admission.admit_with_roll(source(3), 99).expect("ok"));
        assert_eq!(
            admission.admit_with_roll(source(4), 99).err(),
            Some(DropReason::MaxConnections)
        );
    }

    #[test]
    fn the_startup_flood_is_cut_at_full() {
        let admission = Admission::new(Limits {
            per_source_startups: 1000,
            per_source_connections: 1000,
            ..limits()
        });
        let mut held = Vec::new();
        let mut dropped = 0;
        for n in 0..2000 {
            match admission.admit(source(n % 7)) {
                Ok(ticket) => held.push(ticket),
                Err(reason) => {
                    assert_eq!(reason, DropReason::MaxStartups);
                    dropped += 1;
                }
            }
        }
        assert!(held.len() <= 100, "{}", held.len());
        assert!(held.len() >= 10);
        assert_eq!(held.len() + dropped, 2000);
    }
}
