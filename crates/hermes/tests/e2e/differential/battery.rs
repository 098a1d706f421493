//! The probe battery, one list for both machines: the commands a careful intruder
//! runs, and how each answer becomes comparable facts (what legitimately differs
//! per machine or run, such as times, PIDs, addresses and random ids, is reduced to
//! its shape).

use std::collections::BTreeSet;

/// A fact: its name (the table's "probe" column) and its normalised value.
pub type Fact = (String, String);

/// What one probe printed and its exit status.
pub struct Answer {
    pub output: String,
    pub status: i32,
}

/// One probe: a name, a shell command, and how its answer becomes facts.
pub struct Probe {
    pub name: &'static str,
    pub command: &'static str,
    pub facts: fn(&Answer) -> Vec<Fact>,
}

/// The battery of the first login, in table order. The project's name is assembled
/// at run time (`n=her; n=${n}mes`) so that the probing command line, which `ps`
/// shows on the machine, does not itself contain it.
pub const FIRST_LOGIN: &[Probe] = &[
    // First, and waiting for the boot to finish: an intruder meets a machine that is
    // up, not one still starting its units.
    Probe {
        name: "is-system-running",
        command: "systemctl is-system-running --wait",
        facts: |a| vec![fact("systemctl is-system-running", first_line(a))],
    },
    Probe {
        name: "uname",
        command: "for f in s n r v m o; do echo \"$f=$(uname -$f)\"; done",
        facts: uname,
    },
    Probe {
        name: "os-release",
        command: "cat /etc/os-release; echo debian_version=$(cat /etc/debian_version)",
        facts: os_release,
    },
    Probe {
        name: "ps",
        command: "ps -ef --forest",
        facts: ps_forest,
    },
    Probe {
        name: "pid1",
        command: "readlink /proc/1/exe",
        facts: |a| vec![fact("readlink /proc/1/exe", first_line(a))],
    },
    Probe {
        name: "running-services",
        command: "systemctl list-units --type=service --state=running --no-legend --plain",
        facts: running_services,
    },
    Probe {
        name: "journal",
        command: "journalctl -n 5 --no-pager",
        facts: journal,
    },
    Probe {
        name: "machine-id",
        command: "cat /etc/machine-id",
        facts: machine_id,
    },
    Probe {
        name: "free",
        command: "free -b",
        facts: free,
    },
    Probe {
        name: "meminfo",
        command: "grep -E '^(MemTotal|SwapTotal):' /proc/meminfo; echo nproc=$(nproc)",
        facts: meminfo,
    },
    Probe {
        name: "uptime",
        command: "uptime; echo proc=$(cut -d' ' -f1 /proc/uptime); echo pid1=$(ps -o etimes= -p 1); echo pid1start=$(cut -d' ' -f22 /proc/1/stat); echo lstart=$(date -d \"$(ps -o lstart= -p 1)\" +%s); echo now=$(date +%s)",
        facts: uptime,
    },
    Probe {
        name: "hosts",
        command: "cat /etc/hosts",
        facts: hosts,
    },
    Probe {
        name: "resolv",
        command: "cat /etc/resolv.conf",
        facts: resolv,
    },
    Probe {
        name: "dev",
        command: "ls -la /dev",
        facts: dev,
    },
    Probe {
        name: "mount",
        command: "mount",
        facts: mount,
    },
    Probe {
        name: "mountinfo",
        command: "cat /proc/self/mountinfo",
        facts: mountinfo,
    },
    Probe {
        name: "capeff",
        command: "grep CapEff /proc/self/status",
        facts: |a| vec![fact("CapEff of root", first_line(a))],
    },
    Probe {
        name: "dmesg",
        command: "dmesg >/dev/null",
        facts: |a| vec![fact("dmesg exit status", a.status.to_string())],
    },
    Probe {
        name: "sudo",
        command: "sudo -l",
        facts: |a| vec![fact("sudo -l", lines(a).join(" / "))],
    },
    Probe {
        name: "md5sum",
        command: "s=$(date +%s%N); head -c 52428800 /dev/zero | md5sum; e=$(date +%s%N); echo ms=$(( (e - s) / 1000000 ))",
        facts: md5sum,
    },
    Probe {
        name: "grep-name",
        command: NAMED_FILES,
        facts: |a| {
            vec![fact(
                "files naming the project (grep -rIil /), Debian's unchanged package files aside",
                list_or_none(a),
            )]
        },
    },
    Probe {
        name: "ps-name",
        command: "n=her; n=${n}mes; p=$(ps -eo args=); printf '%s\\n' \"$p\" | grep -i \"$n\"",
        facts: |a| {
            vec![fact(
                "processes naming the project (ps -eo args)",
                list_or_none(a),
            )]
        },
    },
];

