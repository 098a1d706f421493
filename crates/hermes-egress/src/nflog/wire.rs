//! The netlink messages of netfilter's packet log (`NFLOG`): the two that bind a log
//! group to our socket, and the reading of the packets the kernel sends. Every
//! length comes from the kernel's message and is checked before use.

use std::net::{Ipv4Addr, SocketAddrV4};

/// `NETLINK_NETFILTER`.
pub const NETLINK_NETFILTER: libc::c_int = 12;

const NLMSG_HEADER: usize = 16;
const NFGEN_HEADER: usize = 4;
const NLA_HEADER: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
/// `NFNL_SUBSYS_ULOG << 8`: the log subsystem's message types.
const ULOG: u16 = 4 << 8;
const NFULNL_MSG_PACKET: u16 = ULOG;
const NFULNL_MSG_CONFIG: u16 = ULOG | 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
/// The attribute type without its nested and byte-order flags.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// The messages that bind log `group` to the socket and ask for the first
/// `copy_range` bytes of each packet.
pub fn bind_messages(group: u16, copy_range: u32) -> Vec<u8> {
    let mut out = config_message(group, 1, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
    let mut mode = copy_range.to_be_bytes().to_vec();
    mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    out.extend(config_message(group, 2, NFULA_CFG_MODE, &mode));
    out
}

fn config_message(group: u16, sequence: u32, attribute: u16, value: &[u8]) -> Vec<u8> {
    let attribute_len = NLA_HEADER + value.len();
    let len = NLMSG_HEADER + NFGEN_HEADER + align(attribute_len);
    let mut message = Vec::with_capacity(len);
    message.extend_from_slice(&(len as u32).to_ne_bytes());
    message.extend_from_slice(&NFULNL_MSG_CONFIG.to_ne_bytes());
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    message.extend_from_slice(&sequence.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family unspecified, version 0, the group in network order.
    message.extend_from_slice(&[0, 0]);
    message.extend_from_slice(&group.to_be_bytes());
    message.extend_from_slice(&(attribute_len as u16).to_ne_bytes());
    message.extend_from_slice(&attribute.to_ne_bytes());
    message.extend_from_slice(value);
    message.resize(len, 0);
    message
}

const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// What a logged packet was: the transport, where the box sent it, and the start of
/// what it carried (UDP's payload; TCP's first packet carries none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedPacket {
    /// `tcp`, `udp`, `icmp` or another IP protocol's number.
    pub transport: Transport,
    /// The destination (port 0 for ICMP and others).
    pub destination: SocketAddrV4,
    /// The source port (an ICMP echo's identifier): a retransmission has the same
    /// one, a new attempt another.
    pub source_port: u16,
    /// The transport's payload as far as the kernel copied it.
    pub payload: Vec<u8>,
}

/// The IP protocol of a logged packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Udp,
    Icmp,
    Other(u8),
}

impl Transport {
    /// The name in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Icmp => "icmp",
            Transport::Other(_) => "ip",
        }
    }
}

/// What a datagram from the kernel holds: the logged packets, and whether it
/// carried an error answer to our configuration (its errno).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    pub packets: Vec<LoggedPacket>,
    pub errors: Vec<i32>,
}

/// The netlink messages of a datagram, as (type, body), each checked for length;
/// a malformed one ends the datagram.
fn messages(mut datagram: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if datagram.len() < NLMSG_HEADER {
            return None;
        }
        let len = u32::from_ne_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]) as usize;
        let kind = u16::from_ne_bytes([datagram[4], datagram[5]]);
        if len < NLMSG_HEADER || len > datagram.len() {
            return None;
        }
        let body = &datagram[NLMSG_HEADER..len];
        datagram = datagram.get(align(len)..).unwrap_or_default();
        Some((kind, body))
    })
}

/// How many successful acknowledgements (errno 0) a datagram holds.
pub fn acknowledgements(datagram: &[u8]) -> usize {
    messages(datagram)
        .filter(|(kind, body)| *kind == NLMSG_ERROR && body.get(..4) == Some(&[0, 0, 0, 0]))
        .count()
}

