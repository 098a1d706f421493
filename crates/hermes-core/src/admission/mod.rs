//! Admission control before authentication: which accepted TCP connections get an SSH
//! banner and which are closed at once, as sshd's MaxStartups and PerSourceMaxStartups
//! do, plus caps on all connections per source and in total.
//!
//! Two things sshd lacks (or only got in 9.8) keep a flood of idle connections from
//! locking everyone out: when a limit would refuse a newcomer, the unauthenticated
//! connection that is stalled (no identification line yet, or silent for a while) and
//! silent longest is closed instead ([`progress`]); and sources whose connections keep
//! ending without an authentication attempt are refused for a while ([`penalty`]).

mod penalty;
mod progress;
pub mod refusals;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::RngExt;
use tokio::time::Instant;

use crate::config::{MaxStartups, ServerConfig};

use penalty::PenaltyTable;
pub use penalty::{Offence, Penalties};
pub use progress::Progress;

/// Why a connection was refused (or, for the global limits, closed to make room).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// `max_connections` reached.
    MaxConnections,
    /// `max_connections_per_source` reached for this address.
    PerSourceConnections,
    /// `per_source_max_startups` reached for this address.
    PerSourceStartups,
    /// `max_startups`' random early drop (or its full mark).
    MaxStartups,
    /// The source is serving a penalty (`server.penalties`).
    Penalty,
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 5] = [
        DropReason::MaxStartups,
        DropReason::PerSourceStartups,
        DropReason::MaxConnections,
        DropReason::PerSourceConnections,
        DropReason::Penalty,
    ];

    /// Name used in events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::MaxConnections => "max_connections",
            DropReason::PerSourceConnections => "max_connections_per_source",
            DropReason::PerSourceStartups => "per_source_max_startups",
            DropReason::MaxStartups => "max_startups",
            DropReason::Penalty => "per_source_penalty",
        }
    }

    fn code(self) -> u8 {
        match self {
            DropReason::MaxConnections => 1,
            DropReason::PerSourceConnections => 2,
            DropReason::PerSourceStartups => 3,
            DropReason::MaxStartups => 4,
            DropReason::Penalty => 5,
        }
    }

    fn from_code(code: u8) -> Option<DropReason> {
        DropReason::ALL.into_iter().find(|r| r.code() == code)
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
    /// Close a stalled unauthenticated connection instead of refusing a newcomer;
    /// the silence after which one that sent its identification line counts as
    /// stalled. None: refuse, as sshd does.
    pub evict_after: Option<Duration>,
    /// Per-source penalties; None: off.
    pub penalties: Option<Penalties>,
}

impl Limits {
    /// From the `server` section.
    pub fn from_config(server: &ServerConfig) -> Self {
        let p = &server.penalties;
        Limits {
            max_startups: server.max_startups,
            per_source_startups: server.per_source_max_startups,
            per_source_connections: server.max_connections_per_source,
            connections: server.max_connections,
            evict_after: server
                .evict_stalled_startups
                .then(|| server.startup_idle.get()),
            penalties: p.enabled.then(|| Penalties {
                noauth: p.noauth.get(),
                grace_exceeded: p.grace_exceeded.get(),
                evicted: p.evicted.get(),
                min: p.min.get(),
                max: p.max.get(),
                max_sources: p.max_sources as usize,
            }),
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
    /// Unauthenticated connections still holding their places, by id.
    startups: HashMap<u64, Arc<Progress>>,
    next_id: u64,
    penalties: PenaltyTable,
}

impl State {
    /// Takes a place for a connection from `source`.
    fn take(&mut self, source: IpAddr) {
        self.total.startups += 1;
        self.total.connections += 1;
        let entry = self.per_source.entry(source).or_default();
        entry.startups += 1;
        entry.connections += 1;
    }

    /// Gives back a place: its startup place if `startup`, its connection place if
    /// `connection`.
    fn give_back(&mut self, source: IpAddr, startup: bool, connection: bool) {
        let (s, c) = (u32::from(startup), u32::from(connection));
        self.total.startups = self.total.startups.saturating_sub(s);
        self.total.connections = self.total.connections.saturating_sub(c);
        if let Some(entry) = self.per_source.get_mut(&source) {
            entry.startups = entry.startups.saturating_sub(s);
            entry.connections = entry.connections.saturating_sub(c);
            if entry.connections == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    /// The stalled unauthenticated connection silent longest.
    fn stalled(&self, now: Instant, idle: Duration) -> Option<Arc<Progress>> {
        self.startups
            .values()
            .filter(|p| p.stalled(now, idle))
            .min_by_key(|p| (p.heard_at(), p.id))
            .cloned()
    }

    /// Closes `victim` to make room: its places are free at once.
    fn evict(&mut self, victim: &Progress, reason: DropReason) {
        if self.startups.remove(&victim.id).is_some() {
            self.give_back(victim.source, true, true);
            victim.evict(reason);
        }
    }
}

/// Counts connections and decides admissions. Shared by the accept loop.
#[derive(Debug)]
pub struct Admission {
    limits: Mutex<Limits>,
    state: Mutex<State>,
    epoch: Instant,
}

/// An admitted connection. Dropping it gives its places back (and penalises its
/// source if it never tried to log in).
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    progress: Arc<Progress>,
    authenticated: AtomicBool,
}

impl Admission {
    /// New, with nothing admitted.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Admission {
            limits: Mutex::new(limits),
            state: Mutex::new(State::default()),
            epoch: Instant::now(),
        })
    }

