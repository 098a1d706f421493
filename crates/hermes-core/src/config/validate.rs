//! Checks on single configuration values that a type alone cannot express.

use std::path::Path;

use super::{
    AuthMode, AuthenticationConfig, BootClock, ByteSize, CaptureConfig, ContainerPoolConfig,
    DockerConfig, EgressConfig, EgressMode, MetricsConfig, Seconds, ServerConfig,
};
use crate::persona;

type Result = garde::Result;

fn fail(message: impl Into<String>) -> Result {
    Err(garde::Error::new(message.into()))
}

pub(super) fn non_empty_path(path: &Path, _: &()) -> Result {
    if path.as_os_str().is_empty() {
        return fail("must not be empty");
    }
    Ok(())
}

/// The CA certificate's path: its key is the same path with the extension `key`.
pub(super) fn ca_path(path: &Path, ctx: &()) -> Result {
    non_empty_path(path, ctx)?;
    if path.file_name().is_none() {
        return fail("must name a file, e.g. /data/keys/egress_ca.crt");
    }
    if path.extension().is_some_and(|extension| extension == "key") {
        return fail(
            "the CA's key is this path with the extension `key`: name the certificate, e.g. egress_ca.crt",
        );
    }
    Ok(())
}

/// A name of the sensor's CA, as every box shows it: plain text that does not give
/// the honeypot away.
pub(super) fn ca_name(name: &str, _: &()) -> Result {
    if name.trim().is_empty() || name.chars().count() > 64 {
        return fail("must be 1 to 64 characters");
    }
    if name.chars().any(char::is_control) {
        return fail("must not contain control characters");
    }
    if name.to_ascii_lowercase().contains("hermes")
        || name.to_ascii_lowercase().contains("honeypot")
    {
        return fail("must not name Hermes or a honeypot: every box shows it");
    }
    Ok(())
}

pub(super) fn file_name(name: &str, _: &()) -> Result {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return fail("must be a plain file name (no '/')");
    }
    Ok(())
}

/// The RSA host key's path: its Ed25519 and ECDSA siblings are kept beside it under
/// their fixed names, so it must name a file other than those.
pub(super) fn host_key_path(path: &Path, ctx: &()) -> Result {
    non_empty_path(path, ctx)?;
    let Some(name) = path.file_name() else {
        return fail("must name a file, e.g. /data/keys/ssh_host_rsa_key");
    };
    for sibling in ["ssh_host_ed25519_key", "ssh_host_ecdsa_key"] {
        if name == sibling {
            return fail(format!(
                "`{sibling}` is the file the {} host key is kept in beside the RSA key; name the RSA key's file, e.g. ssh_host_rsa_key",
                if sibling.contains("ed25519") {
                    "Ed25519"
                } else {
                    "ECDSA"
                }
            ));
        }
    }
    Ok(())
}

/// RFC 1123 host name: labels of letters, digits and hyphens, 1..=63 long.
pub(super) fn hostname(name: &str, _: &()) -> Result {
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.len() > 253 || !name.split('.').all(valid_label) {
        return fail("must be a host name (letters, digits, '-', '.'; labels of 1 to 63)");
    }
    Ok(())
}

/// The static DNS map's names: host names (also `_` as in `_dmarc`), any case, a
/// trailing dot allowed.
pub(super) fn dns_names(
    hosts: &std::collections::BTreeMap<String, std::net::IpAddr>,
    _: &(),
) -> Result {
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    for name in hosts.keys() {
        let bare = name.strip_suffix('.').unwrap_or(name);
        if bare.len() > 253 || !bare.split('.').all(valid_label) {
            return fail(format!(
                "{:?} is not a DNS name (letters, digits, '-', '_', '.'; labels of 1 to 63)",
                crate::escape::escape_untrusted(name)
            ));
        }
    }
    Ok(())
}

/// Sensor names end up in Docker labels and events: keep them to a safe alphabet.
pub(super) fn sensor_name(name: &str, _: &()) -> Result {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return fail("must be 1 to 64 of letters, digits, '-', '_', '.'");
    }
    Ok(())
}

