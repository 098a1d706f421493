//! The text of the two files, from what one box is. Pure, so tested without a box.
//!
//! The kernel's own files are right about the box's clock (a time namespace moves
//! both btime and the uptime) but count the host's CPUs; LXCFS's count the box's CPUs
//! but copy the host's btime. These count both from the box.

/// Clock ticks per second in /proc (USER_HZ, 100 on every Linux port Debian ships).
pub const USER_HZ: u64 = 100;

const NANOS: i128 = 1_000_000_000;

/// One box's clock, as its time namespace makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// The boot clock inside the box, in nanoseconds.
    pub uptime_ns: u64,
    /// The wall-clock second the box "booted" (/proc/stat's btime).
    pub btime: i64,
}

impl Clock {
    /// The box's clock from the host's boot clock and btime and the box's boot-time
    /// offset (/proc/PID/timens_offsets), in nanoseconds. btime is rounded to the
    /// nearest second, so it stays the same across reads.
    pub fn from_host(host_uptime_ns: u64, host_btime: i64, offset_ns: i128) -> Clock {
        let uptime = (i128::from(host_uptime_ns) + offset_ns).clamp(0, i128::from(u64::MAX));
        let shift = (offset_ns + NANOS / 2).div_euclid(NANOS);
        let btime = i128::from(host_btime) - shift;
        Clock {
            uptime_ns: u64::try_from(uptime).unwrap_or(0),
            btime: i64::try_from(btime).unwrap_or(host_btime),
        }
    }

    fn uptime_ticks(&self) -> u64 {
        self.uptime_ns / (1_000_000_000 / USER_HZ)
    }
}

/// The CPUs the box has and the time it has used on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu {
    /// How many CPUs it shows (as LXCFS's /proc/cpuinfo does: its cpuset, or its
    /// quota rounded up where that is fewer). At least 1.
    pub count: u32,
    /// User and system time in clock ticks since the box started.
    pub user_ticks: u64,
    pub system_ticks: u64,
}

impl Cpu {
    fn count(&self) -> u64 {
        u64::from(self.count.max(1))
    }

    /// Idle time over all its CPUs since the boot, in clock ticks.
    fn idle_ticks(&self, clock: &Clock) -> u64 {
        (clock.uptime_ticks().saturating_mul(self.count()))
            .saturating_sub(self.user_ticks.saturating_add(self.system_ticks))
    }
}

/// /proc/uptime: seconds since the boot and idle seconds summed over the CPUs, in
/// the kernel's format.
pub fn uptime(clock: &Clock, cpu: &Cpu) -> String {
    let up = clock.uptime_ticks();
    let idle = cpu.idle_ticks(clock);
    format!(
        "{}.{:02} {}.{:02}\n",
        up / USER_HZ,
        up % USER_HZ,
        idle / USER_HZ,
        idle % USER_HZ
    )
}

