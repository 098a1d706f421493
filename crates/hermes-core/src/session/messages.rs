//! What the client sees when a session cannot go on. Each stage has its own text, and
//! each text is one a real Debian server prints in a comparable situation, so the
//! failure itself does not reveal the honeypot. The metadata records the true reason.

use std::time::SystemTime;

use crate::record::EndReason;

/// The text written to the client's terminal before the session closes.
pub fn end_message(reason: EndReason, username: &str, hostname: &str) -> String {
    match reason {
        // bash's answer when fork(2) fails for lack of processes.
        EndReason::ContainerUnavailable => {
            "-bash: fork: retry: Resource temporarily unavailable\r\n".to_owned()
        }
        // pam_limits' answer when maxlogins is reached.
        EndReason::Capacity => format!("Too many logins for '{}'.\r\n", sanitize(username)),
        // bash's answer when fork(2) fails for lack of memory.
        EndReason::ExecFailed => "-bash: fork: Cannot allocate memory\r\n".to_owned(),
        EndReason::StreamError => "\r\n-bash: write error: Broken pipe\r\n".to_owned(),
        // bash's answer when the disk is full.
        EndReason::DiskLimit => {
            "\r\n-bash: cannot create temp file for here-document: No space left on device\r\n"
                .to_owned()
        }
        // What su(1) prints when its session is terminated: an administrator's limit.
        EndReason::Timeout => "\r\nSession terminated, killing shell... ...killed.\r\n".to_owned(),
        // bash's TMOUT auto-logout.
        EndReason::IdleTimeout => "\r\ntimed out waiting for input: auto-logout\r\n".to_owned(),
        // systemd's wall message for `shutdown now`.
        EndReason::Shutdown => format!(
            "\r\nBroadcast message from root@{hostname} on pts/1 ({}):\r\n\r\nThe system will power off now!\r\n\r\n",
            wall_clock(SystemTime::now())
        ),
        // The client is not listening any more.
        EndReason::Running
        | EndReason::Exited
        | EndReason::ClientClosed
        | EndReason::ClientNotResponding
        | EndReason::SensorDied => String::new(),
    }
}

/// Only printable ASCII of a username is echoed back to a terminal.
fn sanitize(username: &str) -> String {
    username
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(64)
        .collect()
}

/// `Mon 2026-11-23 10:00:00 UTC`, as systemd's wall messages print time.
fn wall_clock(now: SystemTime) -> String {
    let iso = crate::time::iso8601_micros(now);
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][((secs / 86_400) % 7) as usize];
    format!("{weekday} {} {} UTC", &iso[..10], &iso[11..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_has_its_own_text() {
        let reasons = [
            EndReason::ContainerUnavailable,
            EndReason::Capacity,
            EndReason::ExecFailed,
            EndReason::StreamError,
            EndReason::Timeout,
            EndReason::IdleTimeout,
            EndReason::Shutdown,
            EndReason::DiskLimit,
        ];
        let texts: Vec<_> = reasons
            .iter()
            .map(|r| end_message(*r, "root", "web"))
            .collect();
        for (i, a) in texts.iter().enumerate() {
            assert!(!a.is_empty());
            for b in &texts[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn usernames_cannot_inject_terminal_sequences() {
        let text = end_message(EndReason::Capacity, "x\u{1b}]0;pwned\u{7}\r\nroot", "web");
        assert!(!text.contains('\u{1b}'));
        assert_eq!(text, "Too many logins for 'x]0;pwnedroot'.\r\n");
    }

    #[test]
    fn wall_clock_format() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_424_400);
        assert_eq!(wall_clock(t), "Mon 2026-11-23 09:00:00 UTC");
    }
}