pub(super) fn ssh_banner(banner: &str, _: &()) -> Result {
    if banner == "auto" {
        return Ok(());
    }
    if !banner.starts_with("SSH-2.0-") {
        return fail("must be `auto` or start with `SSH-2.0-`");
    }
    // RFC 4253 4.2: at most 255 bytes including CR LF, printable US-ASCII.
    if banner.len() > 253 || !banner.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return fail("must be printable ASCII, at most 253 characters");
    }
    Ok(())
}

pub(super) fn network_mode(mode: &str, _: &()) -> Result {
    if mode == "host" || mode.starts_with("container:") {
        return fail(
            "`host` and `container:*` would share a network stack with the host or another container",
        );
    }
    if mode.is_empty() {
        return fail("must not be empty (use `none`)");
    }
    Ok(())
}

/// A private IPv4 address (RFC 1918): what a VPS's `eth0` behind NAT has.
pub(super) fn private_ipv4(addr: &std::net::Ipv4Addr, _: &()) -> Result {
    if addr.is_private() {
        Ok(())
    } else {
        Err(garde::Error::new(format!(
            "must be a private address (10/8, 172.16/12, 192.168/16), not {addr}"
        )))
    }
}

/// Three bytes of a MAC address, `xx:xx:xx` in lower-case hex, unicast.
pub(super) fn mac_prefix(prefix: &str, _: &()) -> Result {
    let bytes: Vec<&str> = prefix.split(':').collect();
    let hex = |b: &&str| b.len() == 2 && b.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    if bytes.len() != 3 || !bytes.iter().all(hex) {
        return Err(garde::Error::new(format!(
            "expected three lower-case hex bytes like \"52:54:00\", not {prefix:?}"
        )));
    }
    match u8::from_str_radix(bytes[0], 16) {
        Ok(first) if first & 1 == 0 => Ok(()),
        _ => Err(garde::Error::new("the first byte must be unicast (even)")),
    }
}

pub(super) fn memory_size(size: &ByteSize, _: &()) -> Result {
    if size.bytes() == 0 {
        return fail("must be more than 0");
    }
    Ok(())
}

/// A container memory limit: a size Docker accepts (at least 6 MiB).
pub(super) fn memory_limit(size: &ByteSize, ctx: &()) -> Result {
    memory_size(size, ctx)?;
    if *size < ByteSize::mib(6) {
        return fail("must be at least 6m (Docker's minimum)");
    }
    Ok(())
}

