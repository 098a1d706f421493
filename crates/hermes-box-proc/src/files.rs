//! What one reader gets: the box's files when it is in a box, the kernel's own
//! otherwise (the host, and tests).

use crate::cgroup::Hierarchies;
use crate::render::{self, Clock};

/// The files served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum File {
    Stat,
    Uptime,
}

impl File {
    pub fn name(self) -> &'static str {
        match self {
            File::Stat => "stat",
            File::Uptime => "uptime",
        }
    }
}

/// Hard bound on what is read from one /proc or cgroup file: the largest here is the
/// host's /proc/stat, a few KiB even on a big machine.
const READ_LIMIT: u64 = 1 << 20;

fn read(path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(READ_LIMIT)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// What a reader is served, and whose it is (the box's cgroup, or "" for the host),
/// which bounds how many a box may hold open.
#[derive(Debug)]
pub struct Served {
    pub text: String,
    pub owner: String,
}

/// The file's text for the process `pid` (the reader, in the host's PID namespace),
/// or an errno.
pub fn content(hierarchies: &Hierarchies, file: File, pid: u32) -> Result<Served, i32> {
    let host = |file: File| read(&format!("/proc/{}", file.name())).map_err(|_| libc::EIO);
    let for_host = |text| Served {
        text,
        owner: String::new(),
    };
    if pid == 0 {
        return host(file).map(for_host);
    }
    let cgroups = read(&format!("/proc/{pid}/cgroup")).map_err(|_| libc::EIO)?;
    let Some(in_box) = hierarchies.box_of(&cgroups) else {
        return host(file).map(for_host);
    };
    let cpu = hierarchies.cpu(&in_box).ok_or(libc::EIO)?;
    let offset = match read(&format!("/proc/{pid}/timens_offsets")) {
        Ok(text) => boottime_offset(&text).ok_or(libc::EIO)?,
        // A kernel without time namespaces: the host's clock.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(_) => return Err(libc::EIO),
    };
    let up = boot_clock_ns().ok_or(libc::EIO)?;
    let text = match file {
        File::Stat => {
            // The host's file: the lines kept as they are, and the btime moved.
            let host_stat = host(File::Stat)?;
            let host_btime = host_stat
                .lines()
                .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
                .ok_or(libc::EIO)?;
            render::stat(&host_stat, &Clock::from_host(up, host_btime, offset), &cpu)
        }
        // The uptime needs no btime.
        File::Uptime => render::uptime(&Clock::from_host(up, 0, offset), &cpu),
    };
    Ok(Served {
        text,
        owner: in_box.key().to_owned(),
    })
}

/// The boot-time line of /proc/PID/timens_offsets ("boottime <s> <ns>"), in
/// nanoseconds.
pub fn boottime_offset(text: &str) -> Option<i128> {
    text.lines().find_map(|line| {
        let mut words = line.split_ascii_whitespace();
        if words.next()? != "boottime" {
            return None;
        }
        let seconds: i64 = words.next()?.parse().ok()?;
        let nanos: i64 = words.next()?.parse().ok()?;
        Some(i128::from(seconds) * 1_000_000_000 + i128::from(nanos))
    })
}

/// The host's boot clock (this server runs in the host's time namespace).
fn boot_clock_ns() -> Option<u64> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the call's duration.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) } != 0 {
        return None;
    }
    let seconds = u64::try_from(now.tv_sec).ok()?;
    let nanos = u64::try_from(now.tv_nsec).ok()?;
    seconds.checked_mul(1_000_000_000)?.checked_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_time_offset_is_read_with_either_sign() {
        let text = "monotonic -399 250000000\nboottime -399 250000000\n";
        assert_eq!(boottime_offset(text), Some(-398_750_000_000));
        assert_eq!(
            boottime_offset("boottime 5 0\nmonotonic 1 1\n"),
            Some(5_000_000_000)
        );
        for bad in ["", "boottime\n", "boottime x 1\n", "monotonic 1 1\n"] {
            assert_eq!(boottime_offset(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_reader_outside_any_box_gets_the_kernels_files() {
        let hierarchies = Hierarchies::discover();
        let me = std::process::id();
        let served = content(&hierarchies, File::Stat, me).unwrap();
        assert_eq!(served.owner, "");
        let stat = served.text;
        let kernel = std::fs::read_to_string("/proc/stat").unwrap();
        let btime = |text: &str| {
            text.lines()
                .find(|l| l.starts_with("btime"))
                .map(str::to_owned)
        };
        assert_eq!(btime(&stat), btime(&kernel));
        let uptime = content(&hierarchies, File::Uptime, me).unwrap().text;
        assert!(uptime.ends_with('\n'), "{uptime}");
        // A reader that is gone: an error, not the host's files.
        assert_eq!(
            content(&hierarchies, File::Stat, u32::MAX).unwrap_err(),
            libc::EIO
        );
    }
}
