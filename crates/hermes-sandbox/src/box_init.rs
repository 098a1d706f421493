//! A box's first process as this host sees it. Once the engine has named it, whether
//! the box still runs is read from /proc: the sessions' checks (every few seconds,
//! each) then leave the engine alone.

use std::fs;

/// The first process of a box: its PID on this host and its start time (clock ticks
/// after the boot, /proc/PID/stat field 22), which tells it from a later process that
/// got the same PID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BoxInit {
    pid: i32,
    start: u64,
}

impl BoxInit {
    /// The process `pid` as it is now; None when this host does not see it running.
    pub(crate) fn read(pid: i32) -> Option<Self> {
        let (state, start) =
            state_and_start(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
        (pid > 1 && state != 'Z' && state != 'X').then_some(BoxInit { pid, start })
    }

    /// Its PID on this host.
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether that same process still runs.
    pub(crate) fn alive(&self) -> bool {
        BoxInit::read(self.pid).is_some_and(|now| now.start == self.start)
    }
}

/// The state and start time from `/proc/PID/stat`: "pid (comm) state ppid ...";
/// comm may hold spaces and parentheses, so fields are counted from the last ')'.
fn state_and_start(text: &str) -> Option<(char, u64)> {
    let mut rest = text.get(text.rfind(')')? + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    // Fields 4 to 21, then the start time (22).
    let start = rest.nth(18)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_found_after_a_hostile_comm() {
        let line = "4242 (a) b) (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(state_and_start(line), Some(('S', 987654)));
        assert_eq!(state_and_start("4242 (x) Z 1 2"), None);
        assert_eq!(state_and_start("no parenthesis"), None);
    }

    #[test]
    fn a_process_is_alive_until_it_ends_and_a_reused_pid_is_another() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = i32::try_from(child.id()).expect("pid");
        let init = BoxInit::read(pid).expect("running");
        assert!(init.alive());
        let other = BoxInit {
            start: init.start + 1,
            ..init
        };
        assert!(!other.alive(), "another start time is another process");
        child.kill().expect("kill");
        // A zombie until reaped: not running.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!init.alive());
        child.wait().expect("reap");
        assert!(!init.alive());
        assert_eq!(BoxInit::read(1), None, "PID 1 is never a box's");
    }
}