/// Reads one datagram: any number of netlink messages. Anything malformed ends
/// the reading of that datagram (never a panic).
pub fn parse(datagram: &[u8]) -> Received {
    let mut received = Received::default();
    for (kind, body) in messages(datagram) {
        match kind {
            NLMSG_ERROR if body.len() >= 4 => {
                let errno = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
                if errno != 0 {
                    received.errors.push(-errno);
                }
            }
            NLMSG_DONE => break,
            NFULNL_MSG_PACKET if body.len() >= NFGEN_HEADER => {
                if let Some(packet) = payload(&body[NFGEN_HEADER..]).and_then(ip_packet) {
                    received.packets.push(packet);
                }
            }
            _ => {}
        }
    }
    received
}

/// The `NFULA_PAYLOAD` attribute among a message's attributes.
fn payload(mut attributes: &[u8]) -> Option<&[u8]> {
    while attributes.len() >= NLA_HEADER {
        let len = u16::from_ne_bytes([attributes[0], attributes[1]]) as usize;
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]) & NLA_TYPE_MASK;
        if len < NLA_HEADER || len > attributes.len() {
            return None;
        }
        if kind == NFULA_PAYLOAD {
            return Some(&attributes[NLA_HEADER..len]);
        }
        attributes = attributes.get(align(len)..).unwrap_or_default();
    }
    None
}

