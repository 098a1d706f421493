//! Which upstream addresses a fetch may contact (SSRF). The box chooses where it
//! connects; Hermes connects there from the host, so without this a box could reach
//! the host, its LAN, Docker's networks or a cloud's metadata service.
//!
//! The address checked is the one the box connected to (which our DNS gave it); a
//! fetch never resolves names again, so a name cannot change its address between the
//! check and the connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hermes_core::address_block::AddressBlock;
use hermes_core::config::EgressConfig;

use crate::host_addresses::HostAddresses;

/// Why an upstream address was refused (`reason` in events, a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The port is not in `egress.upstream_ports`.
    Port,
    /// `egress.upstream_allow` is set and does not list the address.
    NotAllowed,
    /// 0.0.0.0/8 or `::`.
    Unspecified,
    /// 127.0.0.0/8 or `::1`.
    Loopback,
    /// RFC 1918, IPv6 unique local (fc00::/7) or site-local (fec0::/10).
    Private,
    /// 100.64.0.0/10, carrier-grade NAT (and some clouds' metadata services).
    CarrierNat,
    /// 169.254.169.254, the cloud metadata service.
    Metadata,
    /// 169.254.0.0/16 or fe80::/10.
    LinkLocal,
    /// 192.0.0.0/24, 198.18.0.0/15, 240.0.0.0/4, local-use NAT64 (64:ff9b:1::/48).
    Reserved,
    /// 255.255.255.255.
    Broadcast,
    /// 224.0.0.0/4 or ff00::/8.
    Multicast,
    /// The box's own network: its address, gateway, resolver.
    BoxNetwork,
    /// An address of the host.
    HostAddress,
    /// A network the host is attached to (its LAN, Docker's bridges).
    HostNetwork,
}

impl Refusal {
    /// Every reason (for metrics labels).
    pub const ALL: &'static [Refusal] = &[
        Refusal::Port,
        Refusal::NotAllowed,
        Refusal::Unspecified,
        Refusal::Loopback,
        Refusal::Private,
        Refusal::CarrierNat,
        Refusal::Metadata,
        Refusal::LinkLocal,
        Refusal::Reserved,
        Refusal::Broadcast,
        Refusal::Multicast,
        Refusal::BoxNetwork,
        Refusal::HostAddress,
        Refusal::HostNetwork,
    ];

    /// The name in events and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::Port => "port",
            Refusal::NotAllowed => "not_allowed",
            Refusal::Unspecified => "unspecified",
            Refusal::Loopback => "loopback",
            Refusal::Private => "private",
            Refusal::CarrierNat => "carrier_nat",
            Refusal::Metadata => "metadata",
            Refusal::LinkLocal => "link_local",
            Refusal::Reserved => "reserved",
            Refusal::Broadcast => "broadcast",
            Refusal::Multicast => "multicast",
            Refusal::BoxNetwork => "box_network",
            Refusal::HostAddress => "host_address",
            Refusal::HostNetwork => "host_network",
        }
    }
}

/// The decision for upstream addresses, built once at start.
#[derive(Debug, Clone)]
pub struct UpstreamPolicy {
    ports: Vec<u16>,
    allow: Vec<AddressBlock>,
    box_network: Vec<AddressBlock>,
    host: HostAddresses,
}

impl UpstreamPolicy {
    /// The policy of `config` with the host's addresses as `/proc/net` has them now.
    pub fn from_config(config: &EgressConfig) -> Self {
        Self::new(config, HostAddresses::read())
    }

    /// The policy of `config` with these host addresses.
    pub fn new(config: &EgressConfig, host: HostAddresses) -> Self {
        let network = &config.network;
        let box_network = [
            format!("{}/{}", network.address, network.prefix_len),
            network.gateway.to_string(),
            network.resolver.to_string(),
        ]
        .iter()
        .filter_map(|block| AddressBlock::parse(block).ok())
        .collect();
        UpstreamPolicy {
            ports: config.upstream_ports.clone(),
            allow: config.upstream_allow.clone(),
            box_network,
            host,
        }
    }

    /// Whether a fetch may connect to `dst`.
    pub fn check(&self, dst: SocketAddr) -> Result<(), Refusal> {
        if !self.ports.contains(&dst.port()) {
            return Err(Refusal::Port);
        }
        self.check_address(dst.ip())
    }