/// Linux capability names as Docker accepts them (with or without `CAP_`).
const CAPABILITIES: &[&str] = &[
    "ALL",
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

pub(super) fn capability(name: &str, _: &()) -> Result {
    let bare = name.strip_prefix("CAP_").unwrap_or(name);
    if !CAPABILITIES.contains(&bare) {
        return fail(format!("`{name}` is not a Linux capability name"));
    }
    Ok(())
}

pub(super) fn security_opt(opt: &str, _: &()) -> Result {
    if opt.is_empty() {
        return fail("must not be empty");
    }
    // `seccomp=unconfined` and `apparmor=unconfined` remove isolation layers; refuse
    // them rather than let a typo weaken containment.
    let lowered = opt.to_ascii_lowercase().replace(':', "=");
    if lowered == "apparmor=unconfined" {
        return fail(format!("`{opt}` disables a containment layer"));
    }
    // The profile is chosen by `seccomp` (Hermes's own or Docker's default); through
    // the API a path here would not even load.
    if lowered.starts_with("seccomp=") {
        return fail(format!(
            "`{opt}`: the seccomp profile is set by `container_pool.security.seccomp` (`hermes` or `docker-default`)"
        ));
    }
    Ok(())
}

/// The PROXY protocol is trusted only from named balancers.
pub(super) fn server(server: &ServerConfig, _: &()) -> Result {
    if server.proxy_protocol && server.proxy_trusted.is_empty() {
        return fail(
            "`proxy_protocol` needs `proxy_trusted`: the balancers' addresses or CIDR blocks",
        );
    }
    Ok(())
}

/// The engine's addresses agree with `tls`, as the client is built at start:
/// `https://` needs the certificate files, plain `http://` cannot use them.
pub(super) fn docker(docker: &DockerConfig, _: &()) -> Result {
    for (key, url) in [
        ("base_url", &docker.base_url),
        ("stream_url", &docker.stream_url),
    ] {
        let Some(url) = url else { continue };
        if url.starts_with("https://") && docker.tls.is_none() {
            return fail(format!(
                "`{key}` ({url}) needs `tls`: the CA, certificate and key files"
            ));
        }
        if url.starts_with("http://") && docker.tls.is_some() {
            return fail(format!(
                "`{key}` ({url}) is plain HTTP but `tls` is set: use tcp:// or https://"
            ));
        }
    }
    Ok(())
}

/// The unauthenticated metrics listener never shares the attacker-facing SSH address.
/// Port 0 is any free port, which the kernel never gives to both.
pub(super) fn metrics(server: &ServerConfig) -> impl FnOnce(&MetricsConfig, &()) -> Result + '_ {
    move |metrics, _| {
        let listen = metrics.listen;
        let same_ip = listen.ip() == server.host
            || listen.ip().is_unspecified()
            || server.host.is_unspecified();
        if metrics.enabled && listen.port() != 0 && listen.port() == server.port && same_ip {
            return fail(format!(
                "`listen` ({listen}) must not be the SSH listener's address (server.host, server.port)"
            ));
        }
        Ok(())
    }
}

/// The box's network is plumbed by Hermes into a box that Docker gave none, and its
/// addresses must be distinct and on one network.
pub(super) fn egress<'a>(
    pool: &'a ContainerPoolConfig,
    docker: &'a DockerConfig,
    capture: &'a CaptureConfig,
) -> impl FnOnce(&EgressConfig, &()) -> Result + 'a {
    move |egress, _| {
        if egress.mode == EgressMode::Off {
            return Ok(());
        }
        if egress.mode == EgressMode::Fetch && !capture.enabled {
            return fail(
                "`mode` fetch keeps downloads in the capture store: it needs capture.enabled",
            );
        }
        // Hermes enters each box's network namespace through the box's process on
        // this machine: an engine over TCP must be on this machine too (the compose
        // stack's socket proxy), with its processes in Hermes's view.
        if let Some(url) = &docker.base_url
            && !url.starts_with("unix://")
            && !docker.same_host
        {
            return fail(format!(
                "`mode` {} needs the Docker engine on this machine: Hermes enters each box's network namespace through the box's process. {url} may be another host; when it is a socket proxy on this machine and Hermes sees the host's processes (the compose stack: pid: host), set docker.same_host: true. An engine on another host cannot give boxes a network: use egress.mode off there",
                format!("{:?}", egress.mode).to_lowercase(),
            ));
        }
        if pool.security.network_mode != "none" {
            return fail(format!(
                "`mode` {} needs container_pool.security.network_mode \"none\" (Hermes gives the box its network), not {:?}",
                format!("{:?}", egress.mode).to_lowercase(),
                pool.security.network_mode
            ));
        }
        let net = &egress.network;
        let mask = u32::MAX << (32 - u32::from(net.prefix_len));
        let same_net = |a: std::net::Ipv4Addr| u32::from(a) & mask == u32::from(net.address) & mask;
        if !same_net(net.gateway) || !same_net(net.resolver) {
            return fail(format!(
                "`network.gateway` and `network.resolver` must be on the box's network ({}/{})",
                net.address, net.prefix_len
            ));
        }
        if net.address == net.gateway || net.address == net.resolver || net.gateway == net.resolver
        {
            return fail("`network.address`, `gateway` and `resolver` must differ");
        }
        Ok(())
    }
}

