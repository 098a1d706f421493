//! Which box a process belongs to, and its CPUs and CPU time, from the host's cgroup
//! hierarchies (v1 or v2). The part of a cgroup path that names the box is made by
//! the engine; what the box made below it is never read.

use std::path::{Path, PathBuf};

use crate::render::{Cpu, USER_HZ};

/// Where the host mounts the hierarchies that say a box's CPUs and CPU time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies {
    /// The unified (v2) hierarchy, when its `cpu` controller is enabled there.
    pub unified: Option<PathBuf>,
    /// v1 hierarchies by controller.
    pub cpuacct: Option<PathBuf>,
    pub cpuset: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
}

impl Hierarchies {
    /// From the host's /proc/self/mountinfo; `unified_has_cpu` says whether the v2
    /// hierarchy has the cpu controller (its cgroup.controllers).
    pub fn from_mountinfo(mountinfo: &str, unified_has_cpu: impl Fn(&Path) -> bool) -> Self {
        let mut found = Hierarchies::default();
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(dash) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            let (Some(point), Some(fstype), Some(options)) =
                (fields.get(4), fields.get(dash + 1), fields.get(dash + 3))
            else {
                continue;
            };
            let point = PathBuf::from(unescape(point));
            match *fstype {
                "cgroup2" if found.unified.is_none() && unified_has_cpu(&point) => {
                    found.unified = Some(point);
                }
                "cgroup" => {
                    let controllers: Vec<&str> = options.split(',').collect();
                    for (name, slot) in [
                        ("cpuacct", &mut found.cpuacct),
                        ("cpuset", &mut found.cpuset),
                        ("cpu", &mut found.cpu),
                    ] {
                        if slot.is_none() && controllers.contains(&name) {
                            *slot = Some(point.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        found
    }

    /// The host's, read now.
    pub fn discover() -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Hierarchies::from_mountinfo(&mountinfo, |point| {
            std::fs::read_to_string(point.join("cgroup.controllers"))
                .map(|c| c.split_whitespace().any(|name| name == "cpu"))
                .unwrap_or(false)
        })
    }

    /// The box a process with this /proc/PID/cgroup is in, or None: not a box.
    pub fn box_of(&self, proc_cgroup: &str) -> Option<BoxCgroups> {
        if self.cpuacct.is_none() && self.unified.is_some() {
            let path = proc_cgroup
                .lines()
                .find_map(|line| line.strip_prefix("0::"))?;
            return Some(BoxCgroups::Unified(box_prefix(path)?));
        }
        let path_of = |controller: &str| {
            proc_cgroup.lines().find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
                names
                    .split(',')
                    .any(|name| name == controller)
                    .then_some(path)
            })
        };
        Some(BoxCgroups::V1 {
            cpuacct: box_prefix(path_of("cpuacct")?)?,
            cpuset: path_of("cpuset").and_then(box_prefix),
            cpu: path_of("cpu").and_then(box_prefix),
        })
    }

    /// The box's CPUs and the time it has used.
    pub fn cpu(&self, cgroups: &BoxCgroups) -> Option<Cpu> {
        let read = |root: &Option<PathBuf>, path: &str, file: &str| {
            let dir = root.as_ref()?.join(path.trim_start_matches('/'));
            std::fs::read_to_string(dir.join(file)).ok()
        };
        let online = || std::fs::read_to_string("/sys/devices/system/cpu/online").ok();
        match cgroups {
            BoxCgroups::Unified(path) => {
                let stat = read(&self.unified, path, "cpu.stat")?;
                let usec = |key: &str| keyed(&stat, key).map(|v| v / (1_000_000 / USER_HZ));
                let cpus = read(&self.unified, path, "cpuset.cpus.effective").or_else(online)?;
                let quota = read(&self.unified, path, "cpu.max").and_then(|m| quota_v2(&m));
                Some(Cpu {
                    count: shown_cpus(&cpus, quota),
                    user_ticks: usec("user_usec")?,
                    system_ticks: usec("system_usec")?,
                })
            }
            BoxCgroups::V1 {
                cpuacct,
                cpuset,
                cpu,
            } => {
                let stat = read(&self.cpuacct, cpuacct, "cpuacct.stat")?;
                let cpus = cpuset
                    .as_deref()
                    .and_then(|path| {
                        read(&self.cpuset, path, "cpuset.effective_cpus")
                            .or_else(|| read(&self.cpuset, path, "cpuset.cpus"))
                    })
                    .or_else(online)?;
                let quota = cpu.as_deref().and_then(|path| {
                    let quota = read(&self.cpu, path, "cpu.cfs_quota_us")?;
                    let period = read(&self.cpu, path, "cpu.cfs_period_us")?;
                    quota_v1(&quota, &period)
                });
                Some(Cpu {
                    count: shown_cpus(&cpus, quota),
                    user_ticks: keyed(&stat, "user")?,
                    system_ticks: keyed(&stat, "system")?,
                })
            }
        }
    }
}

/// A box's own cgroups (the engine's paths, up to the box).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoxCgroups {
    Unified(String),
    V1 {
        cpuacct: String,
        cpuset: Option<String>,
        cpu: Option<String>,
    },
}

impl BoxCgroups {
    /// One name for the box.
    pub fn key(&self) -> &str {
        match self {
            BoxCgroups::Unified(path) => path,
            BoxCgroups::V1 { cpuacct, .. } => cpuacct,
        }
    }
}

/// The path up to the first component that names a container as the engine does
/// (`<64 hex>` with the cgroupfs driver, `docker-<64 hex>.scope` with systemd's), or
/// None. The first: a box may make cgroups of any name below its own.
pub fn box_prefix(path: &str) -> Option<String> {
    let mut end = 0;
    for component in path.split('/') {
        end += component.len();
        if is_container_component(component) {
            return Some(path[..end].to_owned());
        }
        end += 1;
    }
    None
}

fn is_container_component(component: &str) -> bool {
    let id = component
        .strip_prefix("docker-")
        .and_then(|rest| rest.strip_suffix(".scope"))
        .unwrap_or(component);
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `key value` lines (cpu.stat, cpuacct.stat).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_ascii_whitespace();
        (words.next()? == key).then(|| words.next()?.parse().ok())?
    })
}

