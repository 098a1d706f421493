//! An address or CIDR block, IPv4 or IPv6, to match connection sources against
//! (`hermes sessions --source`, the PROXY protocol's trusted balancers).
//!
//! Everything is compared as IPv6, IPv4 addresses in their IPv4-mapped form
//! (`::ffff:a.b.c.d`), so `198.51.100.0/24` matches `::ffff:198.51.100.7` and the
//! other way round.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// An address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressBlock {
    network: u128,
    prefix: u8,
}

impl AddressBlock {
    /// Parses `IP` or `IP/LEN`. Host bits after the prefix are ignored
    /// (`198.51.100.7/24` is `198.51.100.0/24`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("expected an IP address or CIDR block, not {text:?}"))?;
        let (bits, max) = match addr {
            IpAddr::V4(v4) => (u128::from(v4.to_ipv6_mapped()), 32u8),
            IpAddr::V6(v6) => (u128::from(v6), 128u8),
        };
        let len = match prefix {
            None => max,
            Some(len) => Some(len)
                .filter(|len| !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|len| len.parse::<u8>().ok())
                .filter(|len| *len <= max)
                .ok_or_else(|| format!("prefix length must be 0 to {max}, not {len:?}"))?,
        };
        // IPv4 prefixes sit under the 96-bit mapped prefix.
        let prefix = if max == 32 { len + 96 } else { len };
        Ok(Self {
            network: bits & mask(prefix),
            prefix,
        })
    }

    /// Whether `addr` lies in the block.
    pub fn matches(&self, addr: IpAddr) -> bool {
        (as_v6_bits(addr) & mask(self.prefix)) == self.network
    }
}

/// `a.b.c.d/len` for IPv4-mapped blocks, `ipv6/len` otherwise: parses back to the
/// same block.
impl fmt::Display for AddressBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mapped = self.prefix >= 96 && (self.network >> 32) == 0xffff;
        if mapped {
            let v4 = Ipv4Addr::from((self.network & u128::from(u32::MAX)) as u32);
            write!(f, "{v4}/{}", self.prefix - 96)
        } else {
            write!(f, "{}/{}", Ipv6Addr::from(self.network), self.prefix)
        }
    }
}

impl Serialize for AddressBlock {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

struct AddressBlockVisitor;

impl Visitor<'_> for AddressBlockVisitor {
    type Value = AddressBlock;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an IP address or CIDR block")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<AddressBlock, E> {
        AddressBlock::parse(text).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for AddressBlock {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(AddressBlockVisitor)
    }
}

fn as_v6_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => u128::MAX << (128 - u32::from(p.min(128))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn filter(text: &str) -> AddressBlock {
        AddressBlock::parse(text).expect("filter")
    }

    #[test]
    fn blocks_print_back_to_the_same_block() {
        for (text, shown) in [
            ("198.51.100.7/24", "198.51.100.0/24"),
            ("10.1.2.3", "10.1.2.3/32"),
            ("::1", "::1/128"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("::/0", "::/0"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("::ffff:10.0.0.1", "10.0.0.1/32"),
        ] {
            let block = filter(text);
            assert_eq!(block.to_string(), shown, "{text}");
            assert_eq!(filter(shown), block, "{text}");
        }
    }

    #[test]
    fn exact_addresses() {
        assert!(filter("198.51.100.7").matches(ip("198.51.100.7")));
        assert!(!filter("198.51.100.7").matches(ip("198.51.100.8")));
        assert!(filter("2001:db8::1").matches(ip("2001:db8::1")));
        assert!(!filter("2001:db8::1").matches(ip("2001:db8::2")));
    }

    #[test]
    fn cidr_blocks() {
        let block = filter("198.51.100.0/24");
        assert!(block.matches(ip("198.51.100.255")));
        assert!(!block.matches(ip("198.51.101.0")));
        assert_eq!(filter("198.51.100.77/24"), block);
        assert!(filter("0.0.0.0/0").matches(ip("203.0.113.1")));
        assert!(!filter("0.0.0.0/0").matches(ip("2001:db8::1")));
        assert!(filter("::/0").matches(ip("2001:db8::1")));
        let v6 = filter("2001:db8::/32");
        assert!(v6.matches(ip("2001:db8:ffff::1")));
        assert!(!v6.matches(ip("2001:db9::1")));
    }

    #[test]
    fn ipv4_mapped_is_ipv4() {
        assert!(filter("198.51.100.0/24").matches(ip("::ffff:198.51.100.7")));
        assert!(filter("::ffff:198.51.100.7").matches(ip("198.51.100.7")));
        assert!(filter("::ffff:198.51.100.0/120").matches(ip("198.51.100.9")));
    }

    #[test]
    fn bad_filters() {
        for bad in [
            "",
            "198.51.100",
            "198.51.100.0/33",
            "2001:db8::/129",
            "198.51.100.0/",
            "198.51.100.0/-1",
            "198.51.100.0/24/8",
            "198.51.100.0/+24",
            "example.com",
        ] {
            assert!(AddressBlock::parse(bad).is_err(), "{bad:?}");
        }
    }
}