/// `penalties.max` caps what `min` must reach.
pub(super) fn penalty_max(min: &Seconds) -> impl FnOnce(&Seconds, &()) -> Result + '_ {
    move |max, _| {
        if max < min {
            return fail(format!("must be at least `min` ({min})"));
        }
        Ok(())
    }
}

/// The pool cannot keep more ready containers than it may run.
pub(super) fn container_pool(pool: &ContainerPoolConfig, _: &()) -> Result {
    if pool.size > pool.max_containers {
        return fail(format!(
            "`size` ({}) must not exceed `max_containers` ({})",
            pool.size, pool.max_containers
        ));
    }
    Ok(())
}

/// A boot clock of the box's own comes with the boxes' runtime, which another
/// `runtime` replaces.
pub(super) fn boot_clock(runtime: &Option<String>) -> impl FnOnce(&BootClock, &()) -> Result + '_ {
    move |clock, _| match (clock, runtime) {
        (BootClock::Required, Some(other)) => fail(format!(
            "`required` needs the boxes' own runtime, and `runtime` names another ({other}); use `auto` or `off`"
        )),
        _ => Ok(()),
    }
}

pub(super) fn runtime_name(name: &str, _: &()) -> Result {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return fail("must be a runtime name as registered with the engine, e.g. `runsc`");
    }
    Ok(())
}

pub(super) fn userns_mode(mode: &str, _: &()) -> Result {
    if mode != "host" {
        return fail(
            "the only per-container value is `host` (remapping itself is a daemon setting)",
        );
    }
    Ok(())
}

pub(super) fn docker_url(url: &str, _: &()) -> Result {
    if let Some(path) = url.strip_prefix("unix://") {
        if path.is_empty() {
            return fail("`unix://` needs a socket path");
        }
        return Ok(());
    }
    let rest = url
        .strip_prefix("tcp://")
        .or_else(|| url.strip_prefix("http://"))
        .or_else(|| url.strip_prefix("https://"));
    let Some(rest) = rest else {
        return fail(
            "must start with unix://, tcp://, http:// or https:// (https needs docker.tls)",
        );
    };
    let authority = rest.trim_end_matches('/');
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => fail("must name a host and a port, e.g. tcp://127.0.0.1:2375"),
    }
}

fn algorithm_list(names: &[String], supported: &[&str]) -> Result {
    if names.is_empty() {
        return fail("must name at least one algorithm");
    }
    let unsupported: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|name| !supported.contains(name))
        .collect();
    if !unsupported.is_empty() {
        return fail(format!(
            "not implemented by Hermes's SSH transport: {} (it implements: {})",
            unsupported.join(", "),
            supported.join(", ")
        ));
    }
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return fail(format!("`{name}` is listed twice"));
        }
    }
    Ok(())
}

pub(super) fn kex_algorithms(names: &[String], _: &()) -> Result {
    algorithm_list(names, persona::SUPPORTED_KEX)
}

pub(super) fn host_key_algorithms(names: &[String], _: &()) -> Result {
    algorithm_list(names, persona::SUPPORTED_HOST_KEY)
}

pub(super) fn ciphers(names: &[String], _: &()) -> Result {
    algorithm_list(names, persona::SUPPORTED_CIPHERS)
}

pub(super) fn macs(names: &[String], _: &()) -> Result {
    algorithm_list(names, persona::SUPPORTED_MACS)
}

pub(super) fn compression(names: &[String], _: &()) -> Result {
    algorithm_list(names, persona::SUPPORTED_COMPRESSION)
}

