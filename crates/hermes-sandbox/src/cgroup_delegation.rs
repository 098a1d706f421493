//! A cgroup of its own for each box, so that Debian's systemd can be its PID 1.
//!
//! systemd keeps its units in cgroups and will not start where it cannot make them;
//! the engine mounts the box's cgroups read-only. The box is given its own directory
//! of cgroup v1's `name=systemd` hierarchy, writable. That hierarchy has no resource
//! controllers: whatever root in the box writes there changes no limit (memory, pids,
//! CPU stay in the read-only controller hierarchies), and the hierarchy's root, where
//! `release_agent` lives, stays out of the box. Only the kernel memory cgroups cost is
//! unbounded by the kernel (v1 has no `max.descendants`): crate::cgroup_watch freezes
//! a box that makes more than a server's systemd ever does.
//!
//! The engine checks a bind's source when it creates the container, before its id
//! (which names its cgroup) is known. So the box is created with a placeholder
//! directory of Hermes's own as the source, and just before each start the
//! placeholder is replaced by a link to the cgroup's directory, which Hermes makes
//! (the engine would make it at start, after checking the source).

use std::io;
use std::path::{Path, PathBuf};

/// Where cgroup v1's `name=systemd` hierarchy is mounted on a systemd-era host.
pub const HIERARCHY: &str = "/sys/fs/cgroup/systemd";

/// The cgroup parent of delegated boxes (the engine's own default with the cgroupfs
/// driver), set explicitly so that the box's directory is known by construction.
pub const CGROUP_PARENT: &str = "/docker";

/// Where the placeholders and links live on the host (root's only).
pub const LINKS: &str = "/run/hermes/box-cgroups";

/// The freezer hierarchy, through which a box is stopped at once.
pub const FREEZER: &str = "/sys/fs/cgroup/freezer";

/// Why an engine elsewhere gets no delegation.
pub const NOT_LOCAL: &str =
    "the engine runs in another place than Hermes (remote engine, or another runtime)";

/// Where the box sees its part of the hierarchy.
pub const TARGET: &str = "/sys/fs/cgroup/systemd";

/// The resource controllers of cgroup v1: a hierarchy with any of them attached is
/// never handed to a box.
const CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// The host's `name=systemd` hierarchy, checked usable for boxes.
#[derive(Debug, Clone)]
pub struct Delegation {
    hierarchy: PathBuf,
    links: PathBuf,
}

/// What the engine says of its cgroups (`GET /info`).
#[derive(Debug, Clone, Default)]
pub struct EngineCgroups {
    pub version: Option<String>,
    pub driver: Option<String>,
}

