//! Hermes's own seccomp profile for target containers, in Docker's profile format.
//!
//! An allowlist: every system call not named here fails with EPERM. It covers what
//! Docker's default profile covers (so a Debian userland runs as it does under
//! Docker), with the same conditional rules, minus [`DENIED`]: calls a server
//! session does not need that have been a steady source of kernel escalations.
//! Docker evaluates the conditions (`caps`, `arches`, `minKernel`) when it turns the
//! profile into the container's filter.

use std::sync::LazyLock;

use serde::Serialize;

/// A system call refused in every box whatever its capabilities, and why.
pub struct Denied {
    /// System call names.
    pub names: &'static [&'static str],
    /// Why it is refused.
    pub reason: &'static str,
    /// Whether Docker's default profile allows it (unconditionally or with a
    /// capability); the rest Docker refuses too and are listed to keep them refused.
    pub docker_allows: bool,
}

/// The refused calls that matter, each with its reason (also in SECURITY.md).
pub const DENIED: &[Denied] = &[
    Denied {
        names: &["io_uring_setup", "io_uring_enter", "io_uring_register"],
        reason: "io_uring runs I/O from kernel worker threads outside the caller's \
                 syscall path and has been the source of many local privilege \
                 escalations (CVE-2021-41073, CVE-2022-29582, CVE-2023-2598, \
                 CVE-2024-0582); glibc and the Debian base system never use it",
        docker_allows: true,
    },
    Denied {
        names: &["bpf"],
        reason: "eBPF verifier and map bugs are a recurring escalation path; only \
                 tracing and networking tools use it (Docker allows it with CAP_BPF \
                 or CAP_SYS_ADMIN; we never do)",
        docker_allows: true,
    },
    Denied {
        names: &["perf_event_open"],
        reason: "a large, bug-prone kernel interface and a side channel on the host; \
                 only profilers use it (Docker allows it with CAP_PERFMON or \
                 CAP_SYS_ADMIN; we never do)",
        docker_allows: true,
    },
    Denied {
        names: &["init_module", "finit_module", "delete_module"],
        reason: "loading code into the host kernel is a full escape (Docker allows \
                 it with CAP_SYS_MODULE; we never do)",
        docker_allows: true,
    },
    Denied {
        names: &["memfd_secret"],
        reason: "memory that even the kernel and the host cannot read: it would hide \
                 an attacker's data from forensics; nothing in Debian uses it",
        docker_allows: true,
    },
    Denied {
        names: &["modify_ldt"],
        reason: "x86 segment descriptors for 16-bit code (Wine, DOSEMU); several \
                 kernel bugs (CVE-2015-5157, CVE-2017-17053); unused on a server",
        docker_allows: true,
    },
    Denied {
        names: &["userfaultfd"],
        reason: "lets a process stall the kernel mid-copy on a page fault, the usual \
                 way exploits win kernel race conditions",
        docker_allows: false,
    },
    Denied {
        names: &["keyctl", "add_key", "request_key"],
        reason: "the kernel keyring is not namespaced (shared with the host) and has \
                 had escalation bugs (CVE-2016-0728)",
        docker_allows: false,
    },
    Denied {
        names: &["kexec_load", "kexec_file_load"],
        reason: "replaces the running kernel",
        docker_allows: false,
    },
];

