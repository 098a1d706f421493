//! A box's past: the logs and login records of a server that has run for a while.
//!
//! A box is created minutes before the attacker arrives, so its `last` would be
//! empty, its auth.log would start at its boot and nobody would ever have logged in:
//! no server on the internet looks like that. Each box gets, before it starts, the
//! files such a server has: weeks of rsyslog's auth.log and syslog (rotated weekly
//! as Debian's logrotate does, older weeks gzipped), wtmp and btmp for this month and
//! the last (rotated monthly), and lastlog. Their story: the admin logs in by key
//! every few days and runs a few commands with sudo, root sometimes, cron runs its
//! jobs every hour, the machine was rebooted now and then (the last time when the
//! box started), and the internet's scanners try passwords all day.
//!
//! Pure: the same persona, clock and random source always give the same files.

mod records;
mod syslog;

use std::io::Write;
use std::net::Ipv4Addr;

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

use records::{Kind, LASTLOG_SIZE, Utmp};
use syslog::Log;

/// A file to put into the box before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastFile {
    /// Path without the leading `/`.
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch.
    pub mtime: u64,
    pub data: Vec<u8>,
}

/// What the past is about.
#[derive(Debug, Clone)]
pub struct Persona<'a> {
    pub hostname: &'a str,
    /// `uname -r` of the kernel the boxes run on (the boot records name it).
    pub kernel_release: &'a str,
    /// When the box starts (its current boot), seconds since the epoch.
    pub now: u64,
    /// When the server was installed: nothing is older.
    pub installed: u64,
}

/// Debian's group ids of `adm` (readers of logs) and `utmp`.
const ADM: u32 = 4;
const UTMP: u32 = 43;
/// The admin account of the image.
const ADMIN_UID: u64 = 1000;

const DAY: u64 = 86_400;
const HOUR: u64 = 3_600;
/// Logs are rotated weekly and four old ones are kept: five weeks at most.
const LOG_WEEKS: u64 = 5;
/// When logrotate runs: cron's daily jobs at 06:25 (Debian's /etc/crontab), a
/// moment after they start.
const ROTATED_AT: u64 = 6 * HOUR + 25 * 60 + 2;

/// Names the internet's scanners try, most often first.
const SCANNED_NAMES: &[&str] = &[
    "root",
    "root",
    "root",
    "root",
    "admin",
    "admin",
    "test",
    "user",
    "ubuntu",
    "oracle",
    "postgres",
    "guest",
    "git",
    "ftpuser",
    "pi",
    "support",
    "deploy",
    "mysql",
    "steam",
    "minecraft",
    "hadoop",
    "debian",
    "centos",
    "jenkins",
    "test1",
    "user1",
    "www",
    "server",
    "dev",
    "odoo",
    "sammy",
    "ansible",
    "vagrant",
    "es",
    "elastic",
    "tomcat",
    "nagios",
];

/// Commands the admin runs with sudo (all in the image).
const SUDO_COMMANDS: &[&str] = &[
    "/usr/bin/apt update",
    "/usr/bin/apt upgrade -y",
    "/usr/bin/tail -n 100 /var/log/syslog",
    "/usr/bin/du -sh /var/log",
    "/usr/bin/crontab -l",
    "/usr/bin/cat /opt/app/.env",
];

/// Everything that happened, before it is written down.
struct Story {
    boots: Vec<u64>,
    sessions: Vec<Session>,
    probes: Vec<Probe>,
    /// Where the admin logs in from.
    fingerprint: String,
}

