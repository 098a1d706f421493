//! TFTP packets (RFC 1350): strict parsing of what a box or a server sends, and the
//! few packets Hermes writes. Anything malformed is an error, never a panic.

use thiserror::Error;

/// The largest DATA payload (no `blksize` option is ever agreed).
pub const BLOCK_SIZE: usize = 512;
/// The longest file name accepted in a read request.
pub const MAX_NAME: usize = 255;
/// The most option pairs a read request may carry (they are parsed and ignored).
const MAX_OPTIONS: usize = 8;
/// The longest option name or value.
const MAX_OPTION: usize = 64;

const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// TFTP error codes Hermes sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// Not defined, see the message.
    Undefined = 0,
    /// File not found.
    NotFound = 1,
    /// Access violation.
    AccessViolation = 2,
    /// Disk full or allocation exceeded.
    DiskFull = 3,
    /// Illegal TFTP operation.
    IllegalOperation = 4,
}

/// A transfer mode of a read request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes as they are.
    Octet,
    /// Text; Hermes still moves the bytes unchanged.
    Netascii,
}

/// A parsed packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A read request: the file name's raw bytes (no NUL, not empty) and its mode.
    ReadRequest { file: &'a [u8], mode: Mode },
    /// A write request (Hermes never accepts one).
    WriteRequest,
    /// A block of the file.
    Data { block: u16, data: &'a [u8] },
    /// An acknowledgement.
    Ack { block: u16 },
    /// An error from the peer: its code and message bytes.
    Error { code: u16, message: &'a [u8] },
    /// An option acknowledgement (Hermes never asks for options).
    OptionAck,
}

/// Why a packet was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than its fixed fields.
    #[error("TFTP packet too short ({0} bytes)")]
    Short(usize),
    /// An opcode TFTP does not define.
    #[error("unknown TFTP opcode {0}")]
    Opcode(u16),
    /// A string field without its terminating NUL.
    #[error("TFTP string field not NUL-terminated")]
    Unterminated,
    /// An empty or overlong file name.
    #[error("TFTP file name of {0} bytes")]
    Name(usize),
    /// A mode other than octet or netascii (mail is obsolete).
    #[error("unsupported TFTP mode")]
    Mode,
    /// Too many, overlong or unpaired options.
    #[error("malformed TFTP options")]
    Options,
    /// A DATA payload over the block size.
    #[error("TFTP data block of {0} bytes")]
    Oversize(usize),
}

/// Parses one datagram.
pub fn parse(packet: &[u8]) -> Result<Packet<'_>, WireError> {
    if packet.len() < 4 {
        return Err(WireError::Short(packet.len()));
    }
    let opcode = u16::from_be_bytes([packet[0], packet[1]]);
    let body = &packet[2..];
    let number = u16::from_be_bytes([body[0], body[1]]);
    match opcode {
        RRQ => parse_read_request(body),
        WRQ => Ok(Packet::WriteRequest),
        DATA => {
            let data = &body[2..];
            if data.len() > BLOCK_SIZE {
                return Err(WireError::Oversize(data.len()));
            }
            Ok(Packet::Data {
                block: number,
                data,
            })
        }
        ACK if body.len() == 2 => Ok(Packet::Ack { block: number }),
        ACK => Err(WireError::Short(packet.len())),
        ERROR => {
            let (message, _) = split_nul(&body[2..])?;
            Ok(Packet::Error {
                code: number,
                message,
            })
        }
        OACK => Ok(Packet::OptionAck),
        other => Err(WireError::Opcode(other)),
    }
}

fn parse_read_request(body: &[u8]) -> Result<Packet<'_>, WireError> {
    let (file, rest) = split_nul(body)?;
    if file.is_empty() || file.len() > MAX_NAME {
        return Err(WireError::Name(file.len()));
    }
    let (mode, mut rest) = split_nul(rest)?;
    let mode = if mode.eq_ignore_ascii_case(b"octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case(b"netascii") {
        Mode::Netascii
    } else {
        return Err(WireError::Mode);
    };
    let mut options = 0;
    while !rest.is_empty() {
        let (name, after_name) = split_nul(rest).map_err(|_| WireError::Options)?;
        let (value, after_value) = split_nul(after_name).map_err(|_| WireError::Options)?;
        options += 1;
        if options > MAX_OPTIONS
            || name.is_empty()
            || name.len() > MAX_OPTION
            || value.len() > MAX_OPTION
        {
            return Err(WireError::Options);
        }
        rest = after_value;
    }
    Ok(Packet::ReadRequest { file, mode })
}

/// The bytes before the first NUL and those after it.
fn split_nul(bytes: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let end = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or(WireError::Unterminated)?;
    Ok((&bytes[..end], &bytes[end + 1..]))
}