/// Errno values, the same on x86 and arm.
const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Namespace flags `clone` may not carry without CAP_SYS_ADMIN (NEWNS, NEWCGROUP,
/// NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET).
const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// AF_VSOCK: a channel to the hypervisor, nothing a container needs.
const AF_VSOCK: u64 = 40;
/// AF_NETLINK, and its NETLINK_AUDIT protocol: the host's audit log, which is not
/// the box's (no namespace has one of its own).
const AF_NETLINK: u64 = 16;
const NETLINK_AUDIT: u64 = 9;
/// Families past the last one Linux knows (AF_MAX - 1): the kernel's own answer.
const LAST_FAMILY: u64 = 46;
/// What a kernel built without audit answers a NETLINK_AUDIT socket, and what the
/// box's sshd and PAM take as "no audit here" (EPERM would make sshd refuse a login
/// on a terminal: "linux_audit_write_entry failed").
const EPROTONOSUPPORT: u32 = 93;

/// `personality` values that change nothing dangerous: PER_LINUX, PER_LINUX32,
/// UNAME26, PER_LINUX32|UNAME26, and 0xffffffff (query). ADDR_NO_RANDOMIZE and the
/// rest stay refused.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Files, directories, descriptors and waiting on them.
const FILES: &[&str] = &[
    "_llseek",
    "_newselect",
    "access",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "close",
    "close_range",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futimesat",
    "getcwd",
    "getdents",
    "getdents64",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "memfd_create",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "name_to_handle_at",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "ppoll_time64",
    "pread64",
    "preadv",
    "preadv2",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "rmdir",
    "select",
    "sendfile",
    "sendfile64",
    "setxattr",
    "signalfd",
    "signalfd4",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "tee",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "truncate",
    "truncate64",
    "umask",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vmsplice",
    "write",
    "writev",
];

/// Address space.
const MEMORY: &[&str] = &[
    "brk",
    "madvise",
    "membarrier",
    "mincore",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mremap",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "process_mrelease",
    "remap_file_pages",
];

/// Processes, threads, credentials, scheduling and limits.
const PROCESSES: &[&str] = &[
    "capget",
    "capset",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fork",
    "futex",
    "futex_time64",
    "futex_waitv",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "gettid",
    "getuid",
    "getuid32",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "pidfd_open",
    "pidfd_send_signal",
    "prctl",
    "prlimit64",
    "restart_syscall",
    "rseq",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setuid",
    "setuid32",
    "sysinfo",
    "times",
    "ugetrlimit",
    "uname",
    "vfork",
    "wait4",
    "waitid",
    "waitpid",
];

/// Signals and timers.
const SIGNALS_AND_TIME: &[&str] = &[
    "adjtimex",
    "alarm",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "getitimer",
    "gettimeofday",
    "kill",
    "nanosleep",
    "pause",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "setitimer",
    "sigaltstack",
    "sigprocmask",
    "sigreturn",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "tkill",
];

/// Sockets (`socket` itself has its own rule) and System V / POSIX IPC.
const SOCKETS_AND_IPC: &[&str] = &[
    "accept",
    "accept4",
    "bind",
    "connect",
    "getpeername",
    "getsockname",
    "getsockopt",
    "ipc",
    "listen",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setsockopt",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "socketcall",
    "socketpair",
];

/// Calls that need a capability the box does not have by default: allowed only when
/// the configuration adds it back, as under Docker's default profile.
const WITH_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["ioperm", "iopl"]),
    (
        "CAP_SYS_TIME",
        &["clock_settime", "clock_settime64", "settimeofday", "stime"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
];

/// Calls that exist only on some architectures (Docker's `arches` names).
const ARCH_SPECIFIC: &[(&[&str], &[&str])] = &[
    (&["amd64", "x32"], &["arch_prctl"]),
    (
        &["arm", "arm64"],
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "breakpoint",
            "cacheflush",
            "set_tls",
            "sync_file_range2",
        ],
    ),
];

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: &'static str,
    default_errno_ret: u32,
    arch_map: Vec<ArchMap>,
    syscalls: Vec<Rule>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: &'static str,
    sub_architectures: &'static [&'static str],
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Rule {
    names: Vec<&'static str>,
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errno_ret: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    args: Vec<Arg>,
    #[serde(skip_serializing_if = "Filter::is_empty")]
    includes: Filter,
    #[serde(skip_serializing_if = "Filter::is_empty")]
    excludes: Filter,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    caps: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    arches: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_kernel: Option<&'static str>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.caps.is_empty() && self.arches.is_empty() && self.min_kernel.is_none()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u32,
    value: u64,
    value_two: u64,
    op: &'static str,
}