/// /proc/stat: the host's file with its CPU lines replaced by the box's (the total,
/// then cpu0 onwards, the time shared evenly) and btime by the box's boot. The other
/// lines (interrupts, context switches, processes) stay the host's, as with LXCFS.
pub fn stat(host: &str, clock: &Clock, cpu: &Cpu) -> String {
    let mut out = String::with_capacity(host.len() + 64);
    for line in host.lines() {
        let key = line.split_ascii_whitespace().next().unwrap_or("");
        if key == "cpu" {
            cpu_lines(&mut out, clock, cpu);
        } else if key.starts_with("cpu") && key[3..].bytes().all(|b| b.is_ascii_digit()) {
            // Each of the host's CPUs: the box's were written with the total.
        } else if key == "btime" {
            out.push_str(&format!("btime {}\n", clock.btime));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn cpu_lines(out: &mut String, clock: &Clock, cpu: &Cpu) {
    let idle = cpu.idle_ticks(clock);
    let n = cpu.count();
    push_cpu(out, "cpu ", cpu.user_ticks, cpu.system_ticks, idle);
    for index in 0..n {
        // Shared evenly; what does not divide goes to cpu0, so the lines add up.
        let share = |total: u64| total / n + if index == 0 { total % n } else { 0 };
        push_cpu(
            out,
            &format!("cpu{index}"),
            share(cpu.user_ticks),
            share(cpu.system_ticks),
            share(idle),
        );
    }
}

fn push_cpu(out: &mut String, name: &str, user: u64, system: u64, idle: u64) {
    // user nice system idle iowait irq softirq steal guest guest_nice
    out.push_str(&format!("{name} {user} 0 {system} {idle} 0 0 0 0 0 0\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "cpu  400 1 300 90000 20 0 7 0 0 0\n\
cpu0 200 1 150 45000 10 0 3 0 0 0\n\
cpu1 200 0 150 45000 10 0 4 0 0 0\n\
intr 588985 0 0 1\n\
ctxt 1517103\n\
btime 1796540359\n\
processes 29864\n\
procs_running 5\n\
procs_blocked 1\n\
softirq 300435 0 22568\n";

    fn field(text: &str, key: &str) -> Vec<u64> {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} in {text}"));
        line.split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect()
    }

    #[test]
    fn the_clock_moves_uptime_and_btime_by_the_offset_and_btime_holds_still() {
        // A host up 1000 s, a box whose clock was set back to 1 s 600 s ago.
        let offset = -(399 * NANOS) - NANOS / 4;
        let clock = Clock::from_host(1_000 * 1_000_000_000, 1_796_540_359, offset);
        assert_eq!(clock.uptime_ns, 600_750_000_000);
        assert_eq!(clock.btime, 1_796_540_359 + 399);
        // Later reads: the same btime however the nanoseconds fall.
        let later = Clock::from_host(1_500 * 1_000_000_000, 1_796_540_359, offset);
        assert_eq!(later.btime, clock.btime);
        // No namespace: the host's clock.
        let host = Clock::from_host(5 * 1_000_000_000, 7, 0);
        assert_eq!((host.uptime_ns, host.btime), (5_000_000_000, 7));
        // An offset past the host's uptime (a hostile namespace): no wrap.
        assert_eq!(Clock::from_host(5, 7, -(10 * NANOS)).uptime_ns, 0);
    }

    #[test]
    fn uptime_is_the_boxs_with_idle_over_its_cpus_in_the_kernels_format() {
        let clock = Clock {
            uptime_ns: 61_234_000_000,
            btime: 0,
        };
        let one = Cpu {
            count: 1,
            user_ticks: 120,
            system_ticks: 3,
        };
        assert_eq!(uptime(&clock, &one), "61.23 60.00\n");
        let two = Cpu { count: 2, ..one };
        assert_eq!(uptime(&clock, &two), "61.23 121.23\n");
        // More used than the clock allows (a quota's rounding): idle 0, not a wrap.
        let busy = Cpu {
            count: 1,
            user_ticks: 10_000,
            system_ticks: 0,
        };
        assert_eq!(uptime(&clock, &busy), "61.23 0.00\n");
    }

    #[test]
    fn stat_has_the_boxs_cpus_and_btime_and_keeps_the_rest() {
        let clock = Clock {
            uptime_ns: 100 * 1_000_000_000,
            btime: 1_796_541_000,
        };
        let cpu = Cpu {
            count: 1,
            user_ticks: 250,
            system_ticks: 50,
        };
        let text = stat(HOST, &clock, &cpu);
        assert_eq!(field(&text, "cpu"), [250, 0, 50, 9_700, 0, 0, 0, 0, 0, 0]);
        assert_eq!(field(&text, "cpu0"), field(&text, "cpu"));
        assert!(!text.contains("cpu1"), "{text}");
        assert_eq!(field(&text, "btime"), [1_796_541_000]);
        for key in [
            "intr",
            "ctxt",
            "processes",
            "procs_running",
            "procs_blocked",
            "softirq",
        ] {
            assert_eq!(field(&text, key), field(HOST, key), "{key}");
        }
        // The kernel's shape: the total first, "cpu" and two spaces.
        assert!(text.starts_with("cpu  250 0 50 9700 "), "{text}");
        assert_eq!(text.lines().count(), HOST.lines().count() - 1);
    }

    #[test]
    fn the_cpu_lines_add_up_to_the_total() {
        let clock = Clock {
            uptime_ns: 10 * 1_000_000_000,
            btime: 0,
        };
        let cpu = Cpu {
            count: 3,
            user_ticks: 100,
            system_ticks: 11,
        };
        let text = stat(HOST, &clock, &cpu);
        let total = field(&text, "cpu");
        let sum: Vec<u64> = (0..3)
            .map(|i| field(&text, &format!("cpu{i}")))
            .fold(vec![0; 10], |acc, line| {
                acc.iter().zip(line).map(|(a, b)| a + b).collect()
            });
        assert_eq!(sum, total);
        assert_eq!(total[3], 3 * 1_000 - 111);
    }

    #[test]
    fn a_host_file_that_is_odd_passes_without_a_panic() {
        let clock = Clock {
            uptime_ns: 0,
            btime: 0,
        };
        let cpu = Cpu {
            count: 0,
            user_ticks: u64::MAX,
            system_ticks: u64::MAX,
        };
        for host in [
            "",
            "\n\n",
            "cpu",
            "cpuX 1 2\nbtime\n",
            "cpu99999999999999999999 1\n",
        ] {
            let _ = stat(host, &clock, &cpu);
        }
        assert_eq!(uptime(&clock, &cpu), "0.00 0.00\n");
    }
}
