//! Serving a captured file to the box as a TFTP server would: DATA blocks of 512
//! bytes in lock-step with the box's ACKs, retransmitted a few times, then given up.

use std::time::Duration;

use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::time::timeout;

use super::wire::{self, BLOCK_SIZE, Packet};

/// Why serving stopped early.
#[derive(Debug, Error)]
pub enum ServeError {
    /// A socket operation failed.
    #[error("TFTP serve socket: {0}")]
    Io(#[from] std::io::Error),
    /// The box stopped acknowledging.
    #[error("box did not acknowledge block {0}")]
    NoAck(u16),
    /// The box sent an ERROR packet.
    #[error("box aborted the transfer")]
    Aborted,
    /// The file has more blocks than a 16-bit block number counts (no rollover).
    #[error("file too large for TFTP")]
    TooLarge,
}

/// Sends `body` on `socket`, which is connected to the box's port.
pub async fn serve(
    socket: &UdpSocket,
    body: &[u8],
    packet_timeout: Duration,
    retries: u32,
) -> Result<(), ServeError> {
    // A file of n full blocks ends with an empty one.
    let blocks = body.len() / BLOCK_SIZE + 1;
    if blocks > usize::from(u16::MAX) {
        return Err(ServeError::TooLarge);
    }
    let mut buf = [0u8; 600];
    for index in 0..blocks {
        let block = u16::try_from(index + 1).map_err(|_| ServeError::TooLarge)?;
        let start = index * BLOCK_SIZE;
        let end = (start + BLOCK_SIZE).min(body.len());
        let packet = wire::data(block, &body[start..end]);
        let mut tries = 0;
        socket.send(&packet).await?;
        loop {
            let len = match timeout(packet_timeout, socket.recv(&mut buf)).await {
                Ok(result) => result?,
                Err(_) => {
                    tries += 1;
                    if tries > retries {
                        return Err(ServeError::NoAck(block));
                    }
                    socket.send(&packet).await?;
                    continue;
                }
            };
            match wire::parse(&buf[..len]) {
                Ok(Packet::Ack { block: acked }) if acked == block => break,
                Ok(Packet::Error { .. }) => return Err(ServeError::Aborted),
                // Duplicates, stale ACKs and noise are ignored (no sorcerer's apprentice).
                _ => {}
            }
        }
    }
    Ok(())
}
