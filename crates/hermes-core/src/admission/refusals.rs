//! Refused connections summed per source and reason: a flood of refusals is one
//! record per source per interval, with its count, instead of one event per
//! connection. Nothing is lost: a full table is written out at once, and the owner
//! writes out the rest at shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::DropReason;

/// Sources (with their reasons) summed at once; one more writes them all out.
pub const MAX_OPEN: usize = 4096;

/// The refusals of one source for one reason over one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The source of the last refused connection (its port is the last one's).
    pub src: SocketAddr,
    /// Where it connected to.
    pub dst: SocketAddr,
    /// Why it was refused.
    pub reason: DropReason,
    /// Connections refused.
    pub count: u64,
    /// When the first was refused.
    pub first: SystemTime,
    /// When the last was refused.
    pub last: SystemTime,
}

#[derive(Debug)]
struct Open {
    summary: Summary,
    opened: Instant,
}

/// The refusals not yet written.
#[derive(Debug)]
pub struct RefusalLog {
    interval: Duration,
    open: HashMap<(IpAddr, DropReason), Open>,
}

impl RefusalLog {
    /// Sums refusals over `interval`.
    pub fn new(interval: Duration) -> Self {
        RefusalLog {
            interval,
            open: HashMap::new(),
        }
    }

    /// Counts one refused connection. Returns what must be written now: everything,
    /// when the table was full.
    pub fn record(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        reason: DropReason,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<Summary> {
        let key = (src.ip(), reason);
        if let Some(open) = self.open.get_mut(&key) {
            open.summary.count += 1;
            open.summary.last = wall;
            open.summary.src = src;
            return Vec::new();
        }
        let written = if self.open.len() >= MAX_OPEN {
            self.drain()
        } else {
            Vec::new()
        };
        self.open.insert(
            key,
            Open {
                summary: Summary {
                    src,
                    dst,
                    reason,
                    count: 1,
                    first: wall,
                    last: wall,
                },
                opened: now,
            },
        );
        written
    }

    /// The summaries whose interval has ended by `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Summary> {
        let interval = self.interval;
        let mut due = Vec::new();
        self.open.retain(|_, open| {
            let ended = now.saturating_duration_since(open.opened) >= interval;
            if ended {
                due.push(open.summary.clone());
            }
            !ended
        });
        due.sort_by_key(|s| s.first);
        due
    }

    /// Every summary, due or not (shutdown).
    pub fn drain(&mut self) -> Vec<Summary> {
        let mut all: Vec<Summary> = self.open.drain().map(|(_, open)| open.summary).collect();
        all.sort_by_key(|s| s.first);
        all
    }

    /// Refused connections counted and not yet written.
    pub fn pending(&self) -> u64 {
        self.open.values().map(|open| open.summary.count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u32, port: u16) -> SocketAddr {
        SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000u32 + n), port))
    }

    fn dst() -> SocketAddr {
        "10.9.9.9:22".parse().expect("addr")
    }

    #[tokio::test(start_paused = true)]
    async fn one_summary_per_source_and_reason_per_interval() {
        let mut log = RefusalLog::new(Duration::from_secs(60));
        for i in 0..1000u16 {
            let reason = if i % 10 == 0 {
                DropReason::Penalty
            } else {
                DropReason::PerSourceStartups
            };
            assert!(
                log.record(
                    addr(1, 1000 + i),
                    dst(),
                    reason,
                    Instant::now(),
                    SystemTime::now()
                )
                .is_empty()
            );
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        log.record(
            addr(2, 5),
            dst(),
            DropReason::MaxStartups,
            Instant::now(),
            SystemTime::now(),
        );
        assert_eq!(log.pending(), 1001);
        // 10 s in: nothing due yet.
        assert!(log.due(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_secs(51)).await;
        let due = log.due(Instant::now());
        let counts: Vec<(IpAddr, DropReason, u64)> = due
            .iter()
            .map(|s| (s.src.ip(), s.reason, s.count))
            .collect();
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert!(counts.contains(&(addr(1, 0).ip(), DropReason::PerSourceStartups, 900)));
        assert!(counts.contains(&(addr(1, 0).ip(), DropReason::Penalty, 100)));
        assert!(
            due.iter()
                .all(|s| s.last >= s.first && s.src.port() >= 1990)
        );
        // The other source's interval started 10 s later.
        assert_eq!(log.pending(), 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(log.due(Instant::now()).len(), 1);
        assert_eq!(log.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_is_written_out_and_nothing_is_lost() {
        let mut log = RefusalLog::new(Duration::from_secs(60));
        let mut written = 0u64;
        for n in 0..(MAX_OPEN as u32 * 2 + 10) {
            let out = log.record(
                addr(n, 1),
                dst(),
                DropReason::MaxStartups,
                Instant::now(),
                SystemTime::now(),
            );
            written += out.iter().map(|s| s.count).sum::<u64>();
            assert!(log.open.len() <= MAX_OPEN);
        }
        written += log.drain().iter().map(|s| s.count).sum::<u64>();
        assert_eq!(written, MAX_OPEN as u64 * 2 + 10);
        assert_eq!(log.pending(), 0);
    }
}