const ALLOW: &str = "SCMP_ACT_ALLOW";

fn allow(names: &[&'static str]) -> Rule {
    Rule {
        names: names.to_vec(),
        action: ALLOW,
        ..Rule::default()
    }
}

fn first_arg(op: &'static str, value: u64, value_two: u64) -> Vec<Arg> {
    vec![Arg {
        index: 0,
        value,
        value_two,
        op,
    }]
}

/// `socket`: every family but AF_VSOCK, and netlink but its audit protocol. The
/// rules never overlap (libseccomp does not say which of two matching rules wins),
/// and each compares an argument once.
fn socket_rules() -> Vec<Rule> {
    let mut rules = vec![Rule {
        args: first_arg("SCMP_CMP_LT", AF_NETLINK, 0),
        ..allow(&["socket"])
    }];
    let netlink = |op: &'static str| {
        vec![
            Arg {
                index: 0,
                value: AF_NETLINK,
                value_two: 0,
                op: "SCMP_CMP_EQ",
            },
            Arg {
                index: 2,
                value: NETLINK_AUDIT,
                value_two: 0,
                op,
            },
        ]
    };
    rules.push(Rule {
        args: netlink("SCMP_CMP_NE"),
        ..allow(&["socket"])
    });
    rules.push(Rule {
        names: vec!["socket"],
        action: "SCMP_ACT_ERRNO",
        errno_ret: Some(EPROTONOSUPPORT),
        args: netlink("SCMP_CMP_EQ"),
        ..Rule::default()
    });
    for family in (AF_NETLINK + 1..=LAST_FAMILY).filter(|f| *f != AF_VSOCK) {
        rules.push(Rule {
            args: first_arg("SCMP_CMP_EQ", family, 0),
            ..allow(&["socket"])
        });
    }
    rules.push(Rule {
        args: first_arg("SCMP_CMP_GT", LAST_FAMILY, 0),
        ..allow(&["socket"])
    });
    rules
}

fn rules() -> Vec<Rule> {
    let everyday: Vec<&'static str> =
        [FILES, MEMORY, PROCESSES, SIGNALS_AND_TIME, SOCKETS_AND_IPC].concat();
    let mut rules = vec![allow(&everyday)];
    // strace and gdb need ptrace, and malware probes PTRACE_TRACEME to spot a
    // debugger: refusing it would break tools and tip attackers off. Since 4.8 a
    // tracer can no longer step around seccomp.
    rules.push(Rule {
        includes: Filter {
            min_kernel: Some("4.8"),
            ..Filter::default()
        },
        ..allow(&["process_vm_readv", "process_vm_writev", "ptrace"])
    });
    rules.extend(socket_rules());
    for &persona in PERSONALITIES {
        rules.push(Rule {
            args: first_arg("SCMP_CMP_EQ", persona, 0),
            ..allow(&["personality"])
        });
    }
    for &(arches, names) in ARCH_SPECIFIC {
        rules.push(Rule {
            includes: Filter {
                arches: arches.to_vec(),
                ..Filter::default()
            },
            ..allow(names)
        });
    }
    for &(cap, names) in WITH_CAPABILITY {
        rules.push(Rule {
            includes: Filter {
                caps: vec![cap],
                ..Filter::default()
            },
            ..allow(names)
        });
    }
    let holds_sys_admin = || Filter {
        caps: vec!["CAP_SYS_ADMIN"],
        ..Filter::default()
    };
    // Threads and processes, but no new namespaces.
    rules.push(Rule {
        args: first_arg("SCMP_CMP_MASKED_EQ", CLONE_NAMESPACE_FLAGS, 0),
        excludes: holds_sys_admin(),
        ..allow(&["clone"])
    });
    // clone3 passes its flags in memory, out of the filter's sight: ENOSYS makes
    // glibc fall back to clone, whose flags the rule above checks.
    rules.push(Rule {
        names: vec!["clone3"],
        action: "SCMP_ACT_ERRNO",
        errno_ret: Some(ENOSYS),
        excludes: holds_sys_admin(),
        ..Rule::default()
    });
    rules
}