impl Delegation {
    /// Checks that boxes can be given a part of `hierarchy`: the engine runs on this
    /// host with cgroup v1 and the cgroupfs driver, `hierarchy` is the root of a
    /// controller-less `name=systemd` hierarchy in Hermes's view, and Hermes can make
    /// directories in it. Says why not otherwise.
    pub fn detect(
        hierarchy: &Path,
        links: &Path,
        engine: &EngineCgroups,
        local_engine: bool,
    ) -> Result<Self, String> {
        if !local_engine {
            return Err(NOT_LOCAL.to_owned());
        }
        match engine.version.as_deref() {
            Some("1") => {}
            Some(other) => {
                return Err(format!(
                    "the engine's cgroups are v{other}; only cgroup v1's name=systemd hierarchy (no resource controllers) can be handed to a box safely"
                ));
            }
            None => return Err("the engine does not say its cgroup version".to_owned()),
        }
        if engine.driver.as_deref() != Some("cgroupfs") {
            return Err(format!(
                "the engine's cgroup driver is {}, not cgroupfs",
                engine.driver.as_deref().unwrap_or("unknown")
            ));
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        check_mount(&mountinfo, hierarchy)?;
        // The root of the hierarchy (only it has release_agent), not a namespace's view;
        // and no release agent: a box emptying its groups would have the host run it.
        match std::fs::read_to_string(hierarchy.join("release_agent")) {
            Err(_) => {
                return Err(format!(
                    "{} is not the hierarchy's root in Hermes's view (a cgroup namespace?)",
                    hierarchy.display()
                ));
            }
            Ok(agent) if !agent.trim().is_empty() => {
                return Err(format!(
                    "the hierarchy has a release agent ({}), which a box could make the host run",
                    agent.trim()
                ));
            }
            Ok(_) => {}
        }
        if !Path::new(FREEZER).join("freezer.state").exists()
            && !Path::new(FREEZER).join("tasks").exists()
        {
            return Err(format!(
                "no freezer hierarchy at {FREEZER} to stop a box at once"
            ));
        }
        let parent = hierarchy.join(CGROUP_PARENT.trim_start_matches('/'));
        make_dir(&parent).map_err(|e| format!("cannot make {}: {e}", parent.display()))?;
        make_private_dir(links).map_err(|e| format!("cannot make {}: {e}", links.display()))?;
        Ok(Delegation {
            hierarchy: hierarchy.to_path_buf(),
            links: links.to_path_buf(),
        })
    }

    /// The placeholder a box named `name` is created with (an empty directory: the
    /// engine checks the source exists).
    pub fn placeholder(&self, name: &str) -> io::Result<PathBuf> {
        let path = self.links.join(checked_name(name)?);
        make_dir(&path)?;
        Ok(path)
    }

    /// Before each start of the box `id` created with `source` as its placeholder:
    /// makes its cgroup directory and points the placeholder at it.
    pub fn prepare_start(&self, source: &Path, id: &str) -> io::Result<()> {
        let named = source
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| checked_name(n).is_ok());
        if source.parent() != Some(self.links.as_path()) || !named {
            return Err(io::Error::other(format!(
                "{} is not one of Hermes's placeholders",
                source.display()
            )));
        }
        let group = self.group(id)?;
        make_dir(&group)?;
        let staged = source.with_extension("new");
        let _ = std::fs::remove_file(&staged);
        std::os::unix::fs::symlink(&group, &staged)?;
        match std::fs::symlink_metadata(source) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir(source)?,
            _ => {}
        }
        std::fs::rename(&staged, source)
    }

    /// The box's placeholder (and a link staged for it) is no longer needed.
    pub fn forget(&self, name: &str) {
        let name = name.strip_suffix(".new").unwrap_or(name);
        if let Ok(name) = checked_name(name) {
            let path = self.links.join(name);
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_dir(&path);
            let _ = std::fs::remove_file(path.with_extension("new"));
        }
    }

    /// The freezer state file of box `id`.
    pub fn freezer_state(&self, id: &str) -> PathBuf {
        Path::new(FREEZER)
            .join(CGROUP_PARENT.trim_start_matches('/'))
            .join(id)
            .join("freezer.state")
    }

    /// Removes the placeholders older than `grace` whose box (by name) is not in
    /// `alive`.
    pub fn prune(&self, alive: &std::collections::HashSet<String>, grace: std::time::Duration) {
        let Ok(entries) = std::fs::read_dir(&self.links) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > grace);
            if old && !alive.contains(name.trim_end_matches(".new")) {
                self.forget(&name);
            }
        }
    }

    /// The box `id`'s cgroup directory on the host.
    pub fn group(&self, id: &str) -> io::Result<PathBuf> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(io::Error::other(format!("not a container id: {id:?}")));
        }
        Ok(self
            .hierarchy
            .join(CGROUP_PARENT.trim_start_matches('/'))
            .join(id))
    }
}

