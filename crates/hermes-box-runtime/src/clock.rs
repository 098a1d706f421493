//! The box's boot clock: a time namespace whose monotonic and boot-time clocks read
//! about a second when the box's first process starts, as on a machine that has just
//! booted. `/proc/uptime`, `/proc/<pid>/stat`'s start times and `ps`'s ages inside the
//! box then count from the box's boot and agree with each other.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

const NANOS: i128 = 1_000_000_000;

/// How far into its boot a machine's first process starts: the kernel's own start,
/// between 0.5 and 1.7 s (drawn from the clock's nanoseconds, so boxes differ).
fn boot_delay(now: &libc::timespec) -> i128 {
    500_000_000 + i128::from(now.tv_nsec) % 1_200_000_000
}

/// The offset (seconds, nanoseconds in 0..1e9) that makes a clock now reading `now`
/// read `target` nanoseconds: what /proc/self/timens_offsets takes.
fn offset(now: &libc::timespec, target: i128) -> (i64, i64) {
    let now = i128::from(now.tv_sec) * NANOS + i128::from(now.tv_nsec);
    let total = target - now;
    let seconds = total.div_euclid(NANOS);
    let nanos = total.rem_euclid(NANOS);
    (
        i64::try_from(seconds).unwrap_or(i64::MIN),
        i64::try_from(nanos).unwrap_or(0),
    )
}

fn read_clock(clock: libc::clockid_t) -> io::Result<libc::timespec> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the call's duration.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(now)
}

/// Puts this process, and so runc and the container it creates, in a time namespace
/// of their own, its clocks set back to about one second. Must run before any thread
/// is started.
pub fn new() -> io::Result<()> {
    let monotonic = read_clock(libc::CLOCK_MONOTONIC)?;
    let boottime = read_clock(libc::CLOCK_BOOTTIME)?;
    let delay = boot_delay(&boottime);
    // The boot-time clock runs ahead of the monotonic one by the time the host was
    // suspended; the box's keeps that gap at zero, as after a fresh boot.
    let (mono_s, mono_ns) = offset(&monotonic, delay);
    let (boot_s, boot_ns) = offset(&boottime, delay);
    // SAFETY: unshare takes no pointers; it changes only this process's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Written before any process has entered the namespace, as the kernel requires.
    let mut offsets = File::options()
        .write(true)
        .open("/proc/self/timens_offsets")?;
    offsets.write_all(
        format!("monotonic {mono_s} {mono_ns}\nboottime {boot_s} {boot_ns}\n").as_bytes(),
    )?;
    // runc itself goes on the new clock too, on any kernel (5.18 and later would move
    // it there at exec anyway): the init start time it saves must be the one later
    // calls, which join this clock, read back.
    enter(&File::open("/proc/self/ns/time_for_children")?)
}

/// Puts this process on the clock of the container among `operands` that has a
/// state in runc's `root` (the first one), read from its first process. No such
/// container, or one whose first process is gone: nothing to join, and runc answers
/// as it would.
pub fn join(root: &Path, operands: &[String]) -> io::Result<()> {
    let Some(state_path) = operands
        .iter()
        .filter(|id| is_container_id(id))
        .map(|id| root.join(id).join("state.json"))
        .find(|path| path.is_file())
    else {
        return Ok(());
    };
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path)?).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {error}", state_path.display()),
            )
        })?;
    let pid = state
        .get("init_process_pid")
        .and_then(serde_json::Value::as_u64)
        .filter(|pid| *pid > 1)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: no init_process_pid", state_path.display()),
            )
        })?;
    let namespace = match File::open(format!("/proc/{pid}/ns/time")) {
        Ok(namespace) => namespace,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    enter(&namespace)
}

/// A name runc could have made a state directory of: one path segment.
fn is_container_id(id: &str) -> bool {
    !id.is_empty() && id != "." && id != ".." && !id.contains('/')
}

fn enter(namespace: &File) -> io::Result<()> {
    // SAFETY: the descriptor is open for the call's duration; setns takes no pointers.
    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWTIME) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tv_sec: i64, tv_nsec: i64) -> libc::timespec {
        libc::timespec { tv_sec, tv_nsec }
    }

    #[test]
    fn the_offset_brings_the_clock_to_the_target_with_nanoseconds_in_range() {
        // 148.3 s after the host's boot, to 0.9 s: back 147.4 s, written -148 s + 0.6 s.
        assert_eq!(
            offset(&at(148, 300_000_000), 900_000_000),
            (-148, 600_000_000)
        );
        assert_eq!(offset(&at(10, 0), 1_000_000_000), (-9, 0));
        assert_eq!(offset(&at(0, 200), 100), (-1, 999_999_900));
        // A host up for years.
        let (s, ns) = offset(&at(200_000_000, 999_999_999), 700_000_000);
        assert_eq!(
            i128::from(s) * NANOS + i128::from(ns),
            700_000_000 - 200_000_000_999_999_999
        );
        assert!((0..1_000_000_000).contains(&ns));
    }

    #[test]
    fn the_boot_delay_is_a_kernels_boot() {
        for nanos in [0, 1, 499_999_999, 999_999_999] {
            let delay = boot_delay(&at(5, nanos));
            assert!((500_000_000..1_700_000_000).contains(&delay), "{delay}");
        }
    }

    #[test]
    fn join_takes_only_a_path_segment_for_a_container() {
        for id in ["", ".", "..", "a/b", "../etc"] {
            assert!(!is_container_id(id), "{id}");
        }
        assert!(is_container_id("0123abcd"));
        // Operands that name no container there: nothing to join.
        let none = ["..".to_owned(), "/etc".to_owned(), "json".to_owned()];
        join(Path::new("/nonexistent"), &none).unwrap();
    }

    #[test]
    fn join_reports_a_state_without_a_first_process_and_passes_a_gone_one() {
        let root = std::env::temp_dir().join(format!("box-runtime-test-{}", std::process::id()));
        std::fs::create_dir_all(root.join("c1")).unwrap();
        let c1 = ["-".to_owned(), "c1".to_owned()];
        std::fs::write(root.join("c1/state.json"), br#"{"id":"c1"}"#).unwrap();
        let error = join(&root, &c1).unwrap_err();
        assert!(error.to_string().contains("no init_process_pid"), "{error}");
        std::fs::write(root.join("c1/state.json"), b"{not json").unwrap();
        assert_eq!(
            join(&root, &c1).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // A PID above the kernel's largest: the first process is gone.
        std::fs::write(
            root.join("c1/state.json"),
            br#"{"init_process_pid":99999999}"#,
        )
        .unwrap();
        join(&root, &c1).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }
}
