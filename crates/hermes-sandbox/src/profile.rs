//! The container security profile: how every target container is created.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigCgroupnsModeEnum, HostConfigLogConfig, Mount,
    MountBindOptions, MountBindOptionsPropagationEnum, MountType, ResourcesUlimits, RestartPolicy,
    RestartPolicyNameEnum,
};

use hermes_core::config::{
    BootClock, CgroupDelegation, Config, CpuPinning, LxcfsConfig, SeccompProfile,
};

use crate::{CREATED_LABEL, ROLE_LABEL, SENSOR_LABEL};

/// What one box gets beyond the profile, decided just before it is created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The one core it runs on (`cpu_pinning: core`); None: every core.
    pub core: Option<u32>,
    /// The LXCFS files bound over its /proc files; None: none.
    pub lxcfs: Option<crate::lxcfs::LxcfsFiles>,
    /// The placeholder of its own cgroup for its systemd (`cgroup_delegation`);
    /// None: its image's init needs none.
    pub cgroup: Option<std::path::PathBuf>,
    /// Made for the pool ahead of need: it boots at [`BOOT_CPU_SHARES`], so that
    /// its boot yields to the running sessions, until it is ready.
    pub background: bool,
}

/// Whether a box is made ahead of need (the pool's refill) or for a login waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPriority {
    /// For the pool: it boots at [`BOOT_CPU_SHARES`].
    Background,
    /// For a login that waits for it.
    Foreground,
}

/// CPU weight (the engine's shares) of a box that boots for the pool. A systemd
/// boot starts a score of processes at once; at an equal weight, a refill after each
/// login slowed the next logins' own boxes by half.
pub const BOOT_CPU_SHARES: i64 = 128;

/// CPU weight of a box that is ready or in use: eight times a booting one's on
/// cgroup v1. On v2 the runtime turns shares into `cpu.weight` (1024 into 39 or 100,
/// 128 into 5 or about 20, by its version), so a booting box still weighs a fifth or
/// less of a box in use.
pub const SESSION_CPU_SHARES: i64 = 1024;

const _: () = assert!(BOOT_CPU_SHARES * 8 <= SESSION_CPU_SHARES);

/// How `docker stop` ends a box. Like every init, the box's (Debian's sysvinit)
/// ignores SIGTERM and never exits by itself (a shutdown ends in reboot(2), which the
/// box may not call), so SIGTERM would only cost the whole grace period before the
/// engine's SIGKILL. The box's files are on the host's disk: nothing is lost.
pub const STOP_SIGNAL: &str = "SIGKILL";

/// Everything needed to create a target container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerProfile {
    /// Image reference.
    pub image: String,
    /// The image used when `image` boots systemd and no cgroup can be delegated.
    pub fallback_image: String,
    /// Whether boxes of a systemd image may get a cgroup of their own.
    pub cgroup_delegation: CgroupDelegation,
    /// Hostname inside (the persona's).
    pub hostname: String,
    /// Sensor name, stored as a label to find this instance's containers.
    pub sensor: String,
    /// Docker network mode.
    pub network_mode: String,
    /// Memory limit in bytes (swap is not allowed on top).
    pub memory_bytes: i64,
    /// CPU limit in billionths of a core.
    pub nano_cpus: i64,
    /// Process limit.
    pub pids_limit: i64,
    /// `/dev/shm` size in bytes.
    pub shm_bytes: i64,
    /// Capabilities dropped.
    pub cap_drop: Vec<String>,
    /// Capabilities added back.
    pub cap_add: Vec<String>,
    /// `--security-opt` values, without the seccomp profile.
    pub security_opt: Vec<String>,
    /// The seccomp profile.
    pub seccomp: SeccompProfile,
    /// RLIMIT_FSIZE in bytes.
    pub max_file_bytes: i64,
    /// OCI runtime, when not the engine's default.
    pub runtime: Option<String>,
    /// Whether boxes get a boot clock of their own (by running under
    /// [`crate::boot_clock::RUNTIME`], set in `runtime` once the engine has it).
    pub boot_clock: BootClock,
    /// User-namespace mode (`host`), when set.
    pub userns_mode: Option<String>,
    /// Whether each box gets a core of its own.
    pub cpu_pinning: CpuPinning,
    /// Whether and where LXCFS is used.
    pub lxcfs: LxcfsConfig,
    /// The resolver written to the box's `/etc/resolv.conf` (`egress`: Hermes's own
    /// on the box's link); None leaves the image's file (with `network_mode: none`)
    /// or the engine's.
    pub dns: Option<String>,
}