/// `hierarchy` must be a cgroup v1 mount named systemd with no controller attached.
fn check_mount(mountinfo: &str, hierarchy: &Path) -> Result<(), String> {
    let wanted = hierarchy.to_string_lossy();
    let line = mountinfo
        .lines()
        .rev()
        .find(|line| line.split(' ').nth(4) == Some(&*wanted))
        .ok_or_else(|| format!("nothing is mounted at {wanted}"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let separator = fields
        .iter()
        .position(|f| *f == "-")
        .ok_or_else(|| format!("cannot read the mount at {wanted}"))?;
    let fstype = fields.get(separator + 1).copied().unwrap_or_default();
    let options = fields.get(separator + 3).copied().unwrap_or_default();
    if fstype != "cgroup" {
        return Err(format!("{wanted} is {fstype}, not a cgroup v1 hierarchy"));
    }
    let options: Vec<&str> = options.split(',').collect();
    if !options.contains(&"name=systemd") {
        return Err(format!("{wanted} is not the name=systemd hierarchy"));
    }
    if let Some(controller) = options.iter().find(|o| CONTROLLERS.contains(o)) {
        return Err(format!(
            "{wanted} has the {controller} controller attached: a box could change its limits"
        ));
    }
    Ok(())
}

fn checked_name(name: &str) -> io::Result<&str> {
    let plain = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        Ok(name)
    } else {
        Err(io::Error::other(format!("not a container name: {name:?}")))
    }
}

fn make_dir(path: &Path) -> io::Result<()> {
    match std::fs::create_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

fn make_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Err(io::Error::other("not a directory"));
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
";

    #[test]
    fn only_a_controller_less_name_systemd_hierarchy_is_handed_out() {
        assert_eq!(
            check_mount(HYBRID, Path::new("/sys/fs/cgroup/systemd")),
            Ok(())
        );
        let memory = check_mount(HYBRID, Path::new("/sys/fs/cgroup/memory"));
        assert!(memory.is_err_and(|e| e.contains("name=systemd")));
        let unified = check_mount(HYBRID, Path::new("/sys/fs/cgroup/unified"));
        assert!(unified.is_err_and(|e| e.contains("cgroup2")));
        let missing = check_mount(HYBRID, Path::new("/sys/fs/cgroup/pids"));
        assert!(missing.is_err_and(|e| e.contains("nothing is mounted")));
        let with_pids = HYBRID.replace("rw,xattr,name=systemd", "rw,pids,name=systemd");
        let refused = check_mount(&with_pids, Path::new("/sys/fs/cgroup/systemd"));
        assert!(refused.is_err_and(|e| e.contains("pids controller")));
    }

    #[test]
    fn engines_elsewhere_or_on_other_cgroups_get_no_delegation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let links = dir.path().join("links");
        let v1 = EngineCgroups {
            version: Some("1".into()),
            driver: Some("cgroupfs".into()),
        };
        let remote = Delegation::detect(dir.path(), &links, &v1, false);
        assert!(remote.is_err_and(|e| e.contains("another place")));
        let v2 = EngineCgroups {
            version: Some("2".into()),
            driver: Some("cgroupfs".into()),
        };
        let refused = Delegation::detect(dir.path(), &links, &v2, true);
        assert!(refused.is_err_and(|e| e.contains("v2")));
        let systemd_driver = EngineCgroups {
            version: Some("1".into()),
            driver: Some("systemd".into()),
        };
        let refused = Delegation::detect(dir.path(), &links, &systemd_driver, true);
        assert!(refused.is_err_and(|e| e.contains("driver is systemd")));
        // A plain directory is not a cgroup hierarchy.
        let refused = Delegation::detect(dir.path(), &links, &v1, true);
        assert!(refused.is_err_and(|e| e.contains("nothing is mounted")));
    }

    #[test]
    fn the_placeholder_becomes_a_link_to_the_boxs_own_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let delegation = Delegation {
            hierarchy: dir.path().join("hierarchy"),
            links: dir.path().join("links"),
        };
        std::fs::create_dir_all(dir.path().join("hierarchy/docker")).expect("parent");
        make_private_dir(&delegation.links).expect("links");
        let source = delegation.placeholder("hermes-abc").expect("placeholder");
        assert!(source.is_dir());
        let id = "a".repeat(64);
        for _ in 0..2 {
            // Again at a restart: the link is replaced, the group made anew.
            delegation.prepare_start(&source, &id).expect("prepared");
            let target = std::fs::read_link(&source).expect("a link");
            assert_eq!(target, dir.path().join("hierarchy/docker").join(&id));
            assert!(target.is_dir());
        }
        assert!(delegation.prepare_start(&source, "../../etc").is_err());
        let elsewhere = dir.path().join("elsewhere");
        assert!(delegation.prepare_start(&elsewhere, &id).is_err());
        assert!(delegation.placeholder("../x").is_err());
        let other = delegation.placeholder("hermes-def").expect("placeholder");
        let alive = std::collections::HashSet::from(["hermes-abc".to_owned()]);
        delegation.prune(&alive, std::time::Duration::from_secs(60));
        assert!(
            other.exists(),
            "young placeholders may be a box being created"
        );
        delegation.prune(&alive, std::time::Duration::ZERO);
        assert!(!other.exists(), "its box is gone");
        assert!(
            std::fs::symlink_metadata(&source).is_ok(),
            "its box is alive"
        );
        delegation.forget("hermes-abc");
        assert!(std::fs::symlink_metadata(&source).is_err());
    }
}
