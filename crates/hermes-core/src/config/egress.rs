//! `egress`: the box's network. Every box gets an `eth0` of its own, linked to a
//! gateway namespace that only Hermes listens in: DNS is answered by Hermes,
//! downloads are fetched by Hermes within limits and kept, everything else is logged
//! and refused or dropped as a firewall would. Nothing a box sends is routed anywhere.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use garde::Validate;
use serde::{Deserialize, Serialize};

use super::{ByteSize, Seconds, validate};
use crate::address_block::AddressBlock;

/// `egress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    /// `off`: the box has only `lo` (no network at all). `sinkhole`: the box has a
    /// network, DNS is answered, every connection is logged and refused or dropped,
    /// nothing is fetched. `fetch`: as `sinkhole`, and downloads (HTTP, HTTPS, FTP,
    /// TFTP) are fetched upstream within `limits` and stored.
    #[garde(skip)]
    pub mode: EgressMode,
    /// The box's side: its address and the addresses it is told about.
    #[garde(dive)]
    pub network: EgressNetworkConfig,
    /// How the box's DNS queries are answered.
    #[garde(dive)]
    pub dns: EgressDnsConfig,
    /// What the box's traffic that is not fetched gets, as a firewall answers:
    /// `drop` (no answer, the client times out) or `reject` (a TCP reset, an ICMP
    /// error: "Connection refused"). Every attempt is logged.
    #[garde(skip)]
    pub refused: RefusedAnswer,
    /// Ports (besides `upstream_ports`) where Hermes accepts the box's TCP connection
    /// so that the first bytes it sends are logged, then answers it as `refused` says
    /// once they are (held open, or reset). Clients of IRC and mining pools speak
    /// first with their nick, channel or wallet. Elsewhere the firewall answers the
    /// connection attempt itself, and only its destination is logged.
    #[garde(length(max = 64))]
    pub listen_ports: Vec<u16>,
    /// Ports a fetch may contact upstream.
    #[garde(length(min = 1, max = 64))]
    pub upstream_ports: Vec<u16>,
    /// When not empty, the only upstream networks ever contacted (a test's own
    /// "internet"). Private, loopback, link-local, multicast and metadata addresses
    /// are refused unless listed here.
    #[garde(length(max = 64))]
    pub upstream_allow: Vec<AddressBlock>,
    /// Limits on what is fetched.
    #[garde(dive)]
    pub limits: EgressLimits,
    /// HTTPS: the sensor's CA and how upstream certificates are checked.
    #[garde(dive)]
    pub tls: EgressTlsConfig,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            mode: EgressMode::Fetch,
            network: EgressNetworkConfig::default(),
            dns: EgressDnsConfig::default(),
            refused: RefusedAnswer::Drop,
            listen_ports: vec![
                3333, 4444, 5555, 6665, 6666, 6667, 6668, 6669, 6697, 7777, 9999, 14444, 45700,
            ],
            upstream_ports: vec![21, 69, 80, 443, 8000, 8080, 8443, 8888],
            upstream_allow: Vec::new(),
            limits: EgressLimits::default(),
            tls: EgressTlsConfig::default(),
        }
    }
}

/// `egress.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EgressMode {
    /// No network in the box.
    Off,
    /// A network where every connection is logged and refused or dropped.
    Sinkhole,
    /// A network where downloads are fetched and kept.
    Fetch,
}

/// `egress.refused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusedAnswer {
    /// No answer: the client waits until its own timeout.
    Drop,
    /// Refused at once: a TCP reset, an ICMP error for UDP and the rest (a
    /// connection on `listen_ports` is reset once its first bytes are read).
    Reject,
}

/// `egress.network`: what the box sees. Every box has the same addresses, each on a
/// link of its own, as virtual machines behind a hosting provider's NAT do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct EgressNetworkConfig {
    /// The box's `eth0` address.
    #[garde(custom(validate::private_ipv4))]
    pub address: Ipv4Addr,
    /// Prefix length of the box's network.
    #[garde(range(min = 8, max = 30))]
    pub prefix_len: u8,
    /// The default gateway (Hermes's side of the link).
    #[garde(custom(validate::private_ipv4))]
    pub gateway: Ipv4Addr,
    /// The resolver in the box's `/etc/resolv.conf`.
    #[garde(custom(validate::private_ipv4))]
    pub resolver: Ipv4Addr,
    /// The first three bytes of the box's MAC address (the rest is random per box);
    /// `52:54:00` is what KVM guests, and so most VPSs, have.
    #[garde(custom(validate::mac_prefix))]
    pub mac_prefix: String,
}

impl EgressNetworkConfig {
    /// The box's link as `a.b.c.d/len`.
    pub fn link(&self) -> String {
        format!(
            "{}/{}",
            Ipv4Addr::from(u32::from(self.address) & self.mask()),
            self.prefix_len
        )
    }

    /// Whether `ip` is on the box's link.
    pub fn on_link(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.address) & self.mask()
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len.min(32)))
            .unwrap_or(0)
    }
}

impl Default for EgressNetworkConfig {
    fn default() -> Self {
        Self {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            resolver: Ipv4Addr::new(10, 0, 2, 3),
            mac_prefix: "52:54:00".to_owned(),
        }
    }
}