/// Settings that only mean something in one mode must not be given for another.
pub(super) fn authentication(auth: &AuthenticationConfig, _: &()) -> Result {
    let mode = auth.effective_mode();
    if auth.accept_all_after_failures.is_some() && mode != AuthMode::AcceptAfterFailures {
        return fail("`accept_all_after_failures` applies only to mode `accept_after_failures`");
    }
    if auth.sticky.is_some() && mode != AuthMode::Sticky {
        return fail("`sticky` settings apply only to mode `sticky`");
    }
    let sticky = auth.sticky_settings();
    if sticky.min_failures > sticky.max_failures {
        return fail("`sticky.min_failures` must not exceed `sticky.max_failures`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_follow_the_prototype_rule() {
        let size = |text| ByteSize::parse(text).expect("parses");
        for good in ["256m", "1g", "512k", "100M", "2G", "1024K"] {
            assert!(memory_size(&size(good), &()).is_ok(), "{good}");
        }
        assert!(memory_size(&size("0k"), &()).is_err());
        assert!(memory_limit(&size("5m"), &()).is_err());
        assert!(memory_limit(&size("6m"), &()).is_ok());
    }

    #[test]
    fn ca_names_and_paths_are_checked() {
        assert!(ca_name("Northwave Hosting Internal CA G2", &()).is_ok());
        for bad in ["", "  ", "Hermes Root", "my HONEYPOT ca", "a\nb"] {
            assert!(ca_name(bad, &()).is_err(), "{bad:?}");
        }
        assert!(ca_name(&"x".repeat(65), &()).is_err());
        assert!(ca_path(Path::new("/data/keys/egress_ca.crt"), &()).is_ok());
        for bad in ["", "/", "/data/keys/ca.key"] {
            assert!(ca_path(Path::new(bad), &()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_key_paths_leave_room_for_the_siblings() {
        assert!(host_key_path(Path::new("/data/keys/ssh_host_rsa_key"), &()).is_ok());
        for bad in [
            "",
            "/",
            "/data/keys/..",
            "/data/keys/ssh_host_ed25519_key",
            "keys/ssh_host_ecdsa_key",
        ] {
            assert!(host_key_path(Path::new(bad), &()).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames() {
        assert!(hostname("web-prod-01", &()).is_ok());
        assert!(hostname("a.b.c", &()).is_ok());
        for bad in ["", "-a", "a-", "a..b", "a_b", "a b", &"x".repeat(64)] {
            assert!(hostname(bad, &()).is_err(), "{bad}");
        }
    }

    #[test]
    fn banners() {
        assert!(ssh_banner("auto", &()).is_ok());
        assert!(ssh_banner("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10", &()).is_ok());
        assert!(ssh_banner("SSH-1.99-x", &()).is_err());
        assert!(ssh_banner("SSH-2.0-x\r\n", &()).is_err());
    }

    #[test]
    fn docker_urls() {
        for good in [
            "unix:///var/run/docker.sock",
            "tcp://127.0.0.1:2375",
            "http://proxy:2375/",
            "https://engine:2376",
        ] {
            assert!(docker_url(good, &()).is_ok(), "{good}");
        }
        for bad in [
            "unix://",
            "ftp://x:1",
            "tcp://x",
            "tcp://:1",
            "/var/run/docker.sock",
        ] {
            assert!(docker_url(bad, &()).is_err(), "{bad}");
        }
    }

    #[test]
    fn algorithm_lists_name_what_the_transport_lacks() {
        let names = vec![
            "curve25519-sha256".to_owned(),
            "sntrup761x25519-sha512".to_owned(),
        ];
        let error = kex_algorithms(&names, &()).expect_err("unsupported");
        assert!(
            error.to_string().contains("sntrup761x25519-sha512"),
            "{error}"
        );
        assert!(
            !error
                .to_string()
                .starts_with("not implemented by Hermes's SSH transport: curve25519")
        );
        assert!(kex_algorithms(&[], &()).is_err());
        let twice = vec!["aes128-ctr".to_owned(), "aes128-ctr".to_owned()];
        assert!(ciphers(&twice, &()).is_err());
    }

    #[test]
    fn unsafe_isolation_settings_are_refused() {
        assert!(network_mode("none", &()).is_ok());
        assert!(network_mode("host", &()).is_err());
        assert!(network_mode("container:abc", &()).is_err());
        assert!(security_opt("no-new-privileges:true", &()).is_ok());
        assert!(security_opt("seccomp=unconfined", &()).is_err());
        assert!(security_opt("seccomp:unconfined", &()).is_err());
        assert!(security_opt("apparmor:unconfined", &()).is_err());
        let custom = security_opt("seccomp=/etc/profile.json", &()).expect_err("refused");
        assert!(
            custom
                .to_string()
                .contains("container_pool.security.seccomp")
        );
        assert!(capability("CAP_CHOWN", &()).is_ok());
        assert!(capability("CHOWNN", &()).is_err());
    }

    #[test]
    fn the_box_network_is_private_consistent_and_needs_no_docker_network() {
        let pool = ContainerPoolConfig::default();
        let local = DockerConfig::default();
        let capture = CaptureConfig::default();
        let mut egress = EgressConfig {
            mode: EgressMode::Fetch,
            ..EgressConfig::default()
        };
        assert!(super::egress(&pool, &local, &capture)(&egress, &()).is_ok());
        let no_capture = CaptureConfig {
            enabled: false,
            ..CaptureConfig::default()
        };
        let refused =
            super::egress(&pool, &local, &no_capture)(&egress, &()).expect_err("no store");
        assert!(refused.to_string().contains("capture.enabled"), "{refused}");
        let proxied = DockerConfig {
            base_url: Some("tcp://socket-proxy:2375".to_owned()),
            ..DockerConfig::default()
        };
        let refused =
            super::egress(&pool, &proxied, &capture)(&egress, &()).expect_err("remote engine");
        assert!(
            refused.to_string().contains("docker.same_host"),
            "{refused}"
        );
        assert!(refused.to_string().contains("another host"), "{refused}");
        // The compose stack: the proxy is on this machine and Hermes sees its boxes.
        let compose = DockerConfig {
            same_host: true,
            ..proxied.clone()
        };
        assert!(super::egress(&pool, &compose, &capture)(&egress, &()).is_ok());
        let socket = DockerConfig {
            base_url: Some("unix:///run/docker.sock".to_owned()),
            ..DockerConfig::default()
        };
        assert!(super::egress(&pool, &socket, &capture)(&egress, &()).is_ok());
        let mut bridged = ContainerPoolConfig::default();
        bridged.security.network_mode = "bridge".to_owned();
        assert!(super::egress(&bridged, &local, &capture)(&egress, &()).is_err());
        egress.network.gateway = std::net::Ipv4Addr::new(10, 0, 3, 2);
        assert!(super::egress(&pool, &local, &capture)(&egress, &()).is_err());
        egress.network.gateway = egress.network.address;
        assert!(super::egress(&pool, &local, &capture)(&egress, &()).is_err());
        egress.mode = EgressMode::Off;
        assert!(
            super::egress(&bridged, &local, &capture)(&egress, &()).is_ok(),
            "off asks nothing"
        );

        assert!(private_ipv4(&std::net::Ipv4Addr::new(192, 168, 1, 5), &()).is_ok());
        assert!(private_ipv4(&std::net::Ipv4Addr::new(8, 8, 8, 8), &()).is_err());
        let hosts = |name: &str| {
            std::collections::BTreeMap::from([(
                name.to_owned(),
                std::net::IpAddr::from([192, 0, 2, 1]),
            )])
        };
        for good in ["dropper.test", "Dropper.Test.", "_dmarc.example.test", "x"] {
            assert!(dns_names(&hosts(good), &()).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "a..b",
            "a b.test",
            "a/b",
            &"a".repeat(64),
            &"a.".repeat(130),
        ] {
            assert!(dns_names(&hosts(bad), &()).is_err(), "{bad}");
        }
        assert!(mac_prefix("52:54:00", &()).is_ok());
        for bad in [
            "53:54:00",
            "52:54",
            "52:54:0g",
            "52-54-00",
            "52:54:00:01",
            "52:54:0",
        ] {
            assert!(mac_prefix(bad, &()).is_err(), "{bad}");
        }
    }
}
