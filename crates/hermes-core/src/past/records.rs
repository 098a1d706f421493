//! The binary login records of glibc on x86_64: `struct utmp` (wtmp, btmp) and
//! `struct lastlog`, as sshd, login and systemd write them.

/// `ut_type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `RUN_LVL`: a shutdown (`last -x`).
    RunLevel = 1,
    /// `BOOT_TIME`: a boot (`last reboot`).
    Boot = 2,
    /// `LOGIN_PROCESS`: a failed login (btmp).
    Login = 6,
    /// `USER_PROCESS`: a session began.
    User = 7,
    /// `DEAD_PROCESS`: a session ended.
    Dead = 8,
}

/// Size of `struct utmp`.
pub(super) const UTMP_SIZE: usize = 384;
/// Size of `struct lastlog`.
pub(super) const LASTLOG_SIZE: usize = 292;

/// One `struct utmp`.
#[derive(Debug, Clone)]
pub(super) struct Utmp<'a> {
    pub kind: Kind,
    pub pid: i32,
    pub line: &'a str,
    pub user: &'a str,
    pub host: &'a str,
    pub time: u64,
    pub micros: u32,
}

fn put(field: &mut [u8], text: &str) {
    let bytes = text.as_bytes();
    let n = bytes.len().min(field.len());
    field[..n].copy_from_slice(&bytes[..n]);
}

impl Utmp<'_> {
    /// The 384 bytes: type, pid, line[32], id[4], user[32], host[256], exit,
    /// session, tv (32-bit seconds and microseconds), addr_v6[4], unused.
    pub(super) fn bytes(&self) -> [u8; UTMP_SIZE] {
        let mut record = [0u8; UTMP_SIZE];
        record[0..2].copy_from_slice(&(self.kind as i16).to_le_bytes());
        record[4..8].copy_from_slice(&self.pid.to_le_bytes());
        put(&mut record[8..40], self.line);
        // ut_id: the line's last four characters ("ts/0" for pts/0, "~~" for boots).
        let id = match self.kind {
            Kind::Boot | Kind::RunLevel => "~~",
            _ => &self.line[self.line.len().saturating_sub(4)..],
        };
        put(&mut record[40..44], id);
        put(&mut record[44..76], self.user);
        put(&mut record[76..332], self.host);
        record[340..344].copy_from_slice(&(self.time as u32).to_le_bytes());
        record[344..348].copy_from_slice(&self.micros.to_le_bytes());
        if let Ok(address) = self.host.parse::<std::net::Ipv4Addr>() {
            record[348..352].copy_from_slice(&address.octets());
        }
        record
    }
}

/// One `struct lastlog`: a 32-bit time, line[32], host[256].
pub(super) fn lastlog(time: u64, line: &str, host: &str) -> [u8; LASTLOG_SIZE] {
    let mut record = [0u8; LASTLOG_SIZE];
    record[0..4].copy_from_slice(&(time as u32).to_le_bytes());
    put(&mut record[4..36], line);
    put(&mut record[36..292], host);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_record_has_glibc_layout() {
        let record = Utmp {
            kind: Kind::User,
            pid: 4242,
            line: "pts/0",
            user: "admin",
            host: "198.51.100.7",
            time: 1_764_000_000,
            micros: 5,
        }
        .bytes();
        assert_eq!(i16::from_le_bytes([record[0], record[1]]), 7);
        assert_eq!(&record[4..8], &4242i32.to_le_bytes());
        assert_eq!(&record[8..13], b"pts/0");
        assert_eq!(&record[40..44], b"ts/0");
        assert_eq!(&record[44..49], b"admin");
        assert_eq!(&record[76..88], b"198.51.100.7");
        assert_eq!(&record[340..344], &1_764_000_000u32.to_le_bytes());
        assert_eq!(&record[348..352], &[198, 51, 100, 7]);
        let boot = Utmp {
            kind: Kind::Boot,
            pid: 0,
            line: "~",
            user: "reboot",
            host: "6.1.0-27-amd64",
            time: 1,
            micros: 0,
        }
        .bytes();
        assert_eq!(&record[40..44], b"ts/0");
        assert_eq!(&boot[40..42], b"~~");
        let last = lastlog(7, "pts/1", "host");
        assert_eq!(&last[0..4], &7u32.to_le_bytes());
        assert_eq!(&last[4..9], b"pts/1");
        assert_eq!(&last[36..40], b"host");
    }
}