    /// Whether a fetch may connect to `ip` on a port the server chose (FTP's data
    /// connection): every check but the port's.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), Refusal> {
        // A test's (or a lab's) own internet is allowed whatever its addresses.
        if self.allow.iter().any(|block| block.matches(ip)) {
            return Ok(());
        }
        // Refused addresses keep their own reason with an allowlist too: a box
        // asking for the metadata service is worth telling from one asking elsewhere.
        special_purpose(ip)?;
        if self.box_network.iter().any(|block| block.matches(ip)) {
            return Err(Refusal::BoxNetwork);
        }
        if self.host.is_address(ip) {
            return Err(Refusal::HostAddress);
        }
        if self.host.in_attached_network(ip) {
            return Err(Refusal::HostNetwork);
        }
        if !self.allow.is_empty() {
            // Nothing else, even public.
            return Err(Refusal::NotAllowed);
        }
        Ok(())
    }
}

/// Refuses addresses that are not a public host on the internet, IPv6 forms that
/// carry an IPv4 address judged as that address.
fn special_purpose(ip: IpAddr) -> Result<(), Refusal> {
    match ip {
        IpAddr::V4(v4) => special_ipv4(v4),
        IpAddr::V6(v6) => special_ipv6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, network: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(network)) & mask
}

fn special_ipv4(ip: Ipv4Addr) -> Result<(), Refusal> {
    let refusal = if in_v4(ip, [0, 0, 0, 0], 8) {
        Refusal::Unspecified
    } else if in_v4(ip, [127, 0, 0, 0], 8) {
        Refusal::Loopback
    } else if in_v4(ip, [10, 0, 0, 0], 8)
        || in_v4(ip, [172, 16, 0, 0], 12)
        || in_v4(ip, [192, 168, 0, 0], 16)
    {
        Refusal::Private
    } else if in_v4(ip, [100, 64, 0, 0], 10) {
        Refusal::CarrierNat
    } else if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Refusal::Metadata
    } else if in_v4(ip, [169, 254, 0, 0], 16) {
        Refusal::LinkLocal
    } else if ip == Ipv4Addr::BROADCAST {
        Refusal::Broadcast
    } else if in_v4(ip, [224, 0, 0, 0], 4) {
        Refusal::Multicast
    } else if in_v4(ip, [192, 0, 0, 0], 24)
        || in_v4(ip, [198, 18, 0, 0], 15)
        || in_v4(ip, [240, 0, 0, 0], 4)
    {
        Refusal::Reserved
    } else {
        return Ok(());
    };
    Err(refusal)
}

fn in_v6(ip: Ipv6Addr, network: u128, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == network & mask
}

fn v4_at(bits: u128, shift: u32) -> Ipv4Addr {
    Ipv4Addr::from((bits >> shift) as u32)
}

