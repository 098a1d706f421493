//! rsyslog's traditional file format, as Debian 12 writes /var/log/auth.log and
//! /var/log/syslog: `Mmm dd HH:MM:SS host tag[pid]: message`, in UTC.

use crate::time::civil_from_days;

const DAY: u64 = 86_400;
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Lines of one log, in any order until [`Log::into_sorted`].
pub(super) struct Log<'a> {
    host: &'a str,
    lines: Vec<(u64, String)>,
}

impl<'a> Log<'a> {
    pub(super) fn new(host: &'a str) -> Self {
        Self {
            host,
            lines: Vec::new(),
        }
    }

    pub(super) fn line(&mut self, time: u64, tag: &str, pid: Option<u32>, message: &str) {
        let (_, month, day, hour) = clock(time);
        let minute = time % 3_600 / 60;
        let second = time % 60;
        let month = MONTHS[(month as usize).saturating_sub(1) % 12];
        let tag = match pid {
            Some(pid) => format!("{tag}[{pid}]"),
            None => tag.to_owned(),
        };
        self.lines.push((
            time,
            format!(
                "{month} {day:>2} {hour:02}:{minute:02}:{second:02} {} {tag}: {message}",
                self.host
            ),
        ));
    }

    /// The lines by time (stable: lines of one moment keep their order).
    pub(super) fn into_sorted(mut self) -> Vec<(u64, String)> {
        self.lines.sort_by_key(|(time, _)| *time);
        self.lines
    }
}

/// (year, month 1-12, day 1-31, hour) of `time`.
pub(super) fn clock(time: u64) -> (i64, u32, u32, u64) {
    let (year, month, day) = civil_from_days((time / DAY) as i64);
    (year, month, day, time % DAY / 3_600)
}

/// Day of the week of `time`, 0 for Sunday (1970-01-01 was a Thursday).
pub(super) fn weekday(time: u64) -> u64 {
    (time / DAY + 4) % 7
}

/// Midnight of the first day of `time`'s month.
pub(super) fn month_start(time: u64) -> u64 {
    let (_, _, day, _) = clock(time);
    (time / DAY - u64::from(day - 1)) * DAY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_in_rsyslog_traditional_format() {
        let mut log = Log::new("web-prod-01");
        // 2026-12-05 06:07:08 UTC, a Saturday.
        let time = 1_796_450_828;
        log.line(
            time,
            "sshd",
            Some(812),
            "Invalid user x from 192.0.2.1 port 4",
        );
        log.line(time - 60, "sudo", None, "   admin : TTY=pts/0");
        let lines = log.into_sorted();
        assert_eq!(
            lines[0].1,
            "Dec  5 06:06:08 web-prod-01 sudo:    admin : TTY=pts/0"
        );
        assert_eq!(
            lines[1].1,
            "Dec  5 06:07:08 web-prod-01 sshd[812]: Invalid user x from 192.0.2.1 port 4"
        );
        assert_eq!(weekday(time), 6);
        assert_eq!(clock(month_start(time)), (2026, 12, 1, 0));
        assert_eq!(clock(month_start(month_start(time) - 1)), (2026, 11, 1, 0));
    }
}
