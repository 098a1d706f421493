//! The PROXY protocol header (HAProxy's, versions 1 and 2) a load balancer puts in
//! front of a connection to say whose it is. Read only when configured, only from
//! the balancer's own addresses, and only once at the start: whatever the client
//! sends comes after it and is SSH, so a client cannot set its own source.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The version 2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 line is at most this long, CRLF included.
const V1_MAX: usize = 107;
/// Version 2 address blocks longer than this (TLVs included) are refused.
const V2_MAX_BODY: usize = 1024;

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The connection does not start with a PROXY header.
    #[error("no PROXY protocol header")]
    Missing,
    /// It starts like one but does not parse.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// The header did not arrive in time.
    #[error("no PROXY protocol header within {0} s")]
    TimedOut(u64),
    /// The connection closed or failed while the header was read.
    #[error("connection closed during the PROXY protocol header")]
    Closed,
}

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxiedAddresses {
    /// The client's and the address it connected to.
    Tcp {
        /// The client (the attacker).
        source: SocketAddr,
        /// The address the client connected to, on the balancer.
        destination: SocketAddr,
    },
    /// The balancer's own connection (health check, `UNKNOWN`, `LOCAL`): the TCP
    /// peer is the source.
    Local,
}

/// Reads one header (v1 or v2) from the start of `stream`, and not a byte more.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<ProxiedAddresses, ProxyHeaderError> {
    match tokio::time::timeout(timeout, read_header_now(stream)).await {
        Ok(result) => result,
        Err(_) => Err(ProxyHeaderError::TimedOut(timeout.as_secs())),
    }
}

async fn read_header_now<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<ProxiedAddresses, ProxyHeaderError> {
    // Six bytes tell the versions apart; a version 1 line may be as short as 15.
    let mut start = [0u8; 16];
    stream
        .read_exact(&mut start[..6])
        .await
        .map_err(|_| ProxyHeaderError::Closed)?;
    if start[..6] == V2_SIGNATURE[..6] {
        stream
            .read_exact(&mut start[6..])
            .await
            .map_err(|_| ProxyHeaderError::Closed)?;
        if start[..12] != V2_SIGNATURE {
            return Err(ProxyHeaderError::Missing);
        }
        let length = usize::from(u16::from_be_bytes([start[14], start[15]]));
        if length > V2_MAX_BODY {
            return Err(ProxyHeaderError::Malformed("version 2 header too long"));
        }
        let mut body = vec![0u8; length];
        stream
            .read_exact(&mut body)
            .await
            .map_err(|_| ProxyHeaderError::Closed)?;
        return parse_v2(start[12], start[13], &body);
    }
    if &start[..6] != b"PROXY " {
        return Err(ProxyHeaderError::Missing);
    }
    // Version 1: the line ends with CRLF within 107 bytes. Read byte by byte so that
    // nothing after it (the client's SSH identification) is taken.
    let mut line = start[..6].to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(ProxyHeaderError::Malformed("version 1 line too long"));
        }
        let byte = stream
            .read_u8()
            .await
            .map_err(|_| ProxyHeaderError::Closed)?;
        line.push(byte);
    }
    parse_v1(&line)
}

/// Parses a complete version 1 line (CRLF included).
pub fn parse_v1(line: &[u8]) -> Result<ProxiedAddresses, ProxyHeaderError> {
    let bad = ProxyHeaderError::Malformed;
    let text = line
        .strip_suffix(b"\r\n")
        .and_then(|l| std::str::from_utf8(l).ok())
        .ok_or(bad("version 1 line is not ASCII ending in CRLF"))?;
    if text.len() + 2 > V1_MAX || text.contains('\r') || text.contains('\n') {
        return Err(bad("version 1 line too long"));
    }
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(ProxiedAddresses::Local),
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v4 = *family == "TCP4";
            let address = |text: &str| -> Result<IpAddr, ProxyHeaderError> {
                let ip: IpAddr = text.parse().map_err(|_| bad("bad address"))?;
                if ip.is_ipv4() != v4 {
                    return Err(bad("address does not match the family"));
                }
                Ok(ip)
            };
            let port = |text: &str| -> Result<u16, ProxyHeaderError> {
                // Decimal without sign or leading zeros, as the specification says.
                if text.is_empty()
                    || text.len() > 5
                    || !text.bytes().all(|b| b.is_ascii_digit())
                    || (text.len() > 1 && text.starts_with('0'))
                {
                    return Err(bad("bad port"));
                }
                text.parse().map_err(|_| bad("bad port"))
            };
            Ok(ProxiedAddresses::Tcp {
                source: SocketAddr::new(address(src)?, port(sport)?),
                destination: SocketAddr::new(address(dst)?, port(dport)?),
            })
        }
        _ => Err(bad(
            "version 1 line does not have the PROXY TCP4|TCP6 fields",
        )),
    }
}

