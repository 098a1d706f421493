//! The host's own addresses and the networks it is directly attached to (its LAN,
//! Docker's bridges), read from `/proc/net` at start: a fetch must never reach the
//! host itself or its neighbours, whatever public-looking address they have.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hermes_core::address_block::AddressBlock;

/// Addresses and attached networks of the host (its network namespace).
#[derive(Debug, Clone, Default)]
pub struct HostAddresses {
    addresses: Vec<IpAddr>,
    networks: Vec<AddressBlock>,
}

impl HostAddresses {
    /// Explicit addresses and networks (tests, or a host without `/proc`).
    pub fn new(addresses: Vec<IpAddr>, networks: Vec<AddressBlock>) -> Self {
        HostAddresses {
            addresses,
            networks,
        }
    }

    /// Reads `/proc/net/{fib_trie,if_inet6,route,ipv6_route}` of Hermes's network
    /// namespace and of the host's (pid 1's: the same one unless Hermes runs in a
    /// container that sees the host's processes, as in the compose stack, where the
    /// host's public address is not Hermes's own). An unreadable file contributes
    /// nothing (the fixed refusals still hold) and is logged.
    pub fn read() -> Self {
        let own = Self::read_from("/proc/net", true);
        own.merged(Self::read_from("/proc/1/net", false))
    }

    fn read_from(dir: &str, log: bool) -> Self {
        let read = |file: &str| {
            let path = format!("{dir}/{file}");
            std::fs::read_to_string(&path).unwrap_or_else(|error| {
                if log {
                    tracing::warn!(target: "hermes::egress", %path, %error, "cannot read the host's addresses");
                }
                String::new()
            })
        };
        Self::parse(
            &read("fib_trie"),
            &read("if_inet6"),
            &read("route"),
            &read("ipv6_route"),
        )
    }

    /// Both sets of addresses and networks.
    fn merged(mut self, other: Self) -> Self {
        self.addresses.extend(other.addresses);
        self.addresses.sort_unstable();
        self.addresses.dedup();
        for network in other.networks {
            if !self.networks.contains(&network) {
                self.networks.push(network);
            }
        }
        self
    }

    /// Parses the contents of the four `/proc/net` files.
    pub fn parse(fib_trie: &str, if_inet6: &str, route: &str, ipv6_route: &str) -> Self {
        let mut addresses: Vec<IpAddr> = local_ipv4(fib_trie).into_iter().map(IpAddr::V4).collect();
        addresses.extend(if_inet6.lines().filter_map(|line| {
            line.split_whitespace()
                .next()
                .and_then(hex_ipv6)
                .map(IpAddr::V6)
        }));
        addresses.sort_unstable();
        addresses.dedup();
        let mut networks = ipv4_attached(route);
        networks.extend(ipv6_attached(ipv6_route));
        networks.dedup();
        HostAddresses {
            addresses,
            networks,
        }
    }

    /// Whether `ip` is one of the host's addresses.
    pub fn is_address(&self, ip: IpAddr) -> bool {
        self.addresses.contains(&ip.to_canonical())
    }

    /// Whether `ip` lies in a network the host is directly attached to.
    pub fn in_attached_network(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|block| block.matches(ip))
    }

    /// The addresses found.
    pub fn addresses(&self) -> &[IpAddr] {
        &self.addresses
    }
}

/// `/proc/net/fib_trie`: a leaf `|-- a.b.c.d` followed by `/32 host LOCAL` is an
/// address of the host.
fn local_ipv4(fib_trie: &str) -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let line = line.trim();
        if let Some(address) = line.strip_prefix("|-- ") {
            leaf = address.trim().parse().ok();
        } else if line.starts_with("/32 host LOCAL")
            && let Some(address) = leaf
        {
            found.push(address);
        }
    }
    found
}

fn hex_ipv6(text: &str) -> Option<Ipv6Addr> {
    if text.len() != 32 {
        return None;
    }
    u128::from_str_radix(text, 16).ok().map(Ipv6Addr::from)
}