fn special_ipv6(ip: Ipv6Addr) -> Result<(), Refusal> {
    let bits = u128::from(ip);
    if ip.is_unspecified() {
        return Err(Refusal::Unspecified);
    }
    if ip.is_loopback() {
        return Err(Refusal::Loopback);
    }
    // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), SIIT
    // (::ffff:0:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) reach the IPv4 address.
    if in_v6(ip, 0xffff << 32, 96)
        || in_v6(ip, 0, 96)
        || in_v6(ip, 0xffff << 48, 96)
        || in_v6(ip, 0x0064_ff9b << 96, 96)
    {
        return special_ipv4(v4_at(bits, 0));
    }
    if in_v6(ip, 0x0064_ff9b_0001 << 80, 48) {
        return Err(Refusal::Reserved);
    }
    // 6to4 (2002:aabb:ccdd::/48) carries its relay's IPv4 address.
    if in_v6(ip, 0x2002 << 112, 16) {
        return special_ipv4(v4_at(bits, 80));
    }
    // Teredo (2001::/32): the server's IPv4 address, and the client's inverted.
    if in_v6(ip, 0x2001_0000 << 96, 32) {
        special_ipv4(v4_at(bits, 64))?;
        return special_ipv4(Ipv4Addr::from(!(bits as u32)));
    }
    if in_v6(ip, 0xfc00 << 112, 7) || in_v6(ip, 0xfec0 << 112, 10) {
        return Err(Refusal::Private);
    }
    if in_v6(ip, 0xfe80 << 112, 10) {
        return Err(Refusal::LinkLocal);
    }
    if in_v6(ip, 0xff00 << 112, 8) {
        return Err(Refusal::Multicast);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], host: HostAddresses) -> UpstreamPolicy {
        let config = EgressConfig {
            upstream_allow: allow
                .iter()
                .map(|block| AddressBlock::parse(block).expect("block"))
                .collect(),
            ..EgressConfig::default()
        };
        UpstreamPolicy::new(&config, host)
    }

    fn check(policy: &UpstreamPolicy, address: &str) -> Result<(), Refusal> {
        let ip: IpAddr = address.parse().expect("ip");
        policy.check(SocketAddr::new(ip, 80))
    }

    fn no_host() -> HostAddresses {
        HostAddresses::default()
    }

    #[test]
    fn public_addresses_on_allowed_ports_pass() {
        let policy = policy(&[], no_host());
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "203.0.113.9",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "169.253.255.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "11.0.0.1",
            "126.255.255.255",
            "128.0.0.1",
            "1.0.0.0",
            "192.0.1.255",
            "2606:4700::1111",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "fbff:ffff::1",
            "fe7f::1",
        ] {
            assert_eq!(check(&policy, public), Ok(()), "{public}");
        }
        for port in [80, 443, 8080] {
            assert_eq!(
                policy.check(SocketAddr::new([8, 8, 8, 8].into(), port)),
                Ok(())
            );
        }
    }

    #[test]
    fn ports_not_listed_are_refused() {
        let policy = policy(&[], no_host());
        for port in [0, 22, 25, 6379, 65535] {
            assert_eq!(
                policy.check(SocketAddr::new([8, 8, 8, 8].into(), port)),
                Err(Refusal::Port),
                "{port}"
            );
        }
    }

    #[test]
    fn special_purpose_ipv4_is_refused_with_its_reason() {
        let policy = policy(&[], no_host());
        let cases = [
            ("0.0.0.0", Refusal::Unspecified),
            ("0.255.255.255", Refusal::Unspecified),
            ("127.0.0.1", Refusal::Loopback),
            ("127.255.255.254", Refusal::Loopback),
            ("10.0.0.1", Refusal::Private),
            ("10.255.255.255", Refusal::Private),
            ("172.16.0.1", Refusal::Private),
            ("172.31.255.255", Refusal::Private),
            ("192.168.1.1", Refusal::Private),
            ("100.64.0.1", Refusal::CarrierNat),
            ("100.100.100.200", Refusal::CarrierNat),
            ("100.127.255.255", Refusal::CarrierNat),
            ("169.254.169.254", Refusal::Metadata),
            ("169.254.0.1", Refusal::LinkLocal),
            ("169.254.255.255", Refusal::LinkLocal),
            ("192.0.0.1", Refusal::Reserved),
            ("192.0.0.255", Refusal::Reserved),
            ("198.18.0.1", Refusal::Reserved),
            ("198.19.255.255", Refusal::Reserved),
            ("240.0.0.1", Refusal::Reserved),
            ("255.255.255.254", Refusal::Reserved),
            ("255.255.255.255", Refusal::Broadcast),
            ("224.0.0.1", Refusal::Multicast),
            ("239.255.255.250", Refusal::Multicast),
        ];
        for (address, reason) in cases {
            assert_eq!(check(&policy, address), Err(reason), "{address}");
        }
    }

    #[test]
    fn special_purpose_ipv6_is_refused_with_its_reason() {
        let policy = policy(&[], no_host());
        let cases = [
            ("::", Refusal::Unspecified),
            ("::1", Refusal::Loopback),
            ("fc00::1", Refusal::Private),
            ("fd00:ec2::254", Refusal::Private),
            ("fdff:ffff::1", Refusal::Private),
            ("fec0::1", Refusal::Private),
            ("fe80::1", Refusal::LinkLocal),
            ("febf::1", Refusal::LinkLocal),
            ("ff02::1", Refusal::Multicast),
            ("ff0e::1", Refusal::Multicast),
            ("64:ff9b:1::1", Refusal::Reserved),
        ];
        for (address, reason) in cases {
            assert_eq!(check(&policy, address), Err(reason), "{address}");
        }
    }

    #[test]
    fn ipv6_forms_of_refused_ipv4_addresses_are_refused() {
        let policy = policy(&[], no_host());
        let cases = [
            ("::ffff:127.0.0.1", Refusal::Loopback),
            ("::ffff:169.254.169.254", Refusal::Metadata),
            ("::ffff:10.1.2.3", Refusal::Private),
            ("::ffff:0.0.0.0", Refusal::Unspecified),
            ("::127.0.0.1", Refusal::Loopback),
            ("::169.254.169.254", Refusal::Metadata),
            ("::192.168.0.1", Refusal::Private),
            ("::ffff:0:127.0.0.1", Refusal::Loopback),
            ("64:ff9b::127.0.0.1", Refusal::Loopback),
            ("64:ff9b::a9fe:a9fe", Refusal::Metadata),
            ("64:ff9b::10.0.0.1", Refusal::Private),
            ("2002:7f00:1::1", Refusal::Loopback),
            ("2002:a9fe:a9fe::", Refusal::Metadata),
            ("2002:c0a8:101::1", Refusal::Private),
            // Teredo: server 10.0.0.1; then client 127.0.0.1 (inverted: 80ff:fffe).
            ("2001:0:a00:1::1", Refusal::Private),
            ("2001:0:808:808::80ff:fffe", Refusal::Loopback),
        ];
        for (address, reason) in cases {
            assert_eq!(check(&policy, address), Err(reason), "{address}");
        }
        assert_eq!(check(&policy, "2001:0:808:808::f7f7:f7f7"), Ok(()));
    }

    #[test]
    fn the_box_network_and_the_hosts_addresses_are_refused() {
        let host = HostAddresses::new(
            vec![
                "198.51.100.20".parse().expect("ip"),
                "2001:db8::7".parse().expect("ip"),
            ],
            vec![
                AddressBlock::parse("203.0.113.0/24").expect("block"),
                AddressBlock::parse("2001:db8:1::/64").expect("block"),
            ],
        );
        let policy = policy(&[], host);
        // The box's own network is private too; its addresses come first.
        assert_eq!(check(&policy, "10.0.2.2"), Err(Refusal::Private));
        let config = EgressConfig {
            network: hermes_core::config::EgressNetworkConfig {
                address: Ipv4Addr::new(10, 9, 2, 15),
                ..Default::default()
            },
            ..EgressConfig::default()
        };
        let boxed = UpstreamPolicy::new(&config, no_host());
        assert!(
            boxed
                .box_network
                .iter()
                .any(|b| b.matches("10.9.2.200".parse().expect("ip")))
        );
        assert!(
            boxed
                .box_network
                .iter()
                .any(|b| b.matches("10.0.2.3".parse().expect("ip")))
        );
        for (address, reason) in [
            ("198.51.100.20", Refusal::HostAddress),
            ("::ffff:198.51.100.20", Refusal::HostAddress),
            ("2001:db8::7", Refusal::HostAddress),
            ("203.0.113.77", Refusal::HostNetwork),
            ("::ffff:203.0.113.77", Refusal::HostNetwork),
            ("2001:db8:1::99", Refusal::HostNetwork),
        ] {
            assert_eq!(check(&policy, address), Err(reason), "{address}");
        }
        assert_eq!(check(&policy, "198.51.100.21"), Ok(()));
        assert_eq!(check(&policy, "2001:db8::8"), Ok(()));
    }

    #[test]
    fn an_allowlist_allows_only_its_blocks() {
        let policy = policy(&["127.0.0.1/32", "2001:db8::/32"], no_host());
        assert_eq!(check(&policy, "127.0.0.1"), Ok(()));
        assert_eq!(check(&policy, "::ffff:127.0.0.1"), Ok(()));
        assert_eq!(check(&policy, "2001:db8::1"), Ok(()));
        for (refused, reason) in [
            ("8.8.8.8", Refusal::NotAllowed),
            ("2606:4700::1111", Refusal::NotAllowed),
            // Special-purpose addresses outside the list keep their own reason.
            ("127.0.0.2", Refusal::Loopback),
            ("169.254.169.254", Refusal::Metadata),
            ("10.0.0.1", Refusal::Private),
            ("::1", Refusal::Loopback),
            ("10.0.2.2", Refusal::Private),
        ] {
            assert_eq!(check(&policy, refused), Err(reason), "{refused}");
        }
        // Ports are still checked.
        assert_eq!(
            policy.check("127.0.0.1:22".parse().expect("addr")),
            Err(Refusal::Port)
        );
    }

    #[test]
    fn the_hosts_own_addresses_from_proc_are_refused() {
        let policy = UpstreamPolicy::from_config(&EgressConfig::default());
        for own in policy.host.addresses() {
            assert!(check(&policy, &own.to_string()).is_err(), "{own}");
        }
    }

    #[test]
    fn reason_names_are_unique_and_known_to_the_metrics() {
        let mut names: Vec<_> = Refusal::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Refusal::ALL.len());
        for name in names {
            assert!(
                hermes_core::metrics::EGRESS_REFUSAL_REASONS.contains(&name),
                "{name} is not a metrics label"
            );
        }
    }
}