struct Session {
    user: &'static str,
    uid: u64,
    from: String,
    port: u16,
    line: &'static str,
    start: u64,
    end: u64,
    sudo: Vec<(u64, &'static str)>,
}

struct Probe {
    time: u64,
    user: &'static str,
    from: String,
    port: u16,
}

/// The seed of a sensor's past: the same sensor and hostname always tell the same.
pub fn sensor_seed(sensor: &str, hostname: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(sensor.as_bytes())
        .chain_update([0])
        .chain_update(hostname.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// When a server whose image does not say was installed: 60 to 300 days before
/// `now`, the same for one seed on one day.
pub fn assumed_install(seed: u64, now: u64) -> u64 {
    let days = 60 + seed % 240;
    (now / DAY).saturating_sub(days) * DAY + seed % DAY
}

/// Where the past's login records of this month are.
pub const WTMP: &str = "var/log/wtmp";

/// The past's `wtmp` with what went just before the box's own start at `boot`: the
/// shutdown (`last -x`). The boot record itself is init's to write, as it does at
/// every boot.
pub fn wtmp_before_boot(wtmp: &PastFile, kernel_release: &str, boot: u64) -> PastFile {
    let down = boot.saturating_sub(45).max(wtmp.mtime);
    let mut data = Vec::with_capacity(wtmp.data.len() + records::UTMP_SIZE);
    data.extend_from_slice(&wtmp.data);
    data.extend_from_slice(&utmp(
        Kind::RunLevel,
        0,
        "~~",
        "shutdown",
        kernel_release,
        down,
    ));
    PastFile {
        path: wtmp.path.clone(),
        mode: wtmp.mode,
        uid: wtmp.uid,
        gid: wtmp.gid,
        mtime: down,
        data,
    }
}

/// The box's past files. `seed` is the sensor's: every box of one sensor has the
/// same past (the same server), up to its own boot.
pub fn generate(persona: &Persona<'_>, seed: u64) -> Vec<PastFile> {
    let story = tell(persona, seed);
    let mut files = logs(persona, &story, seed);
    files.extend(login_records(persona, &story));
    files.push(logrotate_status(persona));
    files
}

/// A random source for one part of the story: the same `seed`, `part` and `index`
/// always tell the same, whatever the day the box starts.
fn rng_for(seed: u64, part: u64, index: u64) -> StdRng {
    let mut mixed = seed ^ part.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    mixed = (mixed ^ index.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)).rotate_left(29);
    StdRng::seed_from_u64(mixed)
}

/// A random address that looks like someone's on the internet (not private, not
/// reserved, not documentation).
fn public_address(rng: &mut impl Rng) -> String {
    loop {
        let address = Ipv4Addr::from(rng.random::<u32>());
        let [a, b, ..] = address.octets();
        let special = address.is_private()
            || address.is_loopback()
            || address.is_link_local()
            || address.is_multicast()
            || address.is_broadcast()
            || address.is_documentation()
            || address.is_unspecified()
            || a == 0
            || a >= 224
            || (a == 100 && (64..128).contains(&b))
            || (a == 198 && (18..20).contains(&b));
        if !special {
            return address.to_string();
        }
    }
}

const BOOTS: u64 = 1;
const SESSIONS: u64 = 2;
const PROBES: u64 = 3;
const ADMIN: u64 = 4;
const LOGS: u64 = 5;

fn tell(persona: &Persona<'_>, seed: u64) -> Story {
    let now = persona.now;
    let installed = persona.installed.min(now.saturating_sub(DAY));
    let first_day = installed / DAY + 1;
    let today = now / DAY;

    // The admin's two places and key, fixed for the server.
    let mut admin = rng_for(seed, ADMIN, 0);
    let homes = [public_address(&mut admin), public_address(&mut admin)];
    let fingerprint: String = (0..43)
        .map(|_| {
            const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            char::from(B64[admin.random_range(0..B64.len())])
        })
        .collect();
    let per_day = admin.random_range(10..60u64);

    // Boots: the install's first, then now and then a reboot (after updates). The
    // box's own start is added by [`add_boot`].
    let mut boots = vec![installed + 120 + installed % 480];
    for day in first_day..today {
        let mut rng = rng_for(seed, BOOTS, day);
        if rng.random_range(0..30) == 0 {
            boots.push(day * DAY + rng.random_range(5 * HOUR..23 * HOUR));
        }
    }

    let mut sessions = Vec::new();
    for day in first_day..=today {
        let mut rng = rng_for(seed, SESSIONS, day);
        if rng.random_range(0..3) != 0 {
            continue;
        }
        let start = day * DAY + rng.random_range(7 * HOUR..19 * HOUR);
        let length = rng.random_range(180..5_400);
        if start + length + 300 >= now {
            continue;
        }
        let root = rng.random_range(0..8) == 0;
        let sudo_count = if root { 0 } else { rng.random_range(0..3) };
        let mut sudo: Vec<(u64, &'static str)> = (0..sudo_count)
            .map(|_| {
                (
                    start + rng.random_range(30..length),
                    SUDO_COMMANDS[rng.random_range(0..SUDO_COMMANDS.len())],
                )
            })
            .collect();
        sudo.sort_unstable();
        sessions.push(Session {
            user: if root { "root" } else { "admin" },
            uid: if root { 0 } else { ADMIN_UID },
            from: homes[rng.random_range(0..homes.len())].clone(),
            port: rng.random_range(40_000..61_000),
            line: if rng.random_range(0..6) == 0 {
                "pts/1"
            } else {
                "pts/0"
            },
            start,
            end: start + length,
            sudo,
        });
    }

    // Scanners: only the weeks the logs still hold.
    let window = now.saturating_sub(LOG_WEEKS * 7 * DAY).max(installed);
    let mut probes = Vec::new();
    for day in window / DAY..=today {
        let mut rng = rng_for(seed, PROBES, day);
        for _ in 0..per_day {
            let time = day * DAY + rng.random_range(0..DAY);
            let probe = Probe {
                time,
                user: SCANNED_NAMES[rng.random_range(0..SCANNED_NAMES.len())],
                from: public_address(&mut rng),
                port: rng.random_range(1_024..65_535),
            };
            if (window..now.saturating_sub(10)).contains(&time) {
                probes.push(probe);
            }
        }
    }
    probes.sort_unstable_by_key(|probe| probe.time);
    Story {
        boots,
        sessions,
        probes,
        fingerprint,
    }
}

/// The PID a process started at `time` got: they grow with time from a few
/// hundred after each boot (a small server forks a process every 20 s or so).
fn pid_at(boots: &[u64], time: u64) -> u32 {
    let boot = boots
        .iter()
        .rev()
        .find(|boot| **boot <= time)
        .copied()
        .unwrap_or(0);
    let jitter = time.wrapping_mul(2_654_435_761) % 17;
    ((400 + (time - boot) / 20 + jitter) % 4_194_000) as u32
}

/// auth.log and syslog, rotated.
fn logs(persona: &Persona<'_>, story: &Story, seed: u64) -> Vec<PastFile> {
    let rng = &mut rng_for(seed, LOGS, 0);
    let pid = |time: u64| Some(pid_at(&story.boots, time));
    let now = persona.now;
    let mut auth = Log::new(persona.hostname);
    let mut sys = Log::new(persona.hostname);
    // Debian 12's rsyslog.conf also files cron's lines in cron.log.
    let mut cron = Log::new(persona.hostname);
    let since = now
        .saturating_sub(LOG_WEEKS * 7 * DAY)
        .max(persona.installed);
    let fingerprint = &story.fingerprint;
    // rsyslogd's own lines: at each boot, and when logrotate has it reopen its files
    // (Sundays just after midnight).
    let rsyslog_pids: Vec<u32> = story
        .boots
        .iter()
        .map(|_| rng.random_range(300..500))
        .collect();
    for (boot, pid) in story.boots.iter().zip(&rsyslog_pids) {
        if (since..now).contains(boot) {
            sys.line(*boot + 3, "rsyslogd", None, &rsyslog_note(*pid, "start"));
        }
    }
    let mut sunday = now / DAY * DAY;
    while sunday + ROTATED_AT > since {
        if syslog::weekday(sunday) == 0 {
            let running = story
                .boots
                .iter()
                .rposition(|boot| *boot <= sunday + ROTATED_AT);
            if let Some(pid) = running.map(|i| rsyslog_pids[i]) {
                sys.line(
                    sunday + ROTATED_AT + 1,
                    "rsyslogd",
                    None,
                    &rsyslog_note(pid, "rsyslogd was HUPed"),
                );
            }
        }
        sunday -= DAY;
    }
    // Cron: Debian's /etc/crontab, and PAM's session lines for each job.
    let mut hour = since / HOUR * HOUR;
    while hour < now {
        let (_, _, _, h) = syslog::clock(hour);
        let mut jobs = vec![(17 * 60, "cd / && run-parts --report /etc/cron.hourly")];
        if h == 6 {
            jobs.push((
                25 * 60,
                "test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }",
            ));
            if syslog::weekday(hour) == 0 {
                jobs.push((
                    47 * 60,
                    "test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.weekly; }",
                ));
            }
            if syslog::clock(hour).2 == 1 {
                jobs.push((52 * 60, "test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.monthly; }"));
            }
        }
        for (offset, command) in jobs {
            let time = hour + offset + 1;
            if time >= now || story.boots.iter().any(|b| time.abs_diff(*b) < 120) {
                continue;
            }
            let cron_pid = pid(time);
            auth.line(
                time,
                "CRON",
                cron_pid,
                "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
            );
            let run = format!("(root) CMD ({command})");
            sys.line(time, "CRON", cron_pid, &run);
            cron.line(time, "CRON", cron_pid, &run);
            auth.line(
                time,
                "CRON",
                cron_pid,
                "pam_unix(cron:session): session closed for user root",
            );
        }
        hour += HOUR;
    }
    for session in story.sessions.iter().filter(|s| s.start >= since) {
        let Session {
            user,
            uid,
            from,
            port,
            ..
        } = session;
        let pid = pid(session.start);
        auth.line(session.start, "sshd", pid, &format!("Accepted publickey for {user} from {from} port {port} ssh2: ED25519 SHA256:{fingerprint}"));
        auth.line(
            session.start,
            "sshd",
            pid,
            &format!(
                "pam_unix(sshd:session): session opened for user {user}(uid={uid}) by (uid=0)"
            ),
        );
        for (time, command) in &session.sudo {
            auth.line(
                *time,
                "sudo",
                None,
                &format!(
                    "   {user} : TTY={} ; PWD=/home/{user} ; USER=root ; COMMAND={command}",
                    session.line
                ),
            );
            auth.line(*time, "sudo", None, &format!("pam_unix(sudo:session): session opened for user root(uid=0) by {user}(uid={uid})"));
            auth.line(
                *time + rng.random_range(1..40),
                "sudo",
                None,
                "pam_unix(sudo:session): session closed for user root",
            );
        }
        auth.line(
            session.end,
            "sshd",
            pid,
            &format!("Received disconnect from {from} port {port}:11: disconnected by user"),
        );
        auth.line(
            session.end,
            "sshd",
            pid,
            &format!("Disconnected from user {user} {from} port {port}"),
        );
        auth.line(
            session.end,
            "sshd",
            pid,
            &format!("pam_unix(sshd:session): session closed for user {user}"),
        );
    }
    for probe in &story.probes {
        let Probe {
            time,
            user,
            from,
            port,
        } = probe;
        let pid = pid(*time);
        let known = matches!(*user, "root" | "admin");
        let user_field = if known {
            format!(" user={user}")
        } else {
            String::new()
        };
        if !known {
            auth.line(
                *time,
                "sshd",
                pid,
                &format!("Invalid user {user} from {from} port {port}"),
            );
            auth.line(
                *time + 2,
                "sshd",
                pid,
                "pam_unix(sshd:auth): check pass; user unknown",
            );
        }
        auth.line(*time + 2, "sshd", pid, &format!("pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={from} {user_field}"));
        let invalid = if known { "" } else { "invalid user " };
        auth.line(
            *time + 4,
            "sshd",
            pid,
            &format!("Failed password for {invalid}{user} from {from} port {port} ssh2"),
        );
        let who = if known {
            "authenticating user "
        } else {
            "invalid user "
        };
        auth.line(
            *time + 5,
            "sshd",
            pid,
            &format!("Connection closed by {who}{user} {from} port {port} [preauth]"),
        );
    }
    let mut files = Vec::new();
    for (name, log) in [("auth.log", auth), ("syslog", sys), ("cron.log", cron)] {
        files.extend(rotate(name, log.into_sorted(), now));
    }
    files
}

fn rsyslog_note(pid: u32, what: &str) -> String {
    format!(
        "[origin software=\"rsyslogd\" swVersion=\"8.2302.0\" x-pid=\"{pid}\" x-info=\"https://www.rsyslog.com\"] {what}"
    )
}

/// Splits a log at Debian's weekly rotations (logrotate's daily run at midnight,
/// weekly: Sundays), newest first: `name`, `name.1`, then `name.2.gz` to `.4.gz`.
fn rotate(name: &str, lines: Vec<(u64, String)>, now: u64) -> Vec<PastFile> {
    let mut boundary = weekly_rotation(now);
    let mut files = Vec::new();
    let mut lines = lines;
    for generation in 0..=4u32 {
        let cut = lines.partition_point(|(time, _)| *time < boundary);
        let week: Vec<(u64, String)> = lines.split_off(cut);
        let mtime = week.last().map_or(boundary, |(time, _)| *time);
        let mut text = String::new();
        for (_, line) in &week {
            text.push_str(line);
            text.push('\n');
        }
        let (path, data) = match generation {
            0 => (format!("var/log/{name}"), text.into_bytes()),
            1 => (format!("var/log/{name}.1"), text.into_bytes()),
            n => (format!("var/log/{name}.{n}.gz"), gzip(text.as_bytes())),
        };
        if generation == 0 || !week.is_empty() {
            files.push(PastFile {
                path,
                mode: 0o640,
                uid: 0,
                gid: ADM,
                mtime,
                data,
            });
        }
        if lines.is_empty() {
            break;
        }
        boundary -= 7 * DAY;
    }
    files
}

/// logrotate's last weekly run before `now`: Sunday, when cron's daily jobs run.
fn weekly_rotation(now: u64) -> u64 {
    let mut at = now / DAY * DAY + ROTATED_AT;
    while syslog::weekday(at) != 0 || at > now {
        at -= DAY;
    }
    at
}

/// logrotate's last monthly run before `now`: the 1st, when cron's daily jobs run.
fn monthly_rotation(now: u64) -> u64 {
    let at = syslog::month_start(now) + ROTATED_AT;
    if at > now {
        syslog::month_start(at - DAY) + ROTATED_AT
    } else {
        at
    }
}

/// logrotate's state file: when it last rotated each log (`/var/lib/logrotate/status`).
fn logrotate_status(persona: &Persona<'_>) -> PastFile {
    let now = persona.now;
    let stamp = |time: u64| {
        let (year, month, day, hour) = syslog::clock(time);
        format!(
            "{year}-{month}-{day}-{hour}:{}:{}",
            time % 3_600 / 60,
            time % 60
        )
    };
    let first = persona.installed / DAY * DAY + DAY + ROTATED_AT;
    let weekly = stamp(weekly_rotation(now).max(first));
    let monthly = stamp(monthly_rotation(now).max(first));
    let mut text = String::from("logrotate state -- version 2\n");
    for log in [
        "/var/log/syslog",
        "/var/log/auth.log",
        "/var/log/cron.log",
        "/var/log/kern.log",
        "/var/log/mail.log",
        "/var/log/user.log",
        "/var/log/dpkg.log",
        "/var/log/alternatives.log",
        "/var/log/apt/history.log",
        "/var/log/apt/term.log",
    ] {
        text.push_str(&format!("\"{log}\" {weekly}\n"));
    }
    for log in ["/var/log/wtmp", "/var/log/btmp"] {
        text.push_str(&format!("\"{log}\" {monthly}\n"));
    }
    PastFile {
        path: "var/lib/logrotate/status".to_owned(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: weekly_rotation(now).max(first),
        data: text.into_bytes(),
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

/// wtmp and btmp for this month and the last (rotated monthly), and lastlog.
fn login_records(persona: &Persona<'_>, story: &Story) -> Vec<PastFile> {
    let now = persona.now;
    let month_start = monthly_rotation(now);
    let previous_month_start = syslog::month_start(month_start - DAY) + ROTATED_AT;
    let mut wtmp: Vec<(u64, [u8; records::UTMP_SIZE])> = Vec::new();
    for (i, boot) in story.boots.iter().enumerate() {
        if i > 0 {
            let down = boot.saturating_sub(45);
            wtmp.push((
                down,
                utmp(
                    Kind::RunLevel,
                    0,
                    "~~",
                    "shutdown",
                    persona.kernel_release,
                    down,
                ),
            ));
        }
        wtmp.push((
            *boot,
            utmp(Kind::Boot, 0, "~", "reboot", persona.kernel_release, *boot),
        ));
    }
    for session in &story.sessions {
        let pid = pid_at(&story.boots, session.start) as i32;
        wtmp.push((
            session.start,
            utmp(
                Kind::User,
                pid,
                session.line,
                session.user,
                &session.from,
                session.start,
            ),
        ));
        wtmp.push((
            session.end,
            utmp(Kind::Dead, pid, session.line, "", "", session.end),
        ));
    }
    wtmp.sort_by_key(|(time, _)| *time);
    let btmp: Vec<(u64, [u8; records::UTMP_SIZE])> = story
        .probes
        .iter()
        .map(|p| {
            (
                p.time + 4,
                utmp(
                    Kind::Login,
                    pid_at(&story.boots, p.time) as i32,
                    "ssh:notty",
                    p.user,
                    &p.from,
                    p.time + 4,
                ),
            )
        })
        .collect();

    let mut files = Vec::new();
    for (name, records, mode) in [("wtmp", wtmp, 0o664), ("btmp", btmp, 0o660)] {
        let current: Vec<_> = records.iter().filter(|(t, _)| *t >= month_start).collect();
        let previous: Vec<_> = records
            .iter()
            .filter(|(t, _)| (previous_month_start..month_start).contains(t))
            .collect();
        for (path, part, fallback) in [
            (format!("var/log/{name}"), current, month_start),
            (format!("var/log/{name}.1"), previous, previous_month_start),
        ] {
            if part.is_empty() && path.ends_with(".1") {
                continue;
            }
            files.push(PastFile {
                path,
                mode,
                uid: 0,
                gid: UTMP,
                mtime: part.last().map_or(fallback, |(t, _)| *t),
                data: part.iter().flat_map(|(_, r)| r.iter().copied()).collect(),
            });
        }
    }
    let mut lastlog = vec![0u8; (ADMIN_UID as usize + 1) * LASTLOG_SIZE];
    let mut last_change = persona.installed;
    for session in &story.sessions {
        let offset = session.uid as usize * LASTLOG_SIZE;
        lastlog[offset..offset + LASTLOG_SIZE].copy_from_slice(&records::lastlog(
            session.start,
            session.line,
            &session.from,
        ));
        last_change = last_change.max(session.start);
    }
    files.push(PastFile {
        path: "var/log/lastlog".to_owned(),
        mode: 0o664,
        uid: 0,
        gid: UTMP,
        mtime: last_change,
        data: lastlog,
    });
    files
}

fn utmp(
    kind: Kind,
    pid: i32,
    line: &str,
    user: &str,
    host: &str,
    time: u64,
) -> [u8; records::UTMP_SIZE] {
    Utmp {
        kind,
        pid,
        line,
        user,
        host,
        time,
        micros: (time.wrapping_mul(2_654_435_761) % 1_000_000) as u32,
    }
    .bytes()
}

#[cfg(test)]
mod tests;
