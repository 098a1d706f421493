//! /etc/hosts and /etc/resolv.conf as a Debian server has them: plain files of the
//! box's own, put in before its first start. A box whose network the engine leaves
//! alone (`network_mode: none`) gets neither from the engine, and costs the engine
//! no network sandbox (two runs of its own binary per start).

use super::*;
use crate::tar_write::TarWriter;

/// /etc/hosts as Debian's installer writes it for a host without a domain.
pub(super) fn etc_hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n\n# The following lines are desirable for IPv6 capable hosts\n::1     localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n"
    )
}

/// /etc/resolv.conf naming one resolver, as the engine wrote it (and an installer's
/// static configuration does).
fn resolv_conf(resolver: &str) -> String {
    format!("nameserver {resolver}\n")
}

impl DockerSandbox {
    /// Whether the engine writes the box's /etc/hosts (and resolv.conf) at every
    /// start: only when it manages the box's network.
    pub(super) fn engine_writes_hosts(&self) -> bool {
        !self.profile.network_disabled()
    }

    /// Adds /etc/hosts and, when the box has a resolver, /etc/resolv.conf, dated with
    /// the installation (a date in the box's first second would count as the first
    /// session's own file), unless the engine writes them.
    pub(super) fn add_name_files(&self, tar: &mut TarWriter) -> Result<(), SandboxError> {
        if self.engine_writes_hosts() {
            return Ok(());
        }
        let mtime = Self::server_file_time(self.installed_at());
        let hosts = etc_hosts(&self.profile.hostname);
        tar.file("etc/hosts", hosts.as_bytes(), 0o644, mtime)
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        if let Some(resolver) = &self.profile.dns {
            tar.file(
                "etc/resolv.conf",
                resolv_conf(resolver).as_bytes(),
                0o644,
                mtime,
            )
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_has_the_installers_layout() {
        let hosts = etc_hosts("web-prod-01");
        let lines: Vec<&str> = hosts.lines().collect();
        assert_eq!(lines[0], "127.0.0.1\tlocalhost");
        assert_eq!(lines[1], "127.0.1.1\tweb-prod-01");
        assert!(hosts.contains("::1     localhost ip6-localhost ip6-loopback\n"));
        assert!(
            !hosts.contains("fe00::0") && !hosts.contains("172."),
            "no engine lines"
        );
    }

    #[test]
    fn resolv_conf_names_the_resolver_alone() {
        assert_eq!(resolv_conf("10.0.2.3"), "nameserver 10.0.2.3\n");
    }
}