    /// Replaces the limits (configuration reload); connections already admitted keep
    /// their places and count against the new limits.
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    fn limits(&self) -> Limits {
        *self.limits.lock().unwrap_or_else(|p| p.into_inner())
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
        let limits = self.limits();
        let now = Instant::now();
        let mut state = self.state();
        if limits.penalties.is_some() && state.penalties.refuses(source, now) {
            return Err(DropReason::Penalty);
        }
        let here = state.per_source.get(&source).copied().unwrap_or_default();
        let full = state.total.connections >= limits.connections;
        if full && limits.evict_after.is_none() {
            return Err(DropReason::MaxConnections);
        }
        if here.connections >= limits.per_source_connections {
            return Err(DropReason::PerSourceConnections);
        }
        if here.startups >= limits.per_source_startups {
            return Err(DropReason::PerSourceStartups);
        }
        let needs_room = if full {
            Some(DropReason::MaxConnections)
        } else if startup_dropped(limits.max_startups, state.total.startups, roll) {
            Some(DropReason::MaxStartups)
        } else {
            None
        };
        if let Some(reason) = needs_room {
            let victim = limits.evict_after.and_then(|idle| state.stalled(now, idle));
            match victim {
                Some(victim) => state.evict(&victim, reason),
                None => return Err(reason),
            }
        }
        state.take(source);
        state.next_id += 1;
        let progress = Arc::new(Progress::new(state.next_id, source, self.epoch, now));
        state.startups.insert(progress.id, Arc::clone(&progress));
        Ok(Ticket {
            admission: Arc::clone(self),
            progress,
            authenticated: AtomicBool::new(false),
        })
    }

    /// (unauthenticated, all) connections now held.
    pub fn counts(&self) -> (u32, u32) {
        let state = self.state();
        (state.total.startups, state.total.connections)
    }

