//! Fact by fact: the reference machine's value against the box's, each difference
//! either allowed (a container cannot change it: the reason is here) or a failure.

use super::battery::Fact;

/// Why Docker's masked paths may differ.
const MASKED: &str = "Docker masks these /proc and /sys paths (or mounts them read-only) in every container; unmasking them (systempaths=unconfined) would hand the box the host's kernel knobs";
/// Why terminals' getty may differ.
const NO_TERMINALS: &str =
    "a container has no consoles or serial lines (tty1, ttyS0) for a getty to run on";
/// Why udev may differ.
const NO_UDEV: &str =
    "udev manages hardware devices; a container has none (systemd skips udev in one)";

/// Why root's capabilities may differ.
const ROOT_BOUNDS: &str = "root in the box holds what acts on the box's own files and processes (Docker's defaults less MKNOD, NET_RAW, SETFCAP, AUDIT_WRITE); what reaches the host's kernel (SYS_NICE, SYSLOG for dmesg, SYS_ADMIN...) is withheld (SECURITY.md, Root in the box)";
/// Why systemd's per-unit mounts may differ.
const NO_MOUNTS: &str = "systemd mounts a ramfs for each unit's credentials; root in the box may not mount (no CAP_SYS_ADMIN), so systemd runs those units without one";
/// Why timesyncd may differ.
const LXCFS_MOUNT: &str = "LXCFS's files are bind-mounted over the box's /proc files so that they tell its own memory, CPU and uptime; a container cannot hide a mount from /proc/self/mountinfo";
const NO_CLOCK: &str = "systemd-timesyncd does not run in a container (ConditionVirtualization=!container): the host keeps the one clock";

/// Why /dev/console may be missing.
const NO_CONSOLE: &str = "a container has no console: the engine makes one only for a container with a terminal, which takes the box's pts/0 (sessions would show pts/1), and the host's console device (5,1), which the engine's device rules let through, would write to the host's console";

/// Why the login's runtime directory is not a mount of its own.
const NO_RUNTIME_MOUNT: &str = "logind mounts a tmpfs of its own on /run/user/UID at a login; root in the box may not mount (no CAP_SYS_ADMIN), so the directory is there, on /run's tmpfs, without a mount";

/// What a container cannot change, whatever Hermes does: fact name and reason.
pub const ALLOWED: &[(&str, &str)] = &[
    ("/dev/console", NO_CONSOLE),
    ("mount: tmpfs on /run/user/0", NO_RUNTIME_MOUNT),
    ("CapEff of root", ROOT_BOUNDS),
    ("dmesg exit status", ROOT_BOUNDS),
    (
        "mount: ramfs on /run/credentials/systemd-sysctl.service",
        NO_MOUNTS,
    ),
    (
        "mount: ramfs on /run/credentials/systemd-sysusers.service",
        NO_MOUNTS,
    ),
    (
        "mount: ramfs on /run/credentials/systemd-tmpfiles-setup-dev.service",
        NO_MOUNTS,
    ),
    (
        "mount: ramfs on /run/credentials/systemd-tmpfiles-setup.service",
        NO_MOUNTS,
    ),
    (
        "uname -r",
        "kernel identity: a container runs the host's kernel",
    ),
    (
        "uname -v",
        "kernel identity: a container runs the host's kernel",
    ),
    (
        "ps: kernel threads",
        "a PID namespace never shows kernel threads (kthreadd and its children)",
    ),
    (
        "ps: service root /sbin/agetty -o -p -- \\u --noclear - linux",
        NO_TERMINALS,
    ),
    (
        "ps: service root /sbin/agetty -o -p -- \\u --keep-baud 115200,57600,38400,9600 - vt220",
        NO_TERMINALS,
    ),
    ("systemctl: getty@tty1.service", NO_TERMINALS),
    ("systemctl: serial-getty@ttyS0.service", NO_TERMINALS),
    ("ps: service root /lib/systemd/systemd-udevd", NO_UDEV),
    (
        "ps: service systemd+ /lib/systemd/systemd-timesyncd",
        NO_CLOCK,
    ),
    ("systemctl: systemd-timesyncd.service", NO_CLOCK),
    ("systemctl: systemd-udevd.service", NO_UDEV),
    (
        "ps: service root dhclient -4 -v -i -pf /run/dhclient.ens3.pid -lf /var/lib/dhcp/dhclient.ens3.leases -I -df /var/lib/dhcp/dhclient6.ens3.leases ens3",
        "the box's address is set from outside (Docker, the egress link): there is no DHCP server on its link to ask",
    ),
    (
        "mount: / filesystem type",
        "the root of a Docker container is the engine's overlay",
    ),
    (
        "mountinfo: kernel filesystems",
        "debugfs, tracefs, securityfs, pstore, bpf, configfs... are the kernel's: a container must not mount them",
    ),
    (
        "mountinfo: cgroup filesystems",
        "a container sees the host's cgroup version (this host: v1 hybrid; on a v2 host both show cgroup2)",
    ),
    (
        "mount: tmpfs on /sys/fs/cgroup",
        "the host's cgroup v1 layout (a tmpfs holding the controllers); absent on a v2 host",
    ),
    (
        "mountinfo: files mounted over /etc",
        "Docker bind-mounts /etc/hostname, /etc/hosts and /etc/resolv.conf into every container",
    ),
    (
        "mount: tmpfs on /dev",
        "a container's /dev is a tmpfs the engine fills (devtmpfs is the kernel's)",
    ),
    ("mount: tmpfs on /proc/acpi", MASKED),
    ("mount: tmpfs on /proc/keys", MASKED),
    ("mount: tmpfs on /proc/timer_list", MASKED),
    ("mount: tmpfs on /proc/scsi", MASKED),
    ("mount: tmpfs on /sys/firmware", MASKED),
    ("mount: proc on /proc/bus", MASKED),
    ("mount: proc on /proc/fs", MASKED),
    ("mount: proc on /proc/irq", MASKED),
    ("mount: proc on /proc/sys", MASKED),
    ("mount: proc on /proc/sysrq-trigger", MASKED),
    (
        "/dev: other entries",
        "a container gets no hardware device nodes (disk, ttys, input, rtc, mem, kmsg...), only the pseudo devices",
    ),
    ("mount: fuse.lxcfs on /proc/cpuinfo", LXCFS_MOUNT),
    ("mount: fuse.lxcfs on /proc/diskstats", LXCFS_MOUNT),
    ("mount: fuse.lxcfs on /proc/loadavg", LXCFS_MOUNT),
    ("mount: fuse.lxcfs on /proc/meminfo", LXCFS_MOUNT),
    ("mount: fuse.lxcfs on /proc/stat", LXCFS_MOUNT),
    ("mount: fuse.lxcfs on /proc/swaps", LXCFS_MOUNT),
    ("mount: fuse.lxcfs on /proc/uptime", LXCFS_MOUNT),
    (
        "mount: fuse.lxcfs on /sys/devices/system/cpu/online",
        LXCFS_MOUNT,
    ),
    (
        "md5sum of 50 MB: time",
        "depends on the accelerator (KVM, or emulation where KVM cannot run Debian's kernel) and the host's load; the box's CPU share is point 3's",
    ),
];