/// The profile as compact JSON, for `--security-opt seccomp=<JSON>`; built once.
pub fn profile_json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| build_json(rules()));
    &JSON
}

/// What the boxes' profile allows that Hermes's own container (the compose stack,
/// with CAP_SYS_ADMIN for egress) must not do: mounts, by which CAP_SYS_ADMIN gets
/// out of a container (a writable /proc/sys, cgroup release agents), tracing other
/// processes, and the rest CAP_SYS_ADMIN would open (the host's kernel log, fanotify,
/// quotas, names). Hermes needs none of it: setns and unshare stay, and its gateway
/// namespaces are held, not mounted, when `ip netns add` cannot mount.
#[cfg(test)]
const NOT_FOR_HERMES: &[&str] = &[
    "mount",
    "umount",
    "umount2",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "syslog",
    "fanotify_init",
    "quotactl",
    "quotactl_fd",
    "lookup_dcookie",
    "sethostname",
    "setdomainname",
];

/// The seccomp profile of Hermes's own container in the compose stack
/// (`deploy/compose/hermes.seccomp.json`): the boxes' profile without
/// [`NOT_FOR_HERMES`], indented for review. The file is made (and kept current) by
/// this module's tests.
#[cfg(test)]
fn hermes_profile_json() -> String {
    let rules = rules()
        .into_iter()
        .filter_map(|mut rule| {
            rule.names.retain(|name| !NOT_FOR_HERMES.contains(name));
            (!rule.names.is_empty()).then_some(rule)
        })
        .collect();
    let compact = build_json(rules);
    serde_json::from_str::<serde_json::Value>(&compact)
        .and_then(|value| serde_json::to_string_pretty(&value))
        .map(|pretty| pretty + "\n")
        .unwrap_or(compact)
}