    /// Sources under penalty now (refused or not yet).
    pub fn penalised_sources(&self) -> usize {
        self.state().penalties.len()
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
    /// The connection's progress before authentication, for its task to report to and
    /// to learn that it is evicted.
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    /// The connection logged in: it no longer counts as a startup (unless it was
    /// closed to make room a moment before).
    pub fn authenticated(&self) {
        self.progress.logged_in();
        let mut state = self.admission.state();
        if state.startups.remove(&self.progress.id).is_some() {
            self.authenticated.store(true, Ordering::Release);
            state.give_back(self.progress.source, true, false);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let limits = self.admission.limits();
        let now = Instant::now();
        let mut state = self.admission.state();
        let authenticated = self.authenticated.load(Ordering::Acquire);
        let holding_startup = state.startups.remove(&self.progress.id).is_some();
        if holding_startup || authenticated {
            state.give_back(self.progress.source, holding_startup, true);
        }
        if authenticated {
            return;
        }
        if let (Some(penalties), Some(offence)) = (limits.penalties, self.progress.offence()) {
            state
                .penalties
                .penalise(self.progress.source, offence, &penalties, now);
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
            evict_after: None,
            penalties: None,
        }
    }

    fn evicting() -> Limits {
        Limits {
            evict_after: Some(Duration::from_secs(10)),
            penalties: Some(Penalties {
                noauth: Duration::from_secs(1),
                grace_exceeded: Duration::from_secs(10),
                evicted: Duration::from_secs(10),
                min: Duration::from_secs(15),
                max: Duration::from_secs(600),
                max_sources: 1000,
            }),
            ..limits()
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

    #[tokio::test(start_paused = true)]
    async fn a_full_house_of_stalled_connections_makes_room_silent_longest_first() {
        let admission = Admission::new(evicting());
        let mut held = Vec::new();
        // 100 sources, one idle connection each, a millisecond apart: full.
        for n in 0..100 {
            match admission.admit_with_roll(source(n), 99) {
                Ok(ticket) => held.push(ticket),
                Err(reason) => panic!("connection {n} refused: {reason:?}"),
            }
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(admission.counts(), (100, 100));
        // Connections 0..10 send their identification line and keep talking; 10..20
        // send a byte now and then (slow-loris); the rest stay silent.
        for ticket in &held[..10] {
            ticket.progress().identified();
        }
        for ticket in &held[10..20] {
            ticket.progress().heard();
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        // Newcomers still get in, each closing the silent connection silent longest:
        // the idle ones in the order they came, then the slow-loris ones.
        for (k, n) in (100..190).enumerate() {
            let ticket = admission.admit_with_roll(source(n), 99).expect("room made");
            ticket.progress().identified();
            held.push(ticket);
            let victim = if k < 80 { 20 + k } else { 10 + k - 80 };
            assert_eq!(
                held[victim].progress().evicted_by(),
                Some(DropReason::MaxStartups),
                "newcomer {k} should have closed connection {victim}"
            );
            assert_eq!(admission.counts(), (100, 100));
        }
        for ticket in &held[..10] {
            assert_eq!(
                ticket.progress().evicted_by(),
                None,
                "a talking client was closed"
            );
        }
        // Everyone left has sent an identification line and spoke within 10 s: the
        // next newcomer is refused as sshd refuses it.
        assert_eq!(
            admission.admit_with_roll(source(500), 99).err(),
            Some(DropReason::MaxStartups)
        );
        // Ten seconds of silence make them stalled too.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(admission.admit_with_roll(source(501), 99).is_ok());
        assert_eq!(
            held[0].progress().evicted_by(),
            Some(DropReason::MaxStartups)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_wakes_the_connection_and_frees_its_places_once() {
        let admission = Admission::new(Limits {
            connections: 3,
            ..evicting()
        });
        let first = admission.admit_with_roll(source(1), 99).expect("ok");
        let second = admission.admit_with_roll(source(2), 99).expect("ok");
        second.authenticated();
        let third = admission.admit_with_roll(source(3), 99).expect("ok");
        third.progress().identified();
        let progress = first.progress();
        let woken = tokio::spawn(async move { progress.evicted().await });
        tokio::task::yield_now().await;
        // max_connections is full: the one stalled connection makes room; the
        // logged-in one and the talking one are never chosen.
        let fourth = admission.admit_with_roll(source(4), 99).expect("room made");
        fourth.progress().identified();
        assert_eq!(woken.await.ok(), Some(DropReason::MaxConnections));
        assert_eq!(admission.counts(), (2, 3));
        assert_eq!(
            admission.admit_with_roll(source(5), 99).err(),
            Some(DropReason::MaxConnections),
            "the rest are talking or logged in"
        );
        drop(first);
        assert_eq!(
            admission.counts(),
            (2, 3),
            "the evicted ticket gave its places back already"
        );
        drop((second, third, fourth));
        assert_eq!(admission.counts(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn sources_that_never_try_to_log_in_are_refused_for_a_while() {
        let admission = Admission::new(evicting());
        let noisy = source(7);
        // Connections that are closed to make room: 10 s each; two reach min (15 s).
        for _ in 0..2 {
            let ticket = admission.admit_with_roll(noisy, 99).expect("ok");
            admission
                .state()
                .evict(&ticket.progress(), DropReason::MaxStartups);
        }
        assert_eq!(
            admission.admit_with_roll(noisy, 0).err(),
            Some(DropReason::Penalty)
        );
        // Others are not affected.
        drop(admission.admit_with_roll(source(8), 0).expect("ok"));
        tokio::time::advance(Duration::from_secs(20)).await;
        // Connections that try a password are never penalised, however many.
        for _ in 0..50 {
            let ticket = admission.admit_with_roll(noisy, 0).expect("penalty over");
            ticket.progress().auth_attempted();
        }
        let ticket = admission.admit_with_roll(noisy, 0).expect("still welcome");
        // One cut by the login grace time: 10 s, below min.
        ticket.progress().grace_exceeded();
        drop(ticket);
        assert!(admission.admit_with_roll(noisy, 0).is_ok());
        // A balancer's health checks add nothing.
        for _ in 0..50 {
            let ticket = admission.admit_with_roll(noisy, 0).expect("ok");
            ticket.progress().exempt_from_penalties();
        }
        // A banner grab adds 1 s: four more quick ones in a row reach min (15 s).
        for _ in 0..4 {
            drop(admission.admit_with_roll(noisy, 0).expect("ok"));
        }
        assert_eq!(
            admission.admit_with_roll(noisy, 0).err(),
            Some(DropReason::Penalty)
        );
    }

    #[test]
    fn sshd_mode_never_closes_anyone() {
        let admission = Admission::new(Limits {
            connections: 2,
            ..limits()
        });
        let held: Vec<_> = (0..2)
            .map(|n| admission.admit_with_roll(source(n), 99).expect("ok"))
            .collect();
        assert_eq!(
            admission.admit_with_roll(source(9), 99).err(),
            Some(DropReason::MaxConnections)
        );
        assert!(held.iter().all(|t| t.progress().evicted_by().is_none()));
    }
}
