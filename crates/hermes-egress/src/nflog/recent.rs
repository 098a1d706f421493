//! Which flows were logged lately. The firewall drops or rejects a flow's first
//! packet before its conntrack entry is confirmed, so each retransmission looks new
//! to it: this keeps them to one event per attempt.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use super::{LoggedPacket, Transport};

/// How long a flow counts as the same attempt (TCP gives up on a SYN after about
/// two minutes).
const SAME_ATTEMPT: Duration = Duration::from_secs(130);
/// Flows remembered at most; a box that makes more in [`SAME_ATTEMPT`] (a flood)
/// may see some retransmissions logged again, never unbounded memory.
const CAPACITY: usize = 4096;

type Flow = (Transport, u16, SocketAddrV4);

/// The flows of one box logged lately.
#[derive(Debug, Default)]
pub struct RecentFlows {
    seen: HashMap<Flow, Instant>,
}

impl RecentFlows {
    /// Whether `packet` starts an attempt not logged yet; remembers it.
    pub fn first_of_attempt(&mut self, packet: &LoggedPacket, now: Instant) -> bool {
        let flow = (packet.transport, packet.source_port, packet.destination);
        if let Some(at) = self.seen.get(&flow)
            && now.duration_since(*at) < SAME_ATTEMPT
        {
            return false;
        }
        if self.seen.len() >= CAPACITY {
            self.seen
                .retain(|_, at| now.duration_since(*at) < SAME_ATTEMPT);
            if self.seen.len() >= CAPACITY {
                self.seen.clear();
            }
        }
        self.seen.insert(flow, now);
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn(source_port: u16, port: u16) -> LoggedPacket {
        LoggedPacket {
            transport: Transport::Tcp,
            destination: SocketAddrV4::new([198, 51, 100, 7].into(), port),
            source_port,
            payload: Vec::new(),
        }
    }

    #[test]
    fn a_retransmission_is_the_same_attempt_and_a_new_port_a_new_one() {
        let mut recent = RecentFlows::default();
        let now = Instant::now();
        assert!(recent.first_of_attempt(&syn(40000, 22), now));
        assert!(!recent.first_of_attempt(&syn(40000, 22), now + Duration::from_secs(63)));
        assert!(recent.first_of_attempt(&syn(40001, 22), now));
        assert!(recent.first_of_attempt(&syn(40000, 23), now));
        // Long after, the same ports again are a new attempt.
        assert!(recent.first_of_attempt(&syn(40000, 22), now + SAME_ATTEMPT));
    }

    #[test]
    fn a_flood_of_flows_stays_within_capacity() {
        let mut recent = RecentFlows::default();
        let now = Instant::now();
        for i in 0..(3 * CAPACITY) {
            let packet = syn((i % 60000) as u16, (i / 60000) as u16 + 1);
            assert!(recent.first_of_attempt(&packet, now));
            assert!(recent.len() <= CAPACITY);
        }
    }
}
