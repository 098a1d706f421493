//! What the host must give Hermes for the boxes' networks, checked at start so that a
//! missing piece is one clear error instead of every container failing.

/// CAP_NET_ADMIN (links, addresses, firewall) and CAP_SYS_ADMIN (`setns` into the
/// gateway and box namespaces, `ip netns add`).
const NEEDED_CAPABILITIES: &[(u32, &str)] = &[(12, "CAP_NET_ADMIN"), (21, "CAP_SYS_ADMIN")];
/// Binaries run from the host.
const NEEDED_PROGRAMS: &[&str] = &["ip", "iptables-restore"];

/// Fails with what is missing.
pub fn check() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let missing: Vec<&str> = NEEDED_CAPABILITIES
        .iter()
        .filter(|(bit, _)| effective & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "egress needs {} (run as root, or grant them): Hermes creates each box's gateway namespace and enters it",
            missing.join(" and ")
        ));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for program in NEEDED_PROGRAMS {
        let found = std::env::split_paths(&path).any(|dir| dir.join(program).is_file());
        if !found {
            return Err(format!(
                "egress needs `{program}` (Debian: iproute2 and iptables)"
            ));
        }
    }
    Ok(())
}