/// CPUs in a cpuset list ("0-3,5").
pub fn cpuset_count(list: &str) -> u32 {
    list.trim()
        .split(',')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('-') {
            Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 0,
            },
            None => u32::from(part.parse::<u32>().is_ok()),
        })
        .fold(0u32, u32::saturating_add)
}

/// The quota in CPUs, rounded up (v2's cpu.max: "max 100000" or "50000 100000").
fn quota_v2(max: &str) -> Option<u32> {
    let mut words = max.split_ascii_whitespace();
    let (quota, period) = (words.next()?, words.next()?);
    quota_v1(quota, period)
}

fn quota_v1(quota: &str, period: &str) -> Option<u32> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: i64 = period.trim().parse().ok()?;
    if quota <= 0 || period <= 0 {
        return None;
    }
    u32::try_from((quota + period - 1) / period).ok()
}

/// As LXCFS's cpuinfo with its CFS view: the cpuset, or the quota rounded up where
/// that is fewer; at least one.
fn shown_cpus(cpuset: &str, quota: Option<u32>) -> u32 {
    let set = cpuset_count(cpuset);
    quota.map_or(set, |q| q.min(set)).max(1)
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        if let Some(digits) = octal {
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "084942ca1f8aa3ac1bd71318fe3a6bc6ed47c725e2610db0601c5162e40d81d3";

    #[test]
    fn the_box_is_the_first_container_component_whatever_it_made_below() {
        assert_eq!(
            box_prefix(&format!("/docker/{ID}/init.scope")),
            Some(format!("/docker/{ID}"))
        );
        assert_eq!(
            box_prefix(&format!(
                "/system.slice/docker-{ID}.scope/system.slice/ssh.service"
            )),
            Some(format!("/system.slice/docker-{ID}.scope"))
        );
        // A cgroup the box named like a container, below its own.
        let other = "f".repeat(64);
        assert_eq!(
            box_prefix(&format!("/docker/{ID}/{other}")),
            Some(format!("/docker/{ID}"))
        );
        for path in ["/", "/user.slice/session-1.scope", "/docker/abc", ""] {
            assert_eq!(box_prefix(path), None, "{path}");
        }
        assert_eq!(box_prefix(&format!("/docker/{}", &ID[1..])), None);
    }

    #[test]
    fn hierarchies_are_found_on_a_v1_host_and_a_v2_host() {
        let hybrid = "35 25 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
36 25 0:31 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
37 25 0:32 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n\
38 25 0:33 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n";
        let found = Hierarchies::from_mountinfo(hybrid, |_| false);
        assert_eq!(found.unified, None);
        assert_eq!(found.cpu.as_deref(), Some(Path::new("/sys/fs/cgroup/cpu")));
        assert_eq!(
            found.cpuacct.as_deref(),
            Some(Path::new("/sys/fs/cgroup/cpuacct"))
        );
        let combined =
            "36 25 0:31 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let found = Hierarchies::from_mountinfo(combined, |_| false);
        assert_eq!(found.cpu, found.cpuacct);
        let v2 = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let found = Hierarchies::from_mountinfo(v2, |_| true);
        assert_eq!(found.unified.as_deref(), Some(Path::new("/sys/fs/cgroup")));
        assert_eq!(
            Hierarchies::from_mountinfo("garbage\n- -\n", |_| true),
            Hierarchies::default()
        );
    }

    #[test]
    fn a_process_is_placed_in_its_box_on_either_kind_of_host() {
        let v1 = Hierarchies {
            cpuacct: Some("/c".into()),
            cpuset: Some("/s".into()),
            cpu: Some("/p".into()),
            unified: None,
        };
        let text = format!(
            "3:cpuset:/docker/{ID}\n2:cpuacct:/docker/{ID}/init.scope\n1:cpu:/docker/{ID}\n0::/docker/{ID}\n"
        );
        assert_eq!(
            v1.box_of(&text),
            Some(BoxCgroups::V1 {
                cpuacct: format!("/docker/{ID}"),
                cpuset: Some(format!("/docker/{ID}")),
                cpu: Some(format!("/docker/{ID}")),
            })
        );
        assert_eq!(v1.box_of("2:cpuacct:/\n1:cpu:/\n0::/\n"), None);
        let v2 = Hierarchies {
            unified: Some("/u".into()),
            ..Hierarchies::default()
        };
        assert_eq!(
            v2.box_of(&format!("0::/system.slice/docker-{ID}.scope/init.scope\n")),
            Some(BoxCgroups::Unified(format!(
                "/system.slice/docker-{ID}.scope"
            )))
        );
        assert_eq!(v2.box_of("0::/user.slice\n"), None);
        assert_eq!(v2.box_of(""), None);
    }

    #[test]
    fn cpus_shown_are_the_cpuset_or_the_quota_rounded_up() {
        assert_eq!(cpuset_count("0-3,5,7-8\n"), 7);
        assert_eq!(cpuset_count("1"), 1);
        assert_eq!(cpuset_count("3-1,x,"), 0);
        assert_eq!(shown_cpus("0-1", quota_v2("50000 100000")), 1);
        assert_eq!(shown_cpus("0-7", quota_v2("250000 100000")), 3);
        assert_eq!(shown_cpus("0-1", quota_v2("max 100000")), 2);
        assert_eq!(shown_cpus("1", quota_v1("-1", "100000")), 1);
        assert_eq!(shown_cpus("", None), 1);
    }

    #[test]
    fn a_boxs_cpu_is_read_from_v1_and_v2_files() {
        let root = std::env::temp_dir().join(format!("box-proc-cgroup-{}", std::process::id()));
        let dir = |sub: &str| {
            let d = root.join(sub).join("docker").join(ID);
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        std::fs::write(dir("acct").join("cpuacct.stat"), "user 250\nsystem 40\n").unwrap();
        std::fs::write(dir("set").join("cpuset.effective_cpus"), "1\n").unwrap();
        std::fs::write(dir("cpu").join("cpu.cfs_quota_us"), "50000\n").unwrap();
        std::fs::write(dir("cpu").join("cpu.cfs_period_us"), "100000\n").unwrap();
        let v1 = Hierarchies {
            cpuacct: Some(root.join("acct")),
            cpuset: Some(root.join("set")),
            cpu: Some(root.join("cpu")),
            unified: None,
        };
        let path = format!("/docker/{ID}");
        let cgroups = BoxCgroups::V1 {
            cpuacct: path.clone(),
            cpuset: Some(path.clone()),
            cpu: Some(path.clone()),
        };
        assert_eq!(
            v1.cpu(&cgroups),
            Some(Cpu {
                count: 1,
                user_ticks: 250,
                system_ticks: 40
            })
        );
        let unified = dir("unified");
        std::fs::write(
            unified.join("cpu.stat"),
            "usage_usec 3000000\nuser_usec 2500000\nsystem_usec 500000\n",
        )
        .unwrap();
        std::fs::write(unified.join("cpuset.cpus.effective"), "0-3\n").unwrap();
        std::fs::write(unified.join("cpu.max"), "200000 100000\n").unwrap();
        let v2 = Hierarchies {
            unified: Some(root.join("unified")),
            ..Hierarchies::default()
        };
        assert_eq!(
            v2.cpu(&BoxCgroups::Unified(path)),
            Some(Cpu {
                count: 2,
                user_ticks: 250,
                system_ticks: 50
            })
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/end\\04"), "/end\\04");
    }
}
