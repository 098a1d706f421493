//! Kernel limits the boxes share with each other and with the host's root. Without a
//! user namespace, a box's root is the host's uid 0 to the kernel's per-user counts,
//! so every box's systemd, journald and logind draw on one inotify allowance
//! (`fs.inotify.max_user_instances`). Past it, systemd in a new box cannot start its
//! units and the box never finishes booting.

use std::path::Path;

/// inotify instances one systemd box takes (PID 1, journald, logind: four were
/// measured), with room for the services an attacker starts.
pub const INOTIFY_PER_BOX: u64 = 8;
/// Left for the host's own root processes and Hermes's cgroup watch.
pub const INOTIFY_HOST_SHARE: u64 = 128;
/// Where the kernel keeps the allowance.
pub const INOTIFY_INSTANCES: &str = "/proc/sys/fs/inotify/max_user_instances";

/// The allowance `max_containers` systemd boxes need.
pub fn inotify_instances_needed(max_containers: usize) -> u64 {
    (max_containers as u64)
        .saturating_mul(INOTIFY_PER_BOX)
        .saturating_add(INOTIFY_HOST_SHARE)
}

/// What to tell the operator when the allowance read from `path` is too small for
/// `max_containers` systemd boxes (None when it is enough or cannot be read).
pub fn inotify_shortfall(path: &Path, max_containers: usize) -> Option<String> {
    let have: u64 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    let need = inotify_instances_needed(max_containers);
    (have < need).then(|| {
        format!(
            "fs.inotify.max_user_instances is {have}; {max_containers} systemd boxes need about {need} (each box's root shares the host root's allowance): past about {} boxes, new boxes do not finish booting. Raise it (scripts/ensure-sysctl.sh, or sysctl -w fs.inotify.max_user_instances={need})",
            have.saturating_sub(INOTIFY_HOST_SHARE) / INOTIFY_PER_BOX
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debians_default_allowance_is_named_as_too_small_for_fifty_boxes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("max_user_instances");
        std::fs::write(&file, "128\n").expect("write");
        let told = inotify_shortfall(&file, 50).expect("128 is too small");
        assert!(
            told.contains("is 128") && told.contains("need about 528"),
            "{told}"
        );
        std::fs::write(&file, "8192\n").expect("write");
        assert_eq!(inotify_shortfall(&file, 50), None);
        assert_eq!(inotify_shortfall(&dir.path().join("missing"), 50), None);
        std::fs::write(&file, "junk").expect("write");
        assert_eq!(inotify_shortfall(&file, 50), None);
    }
}