/// `/proc/net/route`: routes without a gateway (other than a default route) are
/// networks the host sits on. Addresses are the kernel's u32 in host byte order.
fn ipv4_attached(route: &str) -> Vec<AddressBlock> {
    let word = |text: &str| u32::from_str_radix(text, 16).ok().map(u32::to_ne_bytes);
    route
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let destination = Ipv4Addr::from(word(fields.get(1)?)?);
            let gateway = word(fields.get(2)?)?;
            let mask = u32::from_be_bytes(word(fields.get(7)?)?);
            (gateway == [0; 4] && mask != 0)
                .then(|| AddressBlock::parse(&format!("{destination}/{}", mask.count_ones())).ok())
                .flatten()
        })
        .collect()
}

/// `/proc/net/ipv6_route`: prefixes with no next hop that are not rejections.
fn ipv6_attached(ipv6_route: &str) -> Vec<AddressBlock> {
    const RTF_REJECT: u32 = 0x0200;
    ipv6_route
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let destination = hex_ipv6(fields.first()?)?;
            let prefix = u8::from_str_radix(fields.get(1)?, 16).ok()?;
            let next_hop = hex_ipv6(fields.get(4)?)?;
            let flags = u32::from_str_radix(fields.get(8)?, 16).ok()?;
            (prefix != 0 && next_hop.is_unspecified() && flags & RTF_REJECT == 0)
                .then(|| AddressBlock::parse(&format!("{destination}/{prefix}")).ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB_TRIE: &str = "Main:
  +-- 0.0.0.0/0 3 0 4
     +-- 0.0.0.0/4 2 0 2
        |-- 0.0.0.0
           /0 universe UNICAST
        +-- 10.213.86.0/24 2 0 2
           +-- 10.213.86.0/31 1 0 0
              |-- 10.213.86.0
                 /24 link UNICAST
              |-- 10.213.86.1
                 /32 host LOCAL
           |-- 10.213.86.255
              /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
           |-- 127.0.0.1
              /32 host LOCAL
     |-- 198.51.100.20
        /32 host LOCAL
";
    const IF_INET6: &str = "00000000000000000000000000000001 01 80 10 80       lo
20010db8000000000000000000000007 02 40 00 80     eth0
";
    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
eth0\t006433C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";
    const IPV6_ROUTE: &str = "20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
20010db9000000000000000000000000 30 00000000000000000000000000000000 00 20010db8000000000000000000000001 00000400 00000001 00000000 00000003     eth0
";

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn addresses_and_attached_networks_are_found() {
        if cfg!(target_endian = "big") {
            return;
        }
        let host = HostAddresses::parse(FIB_TRIE, IF_INET6, ROUTE, IPV6_ROUTE);
        for own in [
            "10.213.86.1",
            "127.0.0.1",
            "198.51.100.20",
            "::1",
            "2001:db8::7",
        ] {
            assert!(host.is_address(ip(own)), "{own}");
        }
        assert!(host.is_address(ip("::ffff:198.51.100.20")));
        for not_own in ["10.213.86.0", "10.213.86.255", "0.0.0.0", "198.51.100.21"] {
            assert!(!host.is_address(ip(not_own)), "{not_own}");
        }
        // docker0's 172.17/16, eth0's 198.51.100/24 and 2001:db8::/64; not the
        // default route, not a route through a gateway, not an unreachable route.
        for attached in ["172.17.0.2", "198.51.100.99", "2001:db8::99"] {
            assert!(host.in_attached_network(ip(attached)), "{attached}");
        }
        for remote in ["203.0.113.1", "192.0.2.1", "2001:db9::1", "2001:db8:0:1::1"] {
            assert!(!host.in_attached_network(ip(remote)), "{remote}");
        }
    }

    #[test]
    fn the_hosts_addresses_add_to_hermess_own() {
        if cfg!(target_endian = "big") {
            return;
        }
        let container =
            HostAddresses::parse("     |-- 172.18.0.3\n        /32 host LOCAL\n", "", "", "");
        let host = HostAddresses::parse(FIB_TRIE, IF_INET6, ROUTE, IPV6_ROUTE);
        let both = container.merged(host);
        assert!(both.is_address(ip("172.18.0.3")));
        assert!(both.is_address(ip("198.51.100.20")));
        assert!(both.in_attached_network(ip("198.51.100.99")));
    }

    #[test]
    fn this_hosts_loopback_address_is_read() {
        let host = HostAddresses::read();
        assert!(host.is_address(ip("127.0.0.1")), "{:?}", host.addresses());
    }
}
