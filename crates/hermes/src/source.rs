//! `--source` (an exact address or a CIDR block, IPv4 or IPv6) and the address
//! forms of session listings.

use std::net::IpAddr;

pub use hermes_core::address_block::AddressBlock as SourceFilter;

/// Parses an address as metadata writes it; IPv4-mapped IPv6 becomes IPv4.
pub fn parse_addr(text: &str) -> Option<IpAddr> {
    let addr: IpAddr = text.trim().parse().ok()?;
    Some(match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    })
}

/// `ip:port`, IPv6 in brackets.
pub fn format_endpoint(addr: IpAddr, port: Option<u64>) -> String {
    match (addr, port) {
        (IpAddr::V6(v6), Some(port)) => format!("[{v6}]:{port}"),
        (addr, Some(port)) => format!("{addr}:{port}"),
        (addr, None) => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn ipv4_mapped_is_ipv4() {
        assert_eq!(parse_addr("::ffff:198.51.100.7"), Some(ip("198.51.100.7")));
        assert_eq!(parse_addr("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_addr("not an ip"), None);
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            format_endpoint(ip("198.51.100.7"), Some(22)),
            "198.51.100.7:22"
        );
        assert_eq!(
            format_endpoint(ip("2001:db8::1"), Some(22)),
            "[2001:db8::1]:22"
        );
        assert_eq!(format_endpoint(ip("2001:db8::1"), None), "2001:db8::1");
    }
}
