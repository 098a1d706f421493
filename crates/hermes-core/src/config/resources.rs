//! `container_pool.security.cpu_pinning` and `container_pool.security.lxcfs`: how a
//! box's CPU and its view of its own resources look like a small VPS's.

use std::path::{Component, Path, PathBuf};

use garde::Validate;
use serde::{Deserialize, Serialize};

/// Whether each box is pinned to one of the host's cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuPinning {
    /// Every box may run on every core (only `cpu_quota` bounds it): `nproc` shows
    /// the host's count, which a 1-vCPU VPS would not.
    Off,
    /// Each box gets one whole core (a cpuset), chosen in turn among the host's
    /// online cores; `cpu_quota` still bounds how much of it the box uses.
    Core,
}

/// What Hermes does about LXCFS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LxcfsMode {
    /// Use it when it runs; otherwise start boxes without it and say so.
    Auto,
    /// Refuse to start (and to create boxes) without it.
    Required,
    /// Never use it: boxes show the host's /proc files.
    Off,
}

/// Whether a box gets a cgroup of its own for its systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupDelegation {
    /// Where the host allows it (cgroup v1's `name=systemd` hierarchy, an engine on
    /// this host): boxes of a systemd image get their own part of that hierarchy.
    /// Elsewhere the `fallback_image` (Debian's sysvinit) is used, and said so.
    Auto,
    /// Never: a systemd image is replaced by the `fallback_image`.
    Off,
}

/// Whether each box gets a boot clock of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootClock {
    /// Where the engine has the boxes' runtime (`hermes-box`, registered by
    /// `scripts/ensure-box-runtime.sh`): each box gets a time namespace whose clocks
    /// start at its boot. Elsewhere boxes keep the host's clocks, and it is said.
    Auto,
    /// Refuse to start without the boxes' runtime.
    Required,
    /// Boxes keep the host's clocks: PID 1 looks started long after the boot.
    Off,
}

/// `container_pool.security.lxcfs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct LxcfsConfig {
    /// Use LXCFS: `auto`, `required` or `off`.
    #[garde(skip)]
    pub mode: LxcfsMode,
    /// Where LXCFS is mounted on the engine's host (and seen by Hermes).
    #[garde(custom(lxcfs_path))]
    pub path: PathBuf,
}

impl Default for LxcfsConfig {
    fn default() -> Self {
        Self {
            mode: LxcfsMode::Auto,
            path: PathBuf::from("/var/lib/lxcfs"),
        }
    }
}

/// The engine makes binds from this path: it must be absolute and plain, so a bind
/// never lands anywhere but under it.
fn lxcfs_path(path: &Path, _: &()) -> garde::Result {
    if !path.is_absolute() {
        return Err(garde::Error::new(
            "must be an absolute path, e.g. /var/lib/lxcfs",
        ));
    }
    let text = path.to_string_lossy();
    // `components()` drops inner `.`s: look at the text's own segments too.
    let plain = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && text
            .split('/')
            .all(|segment| segment != "." && segment != "..");
    if !plain || text.chars().any(|c| c.is_control() || c == ',' || c == ':') {
        return Err(garde::Error::new(
            "must be a plain path (no `.`, `..`, `,`, `:` or control characters)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lxcfs_paths_are_absolute_and_plain() {
        assert!(lxcfs_path(Path::new("/var/lib/lxcfs"), &()).is_ok());
        assert!(lxcfs_path(Path::new("/srv/lxc fs"), &()).is_ok());
        for bad in [
            "var/lib/lxcfs",
            "",
            "/var/lib/../etc",
            "/var/./lib",
            "/a:b",
            "/a,b",
        ] {
            assert!(lxcfs_path(Path::new(bad), &()).is_err(), "{bad}");
        }
    }
}