fn build_json(syscalls: Vec<Rule>) -> String {
    let profile = Profile {
        default_action: "SCMP_ACT_ERRNO",
        default_errno_ret: EPERM,
        arch_map: vec![
            ArchMap {
                architecture: "SCMP_ARCH_X86_64",
                sub_architectures: &["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            },
            ArchMap {
                architecture: "SCMP_ARCH_AARCH64",
                sub_architectures: &["SCMP_ARCH_ARM"],
            },
        ],
        syscalls,
    };
    // Plain structs of strings and numbers: serialization cannot fail.
    serde_json::to_string(&profile).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use serde_json::Value;

    use super::*;

    fn profile() -> Value {
        serde_json::from_str(profile_json()).expect("valid JSON")
    }

    fn rules_of(profile: &Value) -> &Vec<Value> {
        profile["syscalls"].as_array().expect("syscalls")
    }

    fn names(rule: &Value) -> Vec<&str> {
        rule["names"]
            .as_array()
            .expect("names")
            .iter()
            .map(|n| n.as_str().expect("name"))
            .collect()
    }

    #[test]
    fn the_profile_is_an_allowlist_refusing_with_eperm() {
        let profile = profile();
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(profile["defaultErrnoRet"], 1);
        let arches: Vec<&str> = profile["archMap"]
            .as_array()
            .expect("archMap")
            .iter()
            .map(|a| a["architecture"].as_str().expect("arch"))
            .collect();
        assert_eq!(arches, ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"]);
        for rule in rules_of(&profile) {
            let action = rule["action"].as_str().expect("action");
            let audit = names(rule) == ["socket"] && rule["errnoRet"] == EPROTONOSUPPORT;
            assert!(
                action == ALLOW || names(rule) == ["clone3"] || audit,
                "{rule}"
            );
        }
    }

    #[test]
    fn no_denied_call_is_allowed_under_any_condition() {
        let profile = profile();
        let allowed: HashSet<&str> = rules_of(&profile)
            .iter()
            .filter(|r| r["action"] == ALLOW)
            .flat_map(names)
            .collect();
        for denied in DENIED {
            assert!(!denied.reason.is_empty());
            for name in denied.names {
                assert!(!allowed.contains(name), "{name} is allowed");
            }
        }
        // And the everyday calls are there.
        for name in [
            "execve",
            "openat",
            "clone",
            "socket",
            "ptrace",
            "personality",
        ] {
            assert!(allowed.contains(name), "{name} missing");
        }
    }

    #[test]
    fn no_call_is_listed_twice_in_the_unconditional_rule() {
        let profile = profile();
        let everyday = names(&rules_of(&profile)[0]);
        let unique: HashSet<&str> = everyday.iter().copied().collect();
        assert_eq!(unique.len(), everyday.len());
        // Calls with conditions are not also allowed without them.
        for rule in &rules_of(&profile)[1..] {
            for name in names(rule) {
                assert!(!unique.contains(name), "{name} is also unconditional");
            }
        }
    }

    #[test]
    fn clone_keeps_namespaces_for_cap_sys_admin_and_clone3_falls_back() {
        let profile = profile();
        let rules = rules_of(&profile);
        let clone = rules
            .iter()
            .find(|r| names(r) == ["clone"] && r.get("args").is_some())
            .expect("clone rule");
        assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone["args"][0]["value"], 0x7E02_0000_u64);
        assert_eq!(clone["args"][0]["valueTwo"], 0);
        assert_eq!(clone["excludes"]["caps"][0], "CAP_SYS_ADMIN");
        let clone3 = rules
            .iter()
            .find(|r| names(r) == ["clone3"])
            .expect("clone3 rule");
        assert_eq!(clone3["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3["errnoRet"], 38);
        let personalities: Vec<u64> = rules
            .iter()
            .filter(|r| names(r) == ["personality"])
            .map(|r| r["args"][0]["value"].as_u64().expect("value"))
            .collect();
        assert_eq!(personalities, [0, 8, 0x20000, 0x20008, 0xffff_ffff]);
    }

    /// SECURITY.md names every refused call; the ones Docker would allow are in its
    /// table, with their reasons.
    #[test]
    fn security_md_lists_every_denied_call() {
        let doc = include_str!("../../../SECURITY.md");
        let table: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `")).collect();
        for denied in DENIED {
            for name in denied.names {
                let quoted = format!("`{name}`");
                assert!(doc.contains(&quoted), "{name} not in SECURITY.md");
                if denied.docker_allows {
                    assert!(
                        table.iter().any(|l| l.contains(&quoted)),
                        "{name} not in SECURITY.md's table"
                    );
                }
            }
        }
    }

    /// deploy/compose/hermes.seccomp.json is generated; `HERMES_WRITE_DOCS=1`
    /// rewrites it.
    #[test]
    fn hermes_own_profile_is_the_boxes_without_mounts_or_tracing() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/compose/hermes.seccomp.json"
        );
        let expected = hermes_profile_json();
        if std::env::var_os("HERMES_WRITE_DOCS").is_some() {
            std::fs::write(path, &expected).expect("write the profile");
        }
        let actual = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            actual == expected,
            "deploy/compose/hermes.seccomp.json is out of date: run HERMES_WRITE_DOCS=1 cargo test -p hermes-sandbox hermes_own_profile"
        );
        let profile: Value = serde_json::from_str(&expected).expect("JSON");
        let allowed: HashSet<&str> = rules_of(&profile)
            .iter()
            .filter(|rule| rule["action"] == ALLOW)
            .flat_map(names)
            .collect();
        for name in NOT_FOR_HERMES {
            assert!(!allowed.contains(name), "{name}");
        }
        // What egress needs with CAP_SYS_ADMIN stays.
        for name in ["setns", "unshare"] {
            assert!(allowed.contains(name), "{name}");
        }
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    }

    #[test]
    fn the_profile_is_compact() {
        let json = profile_json();
        assert!(!json.contains('\n') && !json.contains(": "));
        // Well under the socket proxy's 60 KB create-body limit.
        assert!(json.len() < 12_000, "{} bytes", json.len());
    }
}
