//! The veth link between a box and its gateway namespace: `gw0` (the gateway and
//! resolver addresses) in the gateway namespace, its peer `eth0` in the box with the
//! box's address, a KVM-like MAC and a default route through the gateway.

use std::path::PathBuf;

use hermes_core::config::EgressNetworkConfig;
use rand::RngExt;

use crate::command::{self, CommandError};
use crate::netns;

/// The gateway's side of the link.
pub const GATEWAY_LINK: &str = "gw0";
/// The box's side of the link.
const BOX_LINK: &str = "eth0";

/// A MAC under `prefix` (three bytes, `52:54:00`) with a random tail.
pub fn random_mac(prefix: &str) -> String {
    let tail: [u8; 3] = rand::rng().random();
    format!(
        "{}:{:02x}:{:02x}:{:02x}",
        prefix.to_ascii_lowercase(),
        tail[0],
        tail[1],
        tail[2]
    )
}

/// Links the box whose first process is `init_pid` to the gateway namespace `gateway`
/// (`reused`: it existed already, and may still hold the link of the box's previous
/// run, which goes first).
pub fn connect(
    gateway: &str,
    reused: bool,
    container_id: &str,
    init_pid: u32,
    network: &EgressNetworkConfig,
) -> Result<(), CommandError> {
    the_containers(init_pid, container_id)?;
    not_the_hosts(init_pid)?;
    let namespace = netns::open(gateway).map_err(|source| CommandError::Namespace {
        path: gateway.to_owned(),
        source,
    })?;
    if reused {
        let _ = command::run_at(
            Some(&namespace),
            "ip",
            &["link", "delete", GATEWAY_LINK],
            "",
        );
    }
    let mac = random_mac(&network.mac_prefix);
    let prefix = network.prefix_len;
    // One `ip` for the gateway's side: the pair is made there, its peer goes straight
    // into the box under its final name and MAC.
    let gateway_side = format!(
        "link add {GATEWAY_LINK} type veth peer name {BOX_LINK} address {mac} netns {init_pid}\n\
         link set lo up\n\
         addr add {}/{prefix} dev {GATEWAY_LINK}\n\
         addr add {}/32 dev {GATEWAY_LINK}\n\
         link set {GATEWAY_LINK} up\n",
        network.gateway, network.resolver,
    );
    command::run_at(Some(&namespace), "ip", &["-batch", "-"], &gateway_side)?;
    let box_side = format!(
        "addr add {}/{prefix} dev {BOX_LINK}\n\
         link set {BOX_LINK} up\n\
         route add default via {}\n",
        network.address, network.gateway,
    );
    command::run(
        Some(&box_namespace(init_pid)),
        "ip",
        &["-batch", "-"],
        &box_side,
    )?;
    Ok(())
}

/// Refuses a pid that is not the container's as Hermes sees it: the engine reports
/// pids of the host, which a Hermes in a container of its own sees only when it
/// shares the host's processes (compose: `pid: host`). Docker puts each container
/// in a cgroup named with its id.
fn the_containers(init_pid: u32, container_id: &str) -> Result<(), CommandError> {
    let path = format!("/proc/{init_pid}/cgroup");
    let refused = |reason: String| CommandError::Namespace {
        path: path.clone(),
        source: std::io::Error::other(reason),
    };
    let cgroups = std::fs::read_to_string(&path).map_err(|error| {
        refused(format!(
            "the box's process is not in Hermes's view ({error}): Hermes must see the host's processes (compose: pid: host)"
        ))
    })?;
    if container_id.len() < 12 || !cgroups.contains(container_id) {
        return Err(refused(
            "the process is not the box's (does Hermes see the host's processes? compose: pid: host)"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Refuses a process in Hermes's own network namespace (a box's process gone and
/// its pid reused, say): the box's side of the link must never land on the host.
fn not_the_hosts(init_pid: u32) -> Result<(), CommandError> {
    use std::os::unix::fs::MetadataExt;
    let inode = |path: &std::path::Path| std::fs::metadata(path).map(|m| (m.dev(), m.ino()));
    let theirs = box_namespace(init_pid);
    let namespace_error = |source| CommandError::Namespace {
        path: theirs.display().to_string(),
        source,
    };
    let own = inode(std::path::Path::new("/proc/self/ns/net")).map_err(namespace_error)?;
    if inode(&theirs).map_err(namespace_error)? == own {
        return Err(namespace_error(std::io::Error::other(
            "the process is in Hermes's own network namespace, not a box's",
        )));
    }
    Ok(())
}

/// The box's network namespace, through its first process.
fn box_namespace(init_pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{init_pid}/ns/net"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_that_is_not_the_containers_is_refused() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let own = the_containers(std::process::id(), id).expect_err("not a box");
        assert!(own.to_string().contains("not the box's"), "{own}");
        let unseen = the_containers(u32::MAX - 1, id).expect_err("no such process");
        assert!(unseen.to_string().contains("pid: host"), "{unseen}");
    }

    #[test]
    fn macs_keep_the_prefix() {
        let mac = random_mac("52:54:00");
        assert!(mac.starts_with("52:54:00:"), "{mac}");
        assert_eq!(mac.len(), 17);
    }
}
