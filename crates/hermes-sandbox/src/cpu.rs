//! `cpu_pinning: core`: each new box gets one whole core, the host's online cores
//! taken in turn, as a 1-vCPU VPS has one (`nproc` and /proc/cpuinfo then agree).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Where the host lists its online cores (`0-3,6`).
const ONLINE: &str = "/sys/devices/system/cpu/online";
/// Cores at most taken from the list (a bound on what a malformed file can make).
const MAX_CORES: u32 = 4096;

/// The cores of a kernel CPU list such as `0-3,6,8-9`; None when malformed.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cores = Vec::new();
    for part in text.trim().split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let core = part.parse::<u32>().ok()?;
                (core, core)
            }
        };
        if first > last || last >= MAX_CORES {
            return None;
        }
        cores.extend(first..=last);
    }
    cores.sort_unstable();
    cores.dedup();
    (!cores.is_empty()).then_some(cores)
}

/// Hands out cores in turn (round robin): boxes are created one after another and
/// live for comparable times, so turns spread them evenly without bookkeeping.
#[derive(Debug)]
pub struct CoreTurns {
    cores: Vec<u32>,
    next: AtomicUsize,
}

impl CoreTurns {
    /// Over the given cores (at least one).
    pub fn new(cores: Vec<u32>) -> Option<Self> {
        (!cores.is_empty()).then(|| CoreTurns {
            cores,
            next: AtomicUsize::new(0),
        })
    }

    /// Over this host's online cores; None (with the reason) when they are unknown.
    pub fn of_this_host() -> Result<Self, String> {
        let text = std::fs::read_to_string(ONLINE).map_err(|e| format!("{ONLINE}: {e}"))?;
        parse_cpu_list(&text)
            .and_then(CoreTurns::new)
            .ok_or_else(|| format!("{ONLINE}: not a CPU list: {:?}", text.trim()))
    }

    /// The core for the next box.
    pub fn next(&self) -> u32 {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        self.cores[turn % self.cores.len()]
    }

    /// How many cores turns go over (at least one).
    pub fn count(&self) -> usize {
        self.cores.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0-3,6,8-9"), Some(vec![0, 1, 2, 3, 6, 8, 9]));
        assert_eq!(parse_cpu_list("2,0-2"), Some(vec![0, 1, 2]));
        for bad in ["", "a", "3-1", "0-99999", "1,,2", "-1"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cores_are_taken_in_turn() {
        let turns = CoreTurns::new(vec![0, 2, 5]).expect("cores");
        let taken: Vec<u32> = (0..7).map(|_| turns.next()).collect();
        assert_eq!(taken, vec![0, 2, 5, 0, 2, 5, 0]);
        assert!(CoreTurns::new(Vec::new()).is_none());
    }

    #[test]
    fn this_host_has_cores() {
        let turns = CoreTurns::of_this_host().expect("a Linux host lists its cores");
        assert!(turns.count() >= 1);
    }
}