/// An IPv4 packet's destination and transport payload.
fn ip_packet(packet: &[u8]) -> Option<LoggedPacket> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header = usize::from(first & 0x0f) * 4;
    if header < 20 || packet.len() < header {
        return None;
    }
    let protocol = packet[9];
    let address = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    let transport = &packet[header..];
    let port = |t: &[u8]| t.get(2..4).map(|p| u16::from_be_bytes([p[0], p[1]]));
    let source_port = match protocol {
        6 | 17 => transport.get(..2),
        1 => transport.get(4..6),
        _ => None,
    }
    .map_or(0, |p| u16::from_be_bytes([p[0], p[1]]));
    let (transport_kind, port, payload) = match protocol {
        6 => {
            let data = transport
                .get(12)
                .map(|offset| usize::from(offset >> 4) * 4)
                .and_then(|offset| transport.get(offset..))
                .unwrap_or_default();
            (Transport::Tcp, port(transport)?, data)
        }
        17 => (
            Transport::Udp,
            port(transport)?,
            transport.get(8..).unwrap_or_default(),
        ),
        1 => (Transport::Icmp, 0, transport),
        other => (Transport::Other(other), 0, transport),
    };
    Some(LoggedPacket {
        transport: transport_kind,
        destination: SocketAddrV4::new(address, port),
        source_port,
        payload: payload.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use rand::RngExt;

    use super::*;

    /// A packet message as the kernel sends it, with a hardware-header attribute
    /// before the payload (as `NFULA_PACKET_HDR` comes first).
    fn packet_message(ip: &[u8]) -> Vec<u8> {
        let mut attributes = Vec::new();
        attributes.extend_from_slice(&8u16.to_ne_bytes());
        attributes.extend_from_slice(&1u16.to_ne_bytes());
        attributes.extend_from_slice(&[0x08, 0x00, 0, 0]);
        let payload_len = NLA_HEADER + ip.len();
        attributes.extend_from_slice(&(payload_len as u16).to_ne_bytes());
        attributes.extend_from_slice(&(NFULA_PAYLOAD | 0x4000).to_ne_bytes());
        attributes.extend_from_slice(ip);
        attributes.resize(align(attributes.len()), 0);
        let len = NLMSG_HEADER + NFGEN_HEADER + attributes.len();
        let mut message = Vec::new();
        message.extend_from_slice(&(len as u32).to_ne_bytes());
        message.extend_from_slice(&NFULNL_MSG_PACKET.to_ne_bytes());
        message.extend_from_slice(&[0; 10]);
        message.extend_from_slice(&[2, 0, 0, 1]);
        message.extend_from_slice(&attributes);
        message
    }

    fn ipv4(protocol: u8, destination: [u8; 4], transport: &[u8]) -> Vec<u8> {
        let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, protocol, 0, 0];
        packet.extend_from_slice(&[10, 0, 2, 15]);
        packet.extend_from_slice(&destination);
        packet.extend_from_slice(transport);
        packet
    }

    #[test]
    fn the_bind_messages_are_well_formed_netlink() {
        let messages = bind_messages(1, 256);
        assert_eq!(messages.len() % 4, 0);
        let first_len = u32::from_ne_bytes(messages[..4].try_into().expect("len")) as usize;
        assert_eq!(first_len, 16 + 4 + 8);
        assert_eq!(&messages[4..6], &NFULNL_MSG_CONFIG.to_ne_bytes());
        // The group in network order, the bind command.
        assert_eq!(&messages[18..20], &[0, 1]);
        assert_eq!(messages[24], NFULNL_CFG_CMD_BIND);
        let mode = &messages[first_len..];
        assert_eq!(&mode[24..28], &256u32.to_be_bytes());
        assert_eq!(mode[28], NFULNL_COPY_PACKET);
    }

    #[test]
    fn a_tcp_syn_gives_its_destination_and_a_udp_datagram_its_payload() {
        let mut syn = vec![0xc3, 0x50, 0, 22, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0, 0];
        syn.extend_from_slice(&[0; 4]);
        let mut datagram = packet_message(&ipv4(6, [198, 51, 100, 7], &syn));
        let mut udp = vec![0xc3, 0x51, 0x04, 0xd2, 0, 13, 0, 0];
        udp.extend_from_slice(b"flood");
        datagram.extend(packet_message(&ipv4(17, [203, 0, 113, 9], &udp)));
        datagram.extend(packet_message(&ipv4(1, [192, 0, 2, 1], &[8, 0, 0, 0])));
        let received = parse(&datagram);
        assert_eq!(received.errors, Vec::<i32>::new());
        assert_eq!(received.packets.len(), 3);
        assert_eq!(received.packets[0].transport, Transport::Tcp);
        assert_eq!(
            received.packets[0].destination,
            "198.51.100.7:22".parse().expect("address")
        );
        assert!(received.packets[0].payload.is_empty());
        assert_eq!(received.packets[0].source_port, 0xc350);
        assert_eq!(received.packets[1].transport, Transport::Udp);
        assert_eq!(received.packets[1].destination.port(), 1234);
        assert_eq!(received.packets[1].payload, b"flood");
        assert_eq!(received.packets[2].transport, Transport::Icmp);
    }

    #[test]
    fn an_error_answer_is_reported_and_an_ack_is_not() {
        let mut message = Vec::new();
        for errno in [0i32, -1] {
            message.extend_from_slice(&36u32.to_ne_bytes());
            message.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            message.extend_from_slice(&[0; 10]);
            message.extend_from_slice(&errno.to_ne_bytes());
            message.extend_from_slice(&[0; 16]);
        }
        assert_eq!(parse(&message).errors, vec![1]);
        assert_eq!(acknowledgements(&message), 1);
    }

    #[test]
    fn truncated_packets_and_lying_lengths_give_nothing() {
        let mut syn = vec![0xc3, 0x50, 0, 22];
        syn.extend_from_slice(&[0; 16]);
        let whole = packet_message(&ipv4(6, [198, 51, 100, 7], &syn));
        for cut in 0..whole.len() {
            let received = parse(&whole[..cut]);
            assert!(received.packets.is_empty(), "cut at {cut}");
        }
        // A header length past the packet, an IPv6 packet, a TCP header of 2 bytes.
        let mut long_header = ipv4(6, [1, 2, 3, 4], &syn);
        long_header[0] = 0x4f;
        for ip in [long_header, vec![0x60; 40], ipv4(6, [1, 2, 3, 4], &[0, 1])] {
            assert!(parse(&packet_message(&ip)).packets.is_empty());
        }
    }

    #[test]
    fn random_and_mutated_datagrams_never_panic() {
        let mut rng = rand::rng();
        let mut udp = vec![0, 1, 0, 53, 0, 9, 0, 0, b'x'];
        udp.resize(20, 0);
        let valid = packet_message(&ipv4(17, [203, 0, 113, 1], &udp));
        for _ in 0..20_000 {
            let mut datagram = if rng.random_bool(0.5) {
                valid.clone()
            } else {
                let len = rng.random_range(0..200);
                (0..len).map(|_| rng.random()).collect()
            };
            for _ in 0..rng.random_range(0..6) {
                if !datagram.is_empty() {
                    let at = rng.random_range(0..datagram.len());
                    datagram[at] = rng.random();
                }
            }
            let _ = parse(&datagram);
        }
    }
}