/// How one fact compares.
#[derive(Debug, PartialEq)]
pub enum Status {
    Same,
    Allowed(&'static str),
    Different,
}

impl Status {
    pub fn label(&self) -> String {
        match self {
            Status::Same => "same".to_owned(),
            Status::Allowed(reason) => format!("allowed: {reason}"),
            Status::Different => "DIFFERENT".to_owned(),
        }
    }

    pub fn fails(&self) -> bool {
        matches!(self, Status::Different)
    }
}

/// One row of the table.
pub struct Row {
    pub probe: String,
    pub reference: String,
    pub hermes: String,
    pub status: Status,
}

fn lookup(list: &'static [(&'static str, &'static str)], name: &str) -> Option<&'static str> {
    list.iter().find(|(n, _)| *n == name).map(|(_, why)| *why)
}

/// The rows for every fact either machine gave, in the reference's order.
pub fn compare(reference: &[Fact], hermes: &[Fact]) -> Vec<Row> {
    let mut names: Vec<&str> = reference.iter().map(|(n, _)| n.as_str()).collect();
    for (n, _) in hermes {
        if !names.contains(&n.as_str()) {
            names.push(n);
        }
    }
    let value = |facts: &[Fact], name: &str| {
        facts
            .iter()
            .find(|(n, _)| n == name)
            .map_or_else(|| "(no value)".to_owned(), |(_, v)| v.clone())
    };
    names
        .into_iter()
        .map(|name| {
            let (r, h) = (value(reference, name), value(hermes, name));
            let status = match (r == h, lookup(ALLOWED, name)) {
                (true, _) => Status::Same,
                (false, Some(reason)) => Status::Allowed(reason),
                (false, None) => Status::Different,
            };
            Row {
                probe: name.to_owned(),
                reference: r,
                hermes: h,
                status,
            }
        })
        .collect()
}

fn cell(text: &str, width: usize) -> String {
    let text = text.replace('|', "\\|");
    if text.chars().count() <= width {
        text
    } else {
        let cut: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// The table as Markdown (long values cut), then every difference in full.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from("| probe | reference | hermes | status |\n|---|---|---|---|\n");
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            row.probe,
            cell(&row.reference, 60),
            cell(&row.hermes, 60),
            cell(&row.status.label(), 70)
        ));
    }
    out.push_str("\nDifferences in full:\n");
    for row in rows.iter().filter(|r| r.status != Status::Same) {
        out.push_str(&format!(
            "- {} [{}]\n    reference: {}\n    hermes:    {}\n",
            row.probe,
            row.status.label(),
            row.reference,
            row.hermes
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(pairs: &[(&str, &str)]) -> Vec<Fact> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn equal_facts_are_the_same_and_an_unlisted_difference_fails() {
        let rows = compare(
            &facts(&[
                ("uname -s", "Linux"),
                ("uname -r", "6.1.0-50-amd64"),
                ("x", "1"),
            ]),
            &facts(&[
                ("uname -s", "Linux"),
                ("uname -r", "6.18.0"),
                ("x", "2"),
                ("y", "3"),
            ]),
        );
        let status: Vec<&Status> = rows.iter().map(|r| &r.status).collect();
        assert_eq!(status[0], &Status::Same);
        assert!(matches!(status[1], Status::Allowed(_)));
        assert_eq!(status[2], &Status::Different);
        assert_eq!(rows[3].reference, "(no value)");
        assert!(rows[3].status.fails());
        assert!(table(&rows).contains("| uname -s | Linux | Linux | same |"));
    }

    #[test]
    fn every_listed_name_is_listed_once_with_a_reason() {
        for (name, why) in ALLOWED {
            assert!(!why.is_empty(), "{name} has no reason");
            let count = ALLOWED.iter().filter(|(n, _)| n == name).count();
            assert_eq!(count, 1, "{name} is listed {count} times");
        }
    }
}