impl ContainerProfile {
    /// From a validated configuration.
    pub fn from_config(config: &Config, sensor: &str) -> Self {
        let security = &config.container_pool.security;
        ContainerProfile {
            image: config.container_pool.image.clone(),
            fallback_image: config.container_pool.fallback_image.clone(),
            cgroup_delegation: security.cgroup_delegation,
            hostname: config.persona.hostname.clone(),
            sensor: sensor.to_owned(),
            network_mode: security.network_mode.clone(),
            memory_bytes: security.memory_limit.bytes_i64(),
            nano_cpus: (security.cpu_quota * 1e9).round() as i64,
            pids_limit: i64::from(security.pids_limit),
            shm_bytes: security.tmpfs_size.bytes_i64(),
            cap_drop: security.capabilities.drop.clone(),
            cap_add: security.capabilities.add.clone(),
            security_opt: security.security_opt.clone(),
            seccomp: security.seccomp,
            max_file_bytes: security.max_file_size.bytes_i64(),
            runtime: security.runtime.clone(),
            boot_clock: security.boot_clock,
            userns_mode: security.userns_mode.clone(),
            cpu_pinning: security.cpu_pinning,
            lxcfs: security.lxcfs.clone(),
            dns: (config.egress.mode != hermes_core::config::EgressMode::Off)
                .then(|| config.egress.network.resolver.to_string()),
        }
    }

    /// Whether the engine leaves the box's network alone (`none`): the box gets a
    /// namespace with only `lo`, and no name files from the engine.
    pub fn network_disabled(&self) -> bool {
        self.network_mode == "none"
    }