/// Every file naming the project, less Debian's own package files as shipped
/// (Debian legitimately names Hermes hardware in hwdb, the kernel's config, locale
/// and Unicode tables) and the kernel's generated module index: each other hit is
/// listed as in no package or changed from its package. Merged-/usr paths are looked
/// up as the package records them (/lib/..., /bin/...).
const NAMED_FILES: &str = r#"n=her; n=${n}mes
grep -rIil -D skip --exclude-dir=proc --exclude-dir=sys "$n" / 2>/dev/null | sort | while read -r f; do
  case "$f" in /usr/lib/modules/*|/lib/modules/*) continue;; esac
  p=; for g in "$f" "${f#/usr}"; do p=$(dpkg -S "$g" 2>/dev/null | head -n1 | cut -d: -f1); [ -n "$p" ] && break; done
  if [ -z "$p" ]; then echo "$f (in no package)"; continue; fi
  want=$(cat /var/lib/dpkg/info/$p.md5sums /var/lib/dpkg/info/$p:*.md5sums 2>/dev/null | grep -F -e " ${f#/}" -e " ${g#/}" | head -n1 | cut -d' ' -f1)
  [ "$want" = "$(md5sum < "$f" | cut -d' ' -f1)" ] || echo "$f (changed from $p)"
done"#;

/// The battery of the second login, a few seconds later.
pub const SECOND_LOGIN: &[Probe] = &[Probe {
    name: "uptime-again",
    command: "echo proc=$(cut -d' ' -f1 /proc/uptime); echo pid1start=$(cut -d' ' -f22 /proc/1/stat)",
    facts: |_| Vec::new(),
}];

/// The facts that compare the two logins: the machine kept running in between.
pub fn between_logins(first: &Answer, second: &Answer) -> Vec<Fact> {
    let (Some(up1), Some(up2)) = (seconds(first, "proc="), seconds(second, "proc=")) else {
        return vec![fact("uptime grows between logins", "unreadable")];
    };
    // PID 1's start time (clock ticks after boot, /proc/1/stat): the same process
    // on both logins, whatever /proc/uptime says.
    let (start1, start2) = (seconds(first, "pid1start="), seconds(second, "pid1start="));
    vec![
        fact("uptime grows between logins", yes_no(up2 > up1)),
        fact(
            "PID 1 lives on between logins (same start time)",
            match (start1, start2) {
                (Some(a), Some(b)) => yes_no(a == b).to_owned(),
                _ => "unreadable".to_owned(),
            },
        ),
    ]
}

/// The command one login runs: every probe between markers, its exit status after it.
pub fn script(probes: &[Probe]) -> String {
    probes
        .iter()
        .map(|p| {
            format!(
                "echo '@@probe {}'; {{ {}\n}} 2>&1; echo \"@@status $?\"\n",
                p.name, p.command
            )
        })
        .collect()
}

/// The answers of a login's output, by probe name.
pub fn answers(output: &str) -> Vec<(String, Answer)> {
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in output.lines() {
        if let Some(name) = line.strip_prefix("@@probe ") {
            current = Some((name.to_owned(), Vec::new()));
        } else if let Some(status) = line.strip_prefix("@@status ") {
            if let Some((name, body)) = current.take() {
                out.push((
                    name,
                    Answer {
                        output: body.join("\n"),
                        status: status.trim().parse().unwrap_or(-1),
                    },
                ));
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push(line);
        }
    }
    out
}

/// Every fact of a login's output, in battery order; a probe with no answer (the
/// login broke off) gives a fact saying so.
pub fn facts(probes: &[Probe], output: &str) -> Vec<Fact> {
    let answers = answers(output);
    let mut out = Vec::new();
    for probe in probes {
        match answers.iter().find(|(name, _)| name == probe.name) {
            Some((_, answer)) => out.extend((probe.facts)(answer)),
            None => out.push(fact(probe.name, "(no answer)")),
        }
    }
    out
}

/// The answer of one probe, for the facts that span logins.
pub fn answer_of(output: &str, name: &str) -> Option<Answer> {
    answers(output)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, a)| a)
}

fn fact(name: &str, value: impl Into<String>) -> Fact {
    (name.to_owned(), value.into())
}

fn lines(a: &Answer) -> Vec<String> {
    a.output
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

fn first_line(a: &Answer) -> String {
    lines(a).into_iter().next().unwrap_or_default()
}

fn list_or_none(a: &Answer) -> String {
    let lines = lines(a);
    if lines.is_empty() {
        "none".to_owned()
    } else {
        lines.join(", ")
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The number after `prefix` on its line (e.g. `proc=123.45`).
fn seconds(a: &Answer, prefix: &str) -> Option<f64> {
    a.output
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// The `key=value` lines of an answer.
fn value<'a>(a: &'a Answer, key: &str) -> Option<&'a str> {
    a.output.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"'))
    })
}

fn uname(a: &Answer) -> Vec<Fact> {
    ["s", "n", "r", "v", "m", "o"]
        .iter()
        .map(|f| fact(&format!("uname -{f}"), value(a, f).unwrap_or("(none)")))
        .collect()
}

fn os_release(a: &Answer) -> Vec<Fact> {
    [
        "PRETTY_NAME",
        "ID",
        "VERSION_ID",
        "VERSION_CODENAME",
        "debian_version",
    ]
    .iter()
    .map(|k| fact(&format!("os-release {k}"), value(a, k).unwrap_or("(none)")))
    .collect()
}

/// One `ps -ef` row: PID, PPID, user and command (tree drawing removed).
struct Row {
    pid: u32,
    ppid: u32,
    user: String,
    cmd: String,
}

fn ps_rows(a: &Answer) -> Vec<Row> {
    a.output
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let user = parts.next()?.to_owned();
            let pid = parts.next()?.parse().ok()?;
            let ppid = parts.next()?.parse().ok()?;
            // C STIME TTY TIME, then the command.
            let rest: Vec<&str> = parts.skip(4).collect();
            let cmd = rest
                .join(" ")
                .trim_start_matches(['\\', '_', '|', ' '])
                .to_owned();
            Some(Row {
                pid,
                ppid,
                user,
                cmd,
            })
        })
        .collect()
}

/// A command with what varies per run reduced: sshd's count of pending logins, the
/// probing script itself.
fn command_shape(cmd: &str) -> String {
    if cmd.starts_with("bash -c ") {
        return "bash -c <the probes>".to_owned();
    }
    let words: Vec<String> = cmd
        .split_whitespace()
        .map(|w| {
            if w.chars().all(|c| c.is_ascii_digit()) {
                "N".to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect();
    words.join(" ")
}

fn ps_forest(a: &Answer) -> Vec<Fact> {
    let rows = ps_rows(a);
    let kernel = |r: &Row| r.pid == 2 || r.ppid == 2;
    let pid1 = rows
        .iter()
        .find(|r| r.pid == 1)
        .map(|r| r.cmd.clone())
        .unwrap_or_else(|| "(none)".to_owned());
    // One fact per service (a child of PID 1), so that each difference is listed
    // and judged on its own.
    let services: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.ppid == 1 && !kernel(r))
        .map(|r| format!("ps: service {} {}", r.user, command_shape(&r.cmd)))
        .collect();
    // The session: from ps itself up to PID 1.
    let mut chain = Vec::new();
    let mut at = rows.iter().find(|r| r.cmd.starts_with("ps -ef --forest"));
    let mut guard = 0;
    while let Some(row) = at {
        chain.push(format!("{} {}", row.user, command_shape(&row.cmd)));
        guard += 1;
        if row.pid == 1 || guard > 32 {
            break;
        }
        at = rows.iter().find(|r| r.pid == row.ppid);
    }
    chain.reverse();
    let kernel_threads = rows.iter().filter(|r| kernel(r)).count();
    let mut out = vec![
        fact("ps: PID 1", pid1),
        fact(
            "ps: kernel threads",
            if kernel_threads > 0 {
                "present"
            } else {
                "none"
            },
        ),
        fact("ps: the session's ancestry", chain.join(" > ")),
    ];
    out.extend(services.into_iter().map(|name| fact(&name, "running")));
    out
}

/// Whether `systemctl` answers, then one fact per running service unit.
fn running_services(a: &Answer) -> Vec<Fact> {
    let units: BTreeSet<&str> = a
        .output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|u| u.ends_with(".service"))
        .collect();
    let mut out = vec![fact(
        "systemctl list-units",
        if a.status == 0 {
            "answers".to_owned()
        } else {
            format!("exit {}: {}", a.status, first_line(a))
        },
    )];
    out.extend(
        units
            .into_iter()
            .map(|u| fact(&format!("systemctl: {u}"), "running")),
    );
    out
}

/// Journal lines in the short format: `Mon DD HH:MM:SS host ident[pid]: text`.
fn journal(a: &Answer) -> Vec<Fact> {
    let lines = lines(a);
    let dated = lines
        .iter()
        .filter(|l| {
            let parts: Vec<&str> = l.splitn(5, ' ').collect();
            parts.len() == 5
                && parts[0].len() == 3
                && parts[2].len() == 8
                && parts[2].chars().filter(|c| *c == ':').count() == 2
                && parts[3] == "web-prod-01"
        })
        .count();
    let value = if dated == 0 {
        format!(
            "exit {}: {}",
            a.status,
            lines.first().cloned().unwrap_or_default()
        )
    } else {
        format!("exit {}, {dated} dated lines from web-prod-01", a.status)
    };
    vec![fact("journalctl -n 5", value)]
}

fn machine_id(a: &Answer) -> Vec<Fact> {
    let id = first_line(a);
    let value = if id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) {
        "32 hex".to_owned()
    } else if a.status != 0 {
        "missing".to_owned()
    } else {
        format!("not 32 hex: {id:?}")
    };
    vec![fact("/etc/machine-id", value)]
}

/// A memory size against the box's limit: within it (and more than half of it, as a
/// VM of that size shows) or not.
fn against_limit(bytes: u64) -> String {
    let limit = hermes_test_support::refvm::MEMORY_MIB * 1024 * 1024;
    if bytes <= limit && bytes > limit / 2 {
        format!(
            "within the {} MiB limit",
            hermes_test_support::refvm::MEMORY_MIB
        )
    } else {
        format!("{} MiB", bytes / (1024 * 1024))
    }
}

fn free(a: &Answer) -> Vec<Fact> {
    let lines = lines(a);
    let number = |prefix: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let swap = match number("Swap:") {
        Some(0) => "none".to_owned(),
        Some(b) => format!("{} MiB", b / (1024 * 1024)),
        None => "(no Swap line)".to_owned(),
    };
    vec![
        fact(
            "free -b columns",
            lines.first().cloned().unwrap_or_default(),
        ),
        fact(
            "free -b Mem total",
            number("Mem:").map_or("(no Mem line)".to_owned(), against_limit),
        ),
        fact("free -b Swap total", swap),
    ]
}

fn meminfo(a: &Answer) -> Vec<Fact> {
    let kib = |key: &str| {
        a.output
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    vec![
        fact(
            "MemTotal (/proc/meminfo)",
            kib("MemTotal:").map_or("(none)".to_owned(), |k| against_limit(k * 1024)),
        ),
        fact("nproc", value(a, "nproc").unwrap_or("(none)")),
    ]
}

fn uptime(a: &Answer) -> Vec<Fact> {
    let line = first_line(a);
    let shaped = line.contains(" up ") && line.contains("load average: ");
    let up = seconds(a, "proc=");
    let age = seconds(a, "pid1=");
    let booted = match (up, age) {
        (Some(u), Some(p)) if (u - p).abs() <= 60.0 => "yes".to_owned(),
        (Some(u), Some(p)) => format!("no: PID 1 is {:.0} s younger than the kernel", u - p),
        _ => "unreadable".to_owned(),
    };
    // ps's START is btime (/proc/stat) plus the start time: with the host's btime
    // under a clock of the box's own it lands at the host's boot instead.
    let started = match (up, seconds(a, "lstart="), seconds(a, "now=")) {
        (Some(u), Some(l), Some(n)) if (l - (n - u)).abs() <= 60.0 => "yes".to_owned(),
        (Some(u), Some(l), Some(n)) => format!("no: {:.0} s from the boot", l - (n - u)),
        _ => "unreadable".to_owned(),
    };
    vec![
        fact("uptime format", yes_no(shaped)),
        fact("uptime > 0", yes_no(up.is_some_and(|u| u > 0.0))),
        fact("PID 1 started with the kernel (uptime vs etimes)", booted),
        fact(
            "PID 1's START in ps is the boot (lstart vs now - uptime)",
            started,
        ),
    ]
}

fn hosts(a: &Answer) -> Vec<Fact> {
    let entries: Vec<String> = lines(a)
        .into_iter()
        .filter(|l| !l.starts_with('#'))
        .collect();
    vec![fact("/etc/hosts", entries.join(" / "))]
}

fn resolv(a: &Answer) -> Vec<Fact> {
    let lines: Vec<String> = lines(a)
        .into_iter()
        .filter(|l| !l.starts_with('#'))
        .collect();
    let keywords: BTreeSet<&str> = lines.iter().filter_map(|l| l.split(' ').next()).collect();
    let servers = lines
        .iter()
        .filter(|l| l.starts_with("nameserver "))
        .count();
    vec![fact(
        "/etc/resolv.conf",
        format!(
            "{servers} nameserver(s); keywords: {}",
            keywords.into_iter().collect::<Vec<_>>().join(" ")
        ),
    )]
}

/// The entries of `ls -la /dev`, digits collapsed (tty0..tty63 are one "ttyN").
fn dev(a: &Answer) -> Vec<Fact> {
    // The name is the last field (device nodes have "major, minor" where files have
    // a size), before " -> " for links.
    let names: BTreeSet<String> = a
        .output
        .lines()
        .skip(1)
        .filter_map(|l| l.split(" -> ").next()?.split_whitespace().last())
        .filter(|n| *n != "." && *n != "..")
        .map(|n| {
            let mut out = String::new();
            for c in n.chars() {
                if c.is_ascii_digit() {
                    if !out.ends_with('N') {
                        out.push('N');
                    }
                } else {
                    out.push(c);
                }
            }
            out
        })
        .collect();
    let pseudo = [
        "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty",
        "urandom", "zero",
    ];
    let missing: Vec<&str> = pseudo
        .iter()
        .copied()
        .filter(|p| !names.contains(*p))
        .collect();
    let log = names.contains("log");
    let console = names.contains("console");
    let hardware: Vec<String> = names
        .into_iter()
        .filter(|n| !pseudo.contains(&n.as_str()) && n != "log" && n != "console")
        .collect();
    vec![
        fact(
            "/dev: the standard pseudo devices",
            if missing.is_empty() {
                "all present".to_owned()
            } else {
                format!("missing {}", missing.join(" "))
            },
        ),
        fact("/dev/console", if console { "present" } else { "absent" }),
        fact(
            "/dev/log (the syslog socket)",
            if log { "present" } else { "absent" },
        ),
        fact("/dev: other entries", hardware.join(" ")),
    ]
}

fn mount(a: &Answer) -> Vec<Fact> {
    let root = a
        .output
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("/"))
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap_or("(none)")
        .to_owned();
    vec![fact("mount: / filesystem type", root)]
}

/// Filesystems only the kernel's own mounts provide (systemd mounts them on a real
/// machine; a container has no business with them).
const KERNEL_FILESYSTEMS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "configfs",
    "debugfs",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "pstore",
    "securityfs",
    "tracefs",
];

fn mountinfo(a: &Answer) -> Vec<Fact> {
    // Fields: id parent major:minor root mountpoint options [optional...] - type source super.
    let mut kernel = BTreeSet::new();
    let mut other = Vec::new();
    let mut etc = BTreeSet::new();
    let mut cgroup = BTreeSet::new();
    for line in a.output.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let point = left.split_whitespace().nth(4).unwrap_or("");
        let fs = right.split_whitespace().next().unwrap_or("").to_owned();
        if point == "/" {
            continue;
        }
        if point.starts_with("/etc/") {
            etc.insert(point.to_owned());
        }
        if fs.starts_with("cgroup") {
            cgroup.insert(fs.clone());
        }
        if KERNEL_FILESYSTEMS.contains(&fs.as_str()) {
            kernel.insert(fs);
        } else if !fs.starts_with("cgroup") {
            other.push(format!("mount: {fs} on {point}"));
        }
    }
    let join = |s: BTreeSet<String>| {
        if s.is_empty() {
            "none".to_owned()
        } else {
            s.into_iter().collect::<Vec<_>>().join(", ")
        }
    };
    let mut out = vec![
        fact("mountinfo: kernel filesystems", join(kernel)),
        fact("mountinfo: cgroup filesystems", join(cgroup)),
        fact("mountinfo: files mounted over /etc", join(etc)),
    ];
    // One fact per other mount (the files over /etc are the engine's, judged above).
    other.sort();
    other.dedup();
    out.extend(
        other
            .into_iter()
            .filter(|m| !m.contains(" on /etc/"))
            .map(|m| fact(&m, "mounted")),
    );
    out
}

fn md5sum(a: &Answer) -> Vec<Fact> {
    let hash = first_line(a)
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    let time = match seconds(a, "ms=") {
        Some(ms) if ms < 500.0 => "under 0.5 s".to_owned(),
        Some(ms) if ms < 2000.0 => "0.5 to 2 s".to_owned(),
        Some(ms) => format!("{:.1} s", ms / 1000.0),
        None => "unreadable".to_owned(),
    };
    vec![
        fact("md5sum of 50 MB", hash),
        fact("md5sum of 50 MB: time", time),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(output: &str) -> Answer {
        Answer {
            output: output.to_owned(),
            status: 0,
        }
    }

    fn value_of<'a>(facts: &'a [Fact], name: &str) -> &'a str {
        facts
            .iter()
            .find(|(n, _)| n == name)
            .map_or("(none)", |(_, v)| v.as_str())
    }

    #[test]
    fn a_login_splits_into_answers_with_their_statuses() {
        let script = script(&FIRST_LOGIN[..2]);
        assert!(script.starts_with("echo '@@probe is-system-running'; { "));
        let answers = answers("@@probe a\nx\ny\n@@status 0\n@@probe b\n@@status 127\n");
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[0].1.output, "x\ny");
        assert_eq!(answers[1].1.status, 127);
        // A probe that never answered is a fact of its own.
        let facts = facts(&FIRST_LOGIN[..1], "");
        assert_eq!(facts, vec![fact("is-system-running", "(no answer)")]);
    }

    #[test]
    fn dev_names_are_read_past_device_numbers_and_links() {
        let facts = dev(&answer(
            "total 0\n\
             drwxr-xr-x 5 root root 340 Dec  5 16:36 .\n\
             crw------- 1 root root 5, 1 Dec  5 16:36 console\n\
             lrwxrwxrwx 1 root root 13 Dec  5 16:36 fd -> /proc/self/fd\n\
             crw-rw-rw- 1 root root 1, 3 Dec  5 16:36 null\n\
             crw--w---- 1 root tty 4, 1 Dec  5 16:36 tty1\n\
             crw--w---- 1 root tty 4, 12 Dec  5 16:36 tty12\n",
        ));
        assert!(value_of(&facts, "/dev: the standard pseudo devices").starts_with("missing full "));
        assert_eq!(value_of(&facts, "/dev: other entries"), "ttyN");
        assert_eq!(value_of(&facts, "/dev/log (the syslog socket)"), "absent");
        assert_eq!(value_of(&facts, "/dev/console"), "present");
    }

    #[test]
    fn ps_gives_pid_1_services_and_the_sessions_ancestry() {
        let facts = ps_forest(&answer(
            "UID          PID    PPID  C STIME TTY          TIME CMD\n\
             root           2       0  0 16:35 ?        00:00:00 [kthreadd]\n\
             root           3       2  0 16:35 ?        00:00:00  \\_ [rcu_gp]\n\
             root           1       0  0 16:35 ?        00:00:04 /sbin/init\n\
             root         306       1  0 16:36 ?        00:00:00 sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups\n\
             root         382     306  0 16:36 ?        00:00:00  \\_ sshd: root@notty\n\
             root         388     382  0 16:36 ?        00:00:00      \\_ bash -c echo '@@probe ps'\n\
             root         391     388  0 16:36 ?        00:00:00          \\_ ps -ef --forest\n",
        ));
        assert_eq!(value_of(&facts, "ps: PID 1"), "/sbin/init");
        assert_eq!(value_of(&facts, "ps: kernel threads"), "present");
        assert_eq!(
            value_of(
                &facts,
                "ps: service root sshd: /usr/sbin/sshd -D [listener] N of 10-100 startups"
            ),
            "running"
        );
        assert_eq!(
            value_of(&facts, "ps: the session's ancestry"),
            "root /sbin/init > root sshd: /usr/sbin/sshd -D [listener] N of 10-100 startups > root sshd: root@notty > root bash -c <the probes> > root ps -ef --forest"
        );
    }

    #[test]
    fn mountinfo_sorts_kernel_cgroup_etc_and_other_mounts() {
        let facts = mountinfo(&answer(
            "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
             23 22 0:21 / /sys rw,nosuid - sysfs sysfs rw\n\
             24 23 0:7 / /sys/kernel/debug rw - debugfs debugfs rw\n\
             25 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
             26 22 254:0 /x/hosts /etc/hosts rw - ext4 /dev/vda rw\n",
        ));
        assert_eq!(value_of(&facts, "mountinfo: kernel filesystems"), "debugfs");
        assert_eq!(value_of(&facts, "mountinfo: cgroup filesystems"), "cgroup2");
        assert_eq!(
            value_of(&facts, "mountinfo: files mounted over /etc"),
            "/etc/hosts"
        );
        assert_eq!(value_of(&facts, "mount: sysfs on /sys"), "mounted");
        assert_eq!(value_of(&facts, "mount: ext4 on /etc/hosts"), "(none)");
    }

    #[test]
    fn memory_is_judged_against_the_limit() {
        assert_eq!(against_limit(203 * 1024 * 1024), "within the 256 MiB limit");
        assert_eq!(against_limit(24105 * 1024 * 1024), "24105 MiB");
        assert_eq!(against_limit(100 * 1024 * 1024), "100 MiB");
    }
}
