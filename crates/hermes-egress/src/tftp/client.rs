//! Hermes's own TFTP client: reads one file from a real server in octet mode, with
//! a size cap, a per-packet timeout with a few retransmissions and an overall deadline.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};

use super::wire::{self, BLOCK_SIZE, ErrorCode, Packet};

/// How a fetch is bounded.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// The most bytes kept; a longer file fails the fetch.
    pub max_size: usize,
    /// How long to wait for the next packet before retransmitting.
    pub packet_timeout: Duration,
    /// Retransmissions of one packet before giving up.
    pub retries: u32,
    /// The deadline of the whole transfer.
    pub total_timeout: Duration,
}

/// Why a fetch failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// A socket operation failed.
    #[error("TFTP socket: {0}")]
    Io(#[from] std::io::Error),
    /// The server stayed silent through every retransmission.
    #[error("TFTP server did not answer")]
    NoAnswer,
    /// The whole transfer took too long.
    #[error("TFTP transfer exceeded its deadline")]
    Deadline,
    /// The file is larger than allowed.
    #[error("TFTP file larger than {0} bytes")]
    TooLarge(usize),
    /// The server answered with an ERROR packet (message escaped).
    #[error("TFTP server error {code}: {message}")]
    Server { code: u16, message: String },
    /// The server sent something TFTP does not allow here.
    #[error("TFTP protocol violation: {0}")]
    Protocol(&'static str),
}

/// Reads `file` from `server` (its port 69 usually) and returns its bytes.
pub async fn fetch(
    server: SocketAddr,
    file: &[u8],
    limits: ClientLimits,
) -> Result<Vec<u8>, ClientError> {
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    let deadline = Instant::now() + limits.total_timeout;
    let mut body = Vec::new();
    // The last packet we sent and where to: the request, then each ACK.
    let mut last = wire::read_request(file);
    let mut peer: Option<SocketAddr> = None;
    let mut expected: u16 = 1;
    let mut buf = vec![0u8; BLOCK_SIZE + 4 + 1];
    socket.send_to(&last, server).await?;
    let mut tries = 0;
    loop {
        let wait = Instant::now() + limits.packet_timeout;
        let received = timeout_at(wait.min(deadline), socket.recv_from(&mut buf)).await;
        let (len, from) = match received {
            Ok(result) => result?,
            Err(_) if Instant::now() >= deadline => return Err(ClientError::Deadline),
            Err(_) => {
                tries += 1;
                if tries > limits.retries {
                    return Err(ClientError::NoAnswer);
                }
                socket.send_to(&last, peer.unwrap_or(server)).await?;
                continue;
            }
        };
        // The server answers from a port of its own (its TID); only its address may.
        match peer {
            Some(peer) if peer != from => continue,
            None if from.ip() != server.ip() => continue,
            _ => {}
        }
        let packet = match wire::parse(&buf[..len]) {
            Ok(packet) => packet,
            Err(_) => return Err(abort(&socket, from, "malformed packet").await),
        };
        match packet {
            Packet::Data { block, data } if block == expected => {
                peer = Some(from);
                tries = 0;
                if body.len() + data.len() > limits.max_size {
                    let _ = socket
                        .send_to(&wire::error(ErrorCode::DiskFull, "too large"), from)
                        .await;
                    return Err(ClientError::TooLarge(limits.max_size));
                }
                body.extend_from_slice(data);
                last = wire::ack(block).to_vec();
                socket.send_to(&last, from).await?;
                if data.len() < BLOCK_SIZE {
                    return Ok(body);
                }
                expected = expected.wrapping_add(1);
            }
            // A duplicate of a block already acknowledged: acknowledge it again.
            Packet::Data { block, .. }
                if peer == Some(from) && block == expected.wrapping_sub(1) =>
            {
                socket.send_to(&last, from).await?;
            }
            Packet::Data { .. } => return Err(abort(&socket, from, "unexpected block").await),
            Packet::Error { code, message } => {
                return Err(ClientError::Server {
                    code,
                    message: hermes_core::escape::escape_untrusted_bytes(message),
                });
            }
            _ => return Err(abort(&socket, from, "unexpected packet").await),
        }
    }
}

/// Tells the server the transfer is over and names the violation.
async fn abort(socket: &UdpSocket, to: SocketAddr, why: &'static str) -> ClientError {
    let _ = socket
        .send_to(&wire::error(ErrorCode::IllegalOperation, why), to)
        .await;
    ClientError::Protocol(why)
}
