//! The host's resolvers, from `/etc/resolv.conf`, when `egress.dns.upstream` names
//! none: the box then resolves as the host does.

use std::net::IpAddr;
use std::path::Path;

/// The host's resolver file.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The C library reads this many `nameserver` lines at most (MAXNS).
const MAX_SERVERS: usize = 3;

/// The `nameserver` addresses of `text`, in order; lines that do not parse are
/// skipped as the C library skips them.
pub fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            // An IPv6 address may carry a zone (`fe80::1%eth0`); a zone names a
            // link of the host that a bare address cannot, so such lines are skipped.
            words.next()?.parse::<IpAddr>().ok()
        })
        .take(MAX_SERVERS)
        .collect()
}

/// The nameservers of the file at `path`; none when it cannot be read.
pub fn read_nameservers(path: &Path) -> Vec<IpAddr> {
    match std::fs::read_to_string(path) {
        Ok(text) => nameservers(&text),
        Err(error) => {
            tracing::warn!(target: "hermes::egress::dns", path = %path.display(), %error, "cannot read the host's resolvers; names not in egress.dns.static_hosts will fail");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_lines_are_read_in_order() {
        let text = "# generated\nsearch example.test\nnameserver 127.0.0.53\n  nameserver\t2001:db8::1 \nnameserver bogus\nnameserver fe80::1%eth0\noptions edns0\nnameserver 192.0.2.1\nnameserver 192.0.2.2\n";
        let servers: Vec<String> = nameservers(text).iter().map(ToString::to_string).collect();
        assert_eq!(servers, ["127.0.0.53", "2001:db8::1", "192.0.2.1"]);
        assert!(nameservers("").is_empty());
    }
}