/// A read request for `file` in octet mode, without options.
pub fn read_request(file: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(file.len() + 10);
    packet.extend_from_slice(&RRQ.to_be_bytes());
    packet.extend_from_slice(file);
    packet.push(0);
    packet.extend_from_slice(b"octet\0");
    packet
}

/// A DATA packet.
pub fn data(block: u16, data: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(data.len() + 4);
    packet.extend_from_slice(&DATA.to_be_bytes());
    packet.extend_from_slice(&block.to_be_bytes());
    packet.extend_from_slice(data);
    packet
}

/// An ACK packet.
pub fn ack(block: u16) -> [u8; 4] {
    let [a, b] = ACK.to_be_bytes();
    let [c, d] = block.to_be_bytes();
    [a, b, c, d]
}

/// An ERROR packet; `message` is ours (ASCII, no NUL).
pub fn error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut packet = Vec::with_capacity(message.len() + 5);
    packet.extend_from_slice(&ERROR.to_be_bytes());
    packet.extend_from_slice(&(code as u16).to_be_bytes());
    packet.extend(message.bytes().filter(|&b| b != 0));
    packet.push(0);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    #[test]
    fn a_busybox_read_request_parses() {
        let packet = b"\x00\x01x.sh\x00octet\x00blksize\x00512\x00tsize\x000\x00";
        assert_eq!(
            parse(packet),
            Ok(Packet::ReadRequest {
                file: b"x.sh",
                mode: Mode::Octet
            })
        );
        assert_eq!(
            parse(b"\x00\x01a\x00NETASCII\x00"),
            Ok(Packet::ReadRequest {
                file: b"a",
                mode: Mode::Netascii
            })
        );
    }

    #[test]
    fn malformed_requests_are_refused() {
        assert_eq!(parse(b"\x00\x01\x00octet\x00"), Err(WireError::Name(0)));
        assert_eq!(parse(b"\x00\x01abc"), Err(WireError::Unterminated));
        assert_eq!(parse(b"\x00\x01a\x00mail\x00"), Err(WireError::Mode));
        assert_eq!(parse(b"\x00\x01a\x00octet"), Err(WireError::Unterminated));
        assert_eq!(
            parse(b"\x00\x01a\x00octet\x00x\x00"),
            Err(WireError::Options)
        );
        let long = [&b"\x00\x01"[..], &[b'a'; 256], b"\x00octet\x00"].concat();
        assert_eq!(parse(&long), Err(WireError::Name(256)));
        let many = [&b"\x00\x01a\x00octet\x00"[..], &b"o\x00v\x00".repeat(9)].concat();
        assert_eq!(parse(&many), Err(WireError::Options));
        assert_eq!(parse(b"\x00\x09\x00\x00"), Err(WireError::Opcode(9)));
        assert_eq!(parse(b"\x00\x04\x00"), Err(WireError::Short(3)));
        assert_eq!(parse(b"\x00\x04\x00\x01\x00"), Err(WireError::Short(5)));
    }

    #[test]
    fn written_packets_parse_back() {
        assert_eq!(
            parse(&read_request(b"boot/x")),
            Ok(Packet::ReadRequest {
                file: b"boot/x",
                mode: Mode::Octet
            })
        );
        assert_eq!(
            parse(&data(7, b"abc")),
            Ok(Packet::Data {
                block: 7,
                data: b"abc"
            })
        );
        assert_eq!(parse(&ack(65535)), Ok(Packet::Ack { block: 65535 }));
        assert_eq!(
            parse(&error(ErrorCode::NotFound, "no\0pe")),
            Ok(Packet::Error {
                code: 1,
                message: b"nope"
            })
        );
        assert_eq!(
            parse(&data(1, &[0; BLOCK_SIZE + 1])),
            Err(WireError::Oversize(BLOCK_SIZE + 1))
        );
    }

    #[test]
    fn random_bytes_never_panic_and_parsed_fields_stay_in_bounds() {
        let mut rng = rand::rng();
        let mut parsed = 0;
        for round in 0..20_000 {
            let len = rng.random_range(0..700);
            let mut packet: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            // Half the rounds get a valid opcode so the field parsers are reached.
            if round % 2 == 0 && packet.len() >= 2 {
                packet[0] = 0;
                packet[1] = rng.random_range(1..=6);
            }
            if let Ok(packet) = parse(&packet) {
                parsed += 1;
                match packet {
                    Packet::ReadRequest { file, .. } => {
                        assert!(!file.is_empty() && file.len() <= MAX_NAME);
                        assert!(!file.contains(&0));
                    }
                    Packet::Data { data, .. } => assert!(data.len() <= BLOCK_SIZE),
                    Packet::Error { message, .. } => assert!(!message.contains(&0)),
                    _ => {}
                }
            }
        }
        assert!(parsed > 0, "no random packet reached a field parser");
    }
}