    /// The body of `POST /containers/create` for a box placed as `placement` says.
    pub fn create_body(&self, placement: &Placement) -> ContainerCreateBody {
        let labels = HashMap::from([
            (ROLE_LABEL.to_owned(), "target".to_owned()),
            (SENSOR_LABEL.to_owned(), self.sensor.clone()),
            (CREATED_LABEL.to_owned(), hermes_core::time::now_iso8601()),
        ]);
        ContainerCreateBody {
            image: Some(self.image.clone()),
            hostname: Some(self.hostname.clone()),
            labels: Some(labels),
            tty: Some(false),
            open_stdin: Some(false),
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            stop_signal: Some(STOP_SIGNAL.to_owned()),
            // systemd as PID 1 takes its container's kind from $container, else from
            // /.dockerenv (which the engine makes before it starts), keeps it for good
            // and shows it in `hostnamectl`: a kind that names no engine.
            env: placement
                .cgroup
                .as_ref()
                .map(|_| vec!["container=other".to_owned()]),
            // No network sandbox of the engine's: Hermes gives the box its name files
            // (and egress its link).
            network_disabled: Some(self.network_disabled()),
            host_config: Some(HostConfig {
                network_mode: Some(self.network_mode.clone()),
                memory: Some(self.memory_bytes),
                // Equal to memory: no swap on top of the limit.
                memory_swap: Some(self.memory_bytes),
                nano_cpus: Some(self.nano_cpus),
                cpu_shares: Some(if placement.background {
                    BOOT_CPU_SHARES
                } else {
                    SESSION_CPU_SHARES
                }),
                cpuset_cpus: placement.core.map(|core| core.to_string()),
                // `mounts`, not `binds`: a missing source fails the create instead of
                // becoming an empty directory the engine makes on the host.
                mounts: mounts(placement),
                tmpfs: placement.cgroup.as_ref().map(|_| self.run_tmpfs()),
                cgroup_parent: placement
                    .cgroup
                    .as_ref()
                    .map(|_| crate::cgroup_delegation::CGROUP_PARENT.to_owned()),
                pids_limit: Some(self.pids_limit),
                shm_size: Some(self.shm_bytes),
                cap_drop: Some(self.cap_drop.clone()),
                cap_add: Some(self.cap_add(placement)),
                security_opt: Some(self.security_opt()),
                privileged: Some(false),
                init: Some(false),
                readonly_rootfs: Some(false),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                auto_remove: Some(false),
                // PID 1 prints nothing; do not let a container fill the host's disk
                // through Docker's log driver either.
                log_config: Some(HostConfigLogConfig {
                    typ: Some("none".to_owned()),
                    config: None,
                }),
                // Its own cgroup namespace: /proc/self/cgroup shows no container id.
                cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
                // Per network namespace: ports below 1024 need no capability, and
                // the loopback has ::1 as on any Debian server (the engine turns
                // IPv6 off in a container; the box's sshd binds its X11 displays
                // on both localhost addresses and gives up without ::1).
                sysctls: Some(HashMap::from([
                    (
                        "net.ipv4.ip_unprivileged_port_start".to_owned(),
                        "0".to_owned(),
                    ),
                    ("net.ipv6.conf.lo.disable_ipv6".to_owned(), "0".to_owned()),
                ])),
                ulimits: Some(vec![ResourcesUlimits {
                    name: Some("fsize".to_owned()),
                    soft: Some(self.max_file_bytes),
                    hard: Some(self.max_file_bytes),
                }]),
                runtime: self.runtime.clone(),
                userns_mode: self.userns_mode.clone(),
                // Where the engine writes the name files. Debian's installer names the
                // host on 127.0.1.1; without it `sudo` says "unable to resolve host".
                dns: (!self.network_disabled())
                    .then(|| self.dns.clone().map(|resolver| vec![resolver]))
                    .flatten(),
                extra_hosts: (!self.network_disabled())
                    .then(|| vec![format!("{}:127.0.1.1", self.hostname)]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// What the box gets bound in: LXCFS's files, and its own cgroup for systemd.
fn mounts(placement: &Placement) -> Option<Vec<Mount>> {
    let mut mounts = placement
        .lxcfs
        .as_ref()
        .map(lxcfs_mounts)
        .unwrap_or_default();
    if let Some(source) = &placement.cgroup {
        mounts.push(Mount {
            target: Some(crate::cgroup_delegation::TARGET.to_owned()),
            source: Some(source.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(false),
            bind_options: Some(MountBindOptions {
                propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    (!mounts.is_empty()).then_some(mounts)
}

/// LXCFS's files, read-only over the box's own (root in the box cannot write,
/// unmount or remount them: no CAP_SYS_ADMIN); /proc/stat and /proc/uptime from the
/// clock files where the box runs on a clock of its own.
fn lxcfs_mounts(files: &crate::lxcfs::LxcfsFiles) -> Vec<Mount> {
    use crate::lxcfs::ClockFiles;
    crate::lxcfs::FILES
        .iter()
        .filter_map(|file| {
            let on_clock = crate::clock_files::FILES.contains(file);
            match (&files.clock, on_clock) {
                (ClockFiles::Served(root), true) => Some(root.join(file)),
                (ClockFiles::Kernel, true) => None,
                _ => Some(files.root.join(file)),
            }
            .map(|source| (file, source))
        })
        .map(|(file, source)| Mount {
            target: Some(format!("/{file}")),
            source: Some(source.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            bind_options: Some(MountBindOptions {
                propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

impl ContainerProfile {
    /// The configured capabilities; systemd also needs CAP_SETPCAP (one of the
    /// engine's defaults) to narrow its services' bounding sets as their units say.
    fn cap_add(&self, placement: &Placement) -> Vec<String> {
        let mut caps = self.cap_add.clone();
        let has = |name: &str| {
            caps.iter()
                .any(|c| c.trim_start_matches("CAP_").eq_ignore_ascii_case(name))
        };
        if placement.cgroup.is_some() && !has("SETPCAP") {
            caps.push("SETPCAP".to_owned());
        }
        caps
    }

    /// systemd's /run and /run/lock, tmpfs as on Debian (a tenth of the memory, and
    /// 5 MiB), charged to the box's memory.
    fn run_tmpfs(&self) -> HashMap<String, String> {
        let run_kib = (self.memory_bytes / 10 / 1024).max(1024);
        HashMap::from([
            (
                "/run".to_owned(),
                format!("rw,nosuid,nodev,noexec,size={run_kib}k,mode=755"),
            ),
            (
                "/run/lock".to_owned(),
                "rw,nosuid,nodev,noexec,size=5120k".to_owned(),
            ),
        ])
    }

    /// The configured options, and Hermes's seccomp profile (as JSON: the engine
    /// reads no files for API clients) unless the engine's default is asked for.
    fn security_opt(&self) -> Vec<String> {
        let mut options = self.security_opt.clone();
        if self.seccomp == SeccompProfile::Hermes {
            options.push(format!("seccomp={}", crate::seccomp::profile_json()));
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prototype_defaults_become_docker_settings() {
        let config = Config::default();
        let profile = ContainerProfile::from_config(&config, "sensor-1");
        let body = profile.create_body(&Placement::default());
        let host = body.host_config.expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.memory, Some(256 << 20));
        assert_eq!(host.memory_swap, Some(256 << 20));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.pids_limit, Some(100));
        assert_eq!(host.shm_size, Some(50 << 20));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(
            host.cap_add,
            Some(
                [
                    "CHOWN",
                    "DAC_OVERRIDE",
                    "FOWNER",
                    "FSETID",
                    "KILL",
                    "SETGID",
                    "SETUID",
                    "SETPCAP",
                    "NET_BIND_SERVICE",
                    "SYS_CHROOT"
                ]
                .map(str::to_owned)
                .to_vec()
            )
        );
        let options = host.security_opt.as_deref().unwrap_or_default();
        assert_eq!(options.len(), 2, "{options:?}");
        assert_eq!(options[0], "no-new-privileges:true");
        let json = options[1].strip_prefix("seccomp=").expect("our profile");
        let seccomp: serde_json::Value = serde_json::from_str(json).expect("JSON");
        assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(host.privileged, Some(false));
        assert_eq!(
            host.cgroupns_mode,
            Some(HostConfigCgroupnsModeEnum::PRIVATE)
        );
        let fsize = host
            .ulimits
            .as_ref()
            .and_then(|u| u.first())
            .expect("fsize");
        assert_eq!(fsize.hard, Some(512 << 20));
        assert!(host.runtime.is_none() && host.userns_mode.is_none());
        assert!(host.tmpfs.is_none(), "no attacker-writable tmpfs");
        assert_eq!(body.stop_signal.as_deref(), Some("SIGKILL"));
        assert_eq!(body.hostname.as_deref(), Some("web-prod-01"));
        assert_eq!(
            host.cpu_shares,
            Some(SESSION_CPU_SHARES),
            "a login waits for it"
        );
        let pooled = profile.create_body(&Placement {
            background: true,
            ..Placement::default()
        });
        let pooled = pooled.host_config.expect("host config");
        assert_eq!(pooled.cpu_shares, Some(BOOT_CPU_SHARES));
        // No network of the engine's: Hermes writes the name files.
        assert_eq!(body.network_disabled, Some(true));
        assert!(host.dns.is_none() && host.extra_hosts.is_none());
        let labels = body.labels.expect("labels");
        assert_eq!(labels.get(ROLE_LABEL).map(String::as_str), Some("target"));
        assert_eq!(
            labels.get(SENSOR_LABEL).map(String::as_str),
            Some("sensor-1")
        );
    }

    #[test]
    fn a_network_of_the_engines_gets_its_name_files_from_the_engine() {
        let mut config = Config::default();
        config.container_pool.security.network_mode = "hermes-net".to_owned();
        let profile = ContainerProfile::from_config(&config, "sensor-1");
        let body = profile.create_body(&Placement::default());
        assert_eq!(body.network_disabled, Some(false));
        let host = body.host_config.expect("host config");
        assert_eq!(
            host.extra_hosts.as_deref(),
            Some(&["web-prod-01:127.0.1.1".to_owned()][..])
        );
        assert_eq!(host.dns.as_deref(), Some(&["10.0.2.3".to_owned()][..]));
    }

    #[test]
    fn docker_default_leaves_seccomp_to_the_engine() {
        let mut config = Config::default();
        config.container_pool.security.seccomp = SeccompProfile::DockerDefault;
        let body = ContainerProfile::from_config(&config, "s").create_body(&Placement::default());
        let host = body.host_config.expect("host config");
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges:true".to_owned()])
        );
    }

    #[test]
    fn a_placed_box_gets_its_core_and_lxcfs_files_read_only() {
        let profile = ContainerProfile::from_config(&Config::default(), "s");
        let bare = profile.create_body(&Placement::default());
        let host = bare.host_config.expect("host config");
        assert!(host.cpuset_cpus.is_none() && host.mounts.is_none() && host.binds.is_none());
        let placed = profile.create_body(&Placement {
            core: Some(1),
            lxcfs: Some(crate::lxcfs::LxcfsFiles {
                root: "/var/lib/lxcfs".into(),
                clock: crate::lxcfs::ClockFiles::Lxcfs,
            }),
            cgroup: None,
            background: false,
        });
        let host = placed.host_config.expect("host config");
        assert_eq!(host.cpuset_cpus.as_deref(), Some("1"));
        assert_eq!(host.nano_cpus, Some(500_000_000), "the quota stays");
        let mounts = host.mounts.expect("mounts");
        assert_eq!(mounts.len(), crate::lxcfs::FILES.len());
        for wanted in [
            "/proc/meminfo",
            "/proc/cpuinfo",
            "/proc/stat",
            "/proc/uptime",
            "/proc/loadavg",
            "/proc/swaps",
            "/sys/devices/system/cpu/online",
        ] {
            let mount = mounts
                .iter()
                .find(|m| m.target.as_deref() == Some(wanted))
                .unwrap_or_else(|| panic!("{wanted} bound"));
            assert_eq!(
                mount.source.as_deref(),
                Some(format!("/var/lib/lxcfs{wanted}").as_str())
            );
            assert_eq!(mount.read_only, Some(true));
            assert_eq!(mount.typ, Some(MountType::BIND));
        }
    }

    #[test]
    fn a_box_on_its_own_clock_gets_the_clock_files_or_the_kernels() {
        use crate::lxcfs::{ClockFiles, LxcfsFiles};
        let profile = ContainerProfile::from_config(&Config::default(), "s");
        let sources = |clock: ClockFiles| {
            let body = profile.create_body(&Placement {
                core: None,
                lxcfs: Some(LxcfsFiles {
                    root: "/var/lib/lxcfs".into(),
                    clock,
                }),
                cgroup: None,
                background: false,
            });
            let mounts = body.host_config.and_then(|h| h.mounts).expect("mounts");
            mounts
                .into_iter()
                .map(|m| (m.target.unwrap_or_default(), m.source.unwrap_or_default()))
                .collect::<std::collections::HashMap<_, _>>()
        };
        let served = sources(ClockFiles::Served("/var/lib/hermes-box-proc".into()));
        assert_eq!(served.len(), crate::lxcfs::FILES.len());
        assert_eq!(served["/proc/stat"], "/var/lib/hermes-box-proc/proc/stat");
        assert_eq!(
            served["/proc/uptime"],
            "/var/lib/hermes-box-proc/proc/uptime"
        );
        assert_eq!(served["/proc/meminfo"], "/var/lib/lxcfs/proc/meminfo");
        // Their server gone: the kernel's own, never LXCFS's with the host's btime.
        let kernel = sources(ClockFiles::Kernel);
        assert_eq!(kernel.len(), crate::lxcfs::FILES.len() - 2);
        assert!(!kernel.contains_key("/proc/stat") && !kernel.contains_key("/proc/uptime"));
        assert_eq!(kernel["/proc/cpuinfo"], "/var/lib/lxcfs/proc/cpuinfo");
    }

    #[test]
    fn a_systemd_box_gets_its_cgroup_a_run_tmpfs_and_setpcap_only() {
        let mut config = Config::default();
        config.container_pool.security.capabilities.add =
            ["CHOWN", "SETUID", "SETGID"].map(str::to_owned).to_vec();
        let profile = ContainerProfile::from_config(&config, "s");
        let body = profile.create_body(&Placement {
            core: None,
            lxcfs: None,
            cgroup: Some("/run/hermes/box-cgroups/hermes-x".into()),
            background: false,
        });
        let host = body.host_config.expect("host config");
        let mounts = host.mounts.expect("mounts");
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].target.as_deref(), Some("/sys/fs/cgroup/systemd"));
        assert_eq!(
            mounts[0].source.as_deref(),
            Some("/run/hermes/box-cgroups/hermes-x")
        );
        assert_eq!(host.cgroup_parent.as_deref(), Some("/docker"));
        assert_eq!(body.env, Some(vec!["container=other".to_owned()]));
        let tmpfs = host.tmpfs.expect("tmpfs");
        assert_eq!(
            tmpfs.get("/run").map(String::as_str),
            Some("rw,nosuid,nodev,noexec,size=26214k,mode=755")
        );
        assert!(
            tmpfs
                .get("/run/lock")
                .is_some_and(|o| o.contains("size=5120k"))
        );
        assert_eq!(
            host.cap_add,
            Some(
                ["CHOWN", "SETUID", "SETGID", "SETPCAP"]
                    .map(str::to_owned)
                    .to_vec()
            )
        );
        assert_eq!(host.privileged, Some(false));
    }

    /// What the socket proxy (images/socket-proxy/haproxy.cfg) refuses in a create
    /// body must not appear in ours, and the body stays under its size limit.
    #[test]
    fn the_create_body_passes_the_socket_proxy_checks() {
        let body = ContainerProfile::from_config(&Config::default(), "sensor-1")
            .create_body(&Placement::default());
        let json = serde_json::to_string(&body).expect("serializable");
        assert!(json.len() < 60_000, "{} bytes", json.len());
        assert!(
            json.len() > 5_000,
            "the profile is in it: {} bytes",
            json.len()
        );
        let lowered = json.to_ascii_lowercase();
        for refused in [
            "\\u",
            "unconfined",
            "apparmor=",
            "label:disable",
            "label=disable",
            "systempaths",
            "\"privileged\":true",
        ] {
            assert!(!lowered.contains(refused), "`{refused}` in the body");
        }
    }
}