/// Parses the part of a version 2 header after its signature.
pub fn parse_v2(
    version_command: u8,
    family: u8,
    body: &[u8],
) -> Result<ProxiedAddresses, ProxyHeaderError> {
    let bad = ProxyHeaderError::Malformed;
    if version_command >> 4 != 2 {
        return Err(bad("version 2 signature with another version"));
    }
    match version_command & 0x0f {
        0 => return Ok(ProxiedAddresses::Local),
        1 => {}
        _ => return Err(bad("unknown version 2 command")),
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match family {
        // TCP over IPv4.
        0x11 => {
            let a = body
                .get(..12)
                .ok_or(bad("version 2 IPv4 block too short"))?;
            let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            Ok(ProxiedAddresses::Tcp {
                source: SocketAddr::new(ip(&a[0..4]), port(&a[8..10])),
                destination: SocketAddr::new(ip(&a[4..8]), port(&a[10..12])),
            })
        }
        // TCP over IPv6.
        0x21 => {
            let a = body
                .get(..36)
                .ok_or(bad("version 2 IPv6 block too short"))?;
            let ip = |b: &[u8]| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(b);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            Ok(ProxiedAddresses::Tcp {
                source: SocketAddr::new(ip(&a[0..16]), port(&a[32..34])),
                destination: SocketAddr::new(ip(&a[16..32]), port(&a[34..36])),
            })
        }
        // UNSPEC: the balancer's own connection.
        0x00 => Ok(ProxiedAddresses::Local),
        _ => Err(bad("version 2 family other than TCP")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Result<ProxiedAddresses, ProxyHeaderError>, Vec<u8>) {
        let mut input = bytes;
        let result = read_header(&mut input, Duration::from_secs(1)).await;
        (result, input.to_vec())
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// What both test headers say.
    fn the_attacker() -> ProxiedAddresses {
        ProxiedAddresses::Tcp {
            source: "198.51.100.7:51234".parse().expect("addr"),
            destination: "10.0.0.5:22".parse().expect("addr"),
        }
    }

    #[tokio::test]
    async fn version_1_sets_both_addresses_and_leaves_the_ssh_bytes() {
        let (result, rest) =
            read(b"PROXY TCP4 198.51.100.7 10.0.0.5 51234 22\r\nSSH-2.0-x\r\n").await;
        assert_eq!(result, Ok(the_attacker()));
        assert_eq!(rest, b"SSH-2.0-x\r\n");
        let (result, _) = read(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 22\r\n").await;
        assert!(matches!(result, Ok(ProxiedAddresses::Tcp { source, .. }) if source.is_ipv6()));
        let (result, rest) = read(b"PROXY UNKNOWN\r\nSSH-2.0-x\r\n").await;
        assert_eq!(result, Ok(ProxiedAddresses::Local));
        assert_eq!(rest, b"SSH-2.0-x\r\n");
    }

    #[tokio::test]
    async fn version_2_sets_both_addresses_and_skips_its_tlvs() {
        let mut body = vec![198, 51, 100, 7, 10, 0, 0, 5];
        body.extend_from_slice(&51234u16.to_be_bytes());
        body.extend_from_slice(&22u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0x00, 0x02, 0xab, 0xcd]); // a TLV
        let mut input = v2(1, 0x11, &body);
        input.extend_from_slice(b"SSH-2.0-x\r\n");
        let (result, rest) = read(&input).await;
        assert_eq!(result, Ok(the_attacker()));
        assert_eq!(rest, b"SSH-2.0-x\r\n");
        let mut body6 = [0u8; 36].to_vec();
        body6[15] = 1;
        body6[33] = 7;
        let (result, _) = read(&v2(1, 0x21, &body6)).await;
        assert_eq!(
            result.map(|a| match a {
                ProxiedAddresses::Tcp { source, .. } => source.to_string(),
                ProxiedAddresses::Local => String::new(),
            }),
            Ok("[::1]:7".to_owned())
        );
        let (result, _) = read(&v2(0, 0x00, &[])).await;
        assert_eq!(result, Ok(ProxiedAddresses::Local));
    }

    #[tokio::test]
    async fn malformed_headers_are_refused() {
        let cases: Vec<Vec<u8>> = vec![
            b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(),
            b"PROXY TCP4 198.51.100.7 10.0.0.5 51234\r\n".to_vec(),
            b"PROXY TCP4 2001:db8::1 10.0.0.5 1 22\r\n".to_vec(),
            b"PROXY TCP4 198.51.100.7 10.0.0.5 051234 22\r\n".to_vec(),
            b"PROXY TCP4 198.51.100.7 10.0.0.5 99999 22\r\n".to_vec(),
            b"PROXY TCP4 198.51.100.7 10.0.0.5 1 22\n".to_vec(),
            format!("PROXY TCP4 {}\r\n", "1".repeat(200)).into_bytes(),
            b"PROXY TCP4 198.51.100.7\xff 10.0.0.5 1 22\r\n".to_vec(),
            v2(1, 0x11, &[1, 2, 3]),
            v2(1, 0x31, &[0; 216]),
            v2(5, 0x11, &[0; 12]),
            {
                let mut long = V2_SIGNATURE.to_vec();
                long.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
                long
            },
            {
                let mut other = V2_SIGNATURE.to_vec();
                other.extend_from_slice(&[0x11, 0x11, 0x00, 0x0c]);
                other.extend_from_slice(&[0; 12]);
                other
            },
        ];
        for case in cases {
            let (result, _) = read(&case).await;
            assert!(
                result.is_err(),
                "{:?} gave {result:?}",
                String::from_utf8_lossy(&case)
            );
        }
        // Cut short, or nothing at all.
        let (result, _) = read(b"PROXY TCP4 198.51").await;
        assert_eq!(result, Err(ProxyHeaderError::Closed));
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let (_client, mut server) = tokio::io::duplex(64);
        let result = read_header(&mut server, Duration::from_millis(50)).await;
        assert_eq!(result, Err(ProxyHeaderError::TimedOut(0)));
    }
}