/// `egress.dns`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct EgressDnsConfig {
    /// Resolvers Hermes asks for names not in `static`; empty: the host's own
    /// (`/etc/resolv.conf`).
    #[garde(length(max = 8))]
    pub upstream: Vec<IpAddr>,
    /// Names answered without asking anyone (a name, any case, a trailing dot
    /// allowed, to its address: A queries get an IPv4 one, AAAA an IPv6 one).
    #[garde(length(max = 10000), custom(validate::dns_names))]
    pub static_hosts: BTreeMap<String, IpAddr>,
    /// When true, names not in `static_hosts` do not exist (NXDOMAIN); nothing is
    /// asked upstream.
    #[garde(skip)]
    pub static_only: bool,
    /// Queries answered per box per second; more are dropped (a box's DNS flood
    /// stays in the box).
    #[garde(range(min = 1, max = 10000))]
    pub queries_per_second: u32,
}

impl Default for EgressDnsConfig {
    fn default() -> Self {
        Self {
            upstream: Vec::new(),
            static_hosts: BTreeMap::new(),
            static_only: false,
            queries_per_second: 50,
        }
    }
}

/// `egress.limits`: small enough for a 1-vCPU VPS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct EgressLimits {
    /// Bytes kept of one download; a longer one is cut and reported.
    #[garde(custom(validate::memory_size))]
    pub download_size: ByteSize,
    /// Bytes fetched for one session, all downloads together.
    #[garde(custom(validate::memory_size))]
    pub session_bytes: ByteSize,
    /// Bytes fetched by the sensor in one hour.
    #[garde(custom(validate::memory_size))]
    pub hourly_bytes: ByteSize,
    /// Fetches one session may make; past it, fetches fail.
    #[garde(range(min = 1, max = 10000))]
    pub fetches_per_session: u32,
    /// Fetches running at once on the sensor.
    #[garde(range(min = 1, max = 1000))]
    pub concurrent_fetches: u32,
    /// Seconds to connect upstream.
    #[garde(range(min = 1, max = 300))]
    pub connect_timeout: Seconds,
    /// Seconds one fetch may take in all.
    #[garde(range(min = 1, max = 3600))]
    pub fetch_timeout: Seconds,
    /// Bytes logged of a connection that is not fetched (its first bytes).
    #[garde(custom(validate::memory_size))]
    pub first_bytes: ByteSize,
}

impl Default for EgressLimits {
    fn default() -> Self {
        Self {
            download_size: ByteSize::mib(32),
            session_bytes: ByteSize::mib(128),
            hourly_bytes: ByteSize::gib(1),
            fetches_per_session: 50,
            concurrent_fetches: 8,
            connect_timeout: Seconds::new(10),
            fetch_timeout: Seconds::new(120),
            first_bytes: ByteSize::kib(4),
        }
    }
}

/// `egress.tls`: the box's HTTPS is answered with certificates of the sensor's own
/// CA (which every box trusts) and fetched upstream over Hermes's own TLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct EgressTlsConfig {
    /// Whether upstream certificates are checked (against the host's roots and
    /// `extra_roots`): one that fails is shown to the box as a mirror nobody trusts,
    /// so only a client that does not check gets the body. False shows the sensor's
    /// leaf whatever certificate upstream shows.
    #[garde(skip)]
    pub verify_upstream: bool,
    /// The CA certificate (PEM); its key is the same path with the extension `key`.
    /// Generated at first start when neither exists. Unset: `egress_ca.crt` beside
    /// the host keys.
    #[garde(inner(custom(validate::ca_path)))]
    pub ca_path: Option<PathBuf>,
    /// The CA's organization (`O`), as the box sees it; used only when generating.
    #[garde(custom(validate::ca_name))]
    pub ca_organization: String,
    /// The CA's common name (`CN`); used only when generating.
    #[garde(custom(validate::ca_name))]
    pub ca_common_name: String,
    /// A PEM file of roots trusted upstream besides the host's (a test's own CA).
    #[garde(inner(custom(validate::non_empty_path)))]
    pub extra_roots: Option<PathBuf>,
}

impl Default for EgressTlsConfig {
    fn default() -> Self {
        Self {
            verify_upstream: true,
            ca_path: None,
            ca_organization: "Northwave Hosting Ltd".to_owned(),
            ca_common_name: "Northwave Hosting Internal CA G2".to_owned(),
            extra_roots: None,
        }
    }
}

impl EgressTlsConfig {
    /// The CA's certificate and key files: `ca_path`, or beside `host_key_path`.
    pub fn ca_files(&self, host_key_path: &std::path::Path) -> (PathBuf, PathBuf) {
        let cert = match &self.ca_path {
            Some(path) => path.clone(),
            None => host_key_path
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("egress_ca.crt"),
        };
        let key = cert.with_extension("key");
        (cert, key)
    }
}

#[cfg(test)]
mod link_tests {
    use super::*;

    fn link_network(address: Ipv4Addr, prefix_len: u8) -> String {
        EgressNetworkConfig {
            address,
            prefix_len,
            ..EgressNetworkConfig::default()
        }
        .link()
    }

    #[test]
    fn the_link_network_is_the_address_masked() {
        assert_eq!(link_network([10, 0, 2, 15].into(), 24), "10.0.2.0/24");
        assert_eq!(
            link_network([192, 168, 77, 130].into(), 25),
            "192.168.77.128/25"
        );
        assert_eq!(link_network([10, 1, 2, 3].into(), 8), "10.0.0.0/8");
    }

    #[test]
    fn on_link_is_the_masked_match() {
        let network = EgressNetworkConfig::default();
        assert!(network.on_link([10, 0, 2, 99].into()));
        assert!(!network.on_link([10, 0, 3, 1].into()));
    }
}
