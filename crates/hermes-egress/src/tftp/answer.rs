//! A box's TFTP: read requests arriving at the gateway's listener are fetched
//! upstream from the server the box addressed, and answered from that server's
//! address by a transfer socket of their own, as the real server would.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket as StdUdpSocket};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinSet;

use super::pktinfo::recv_with_destination;
use super::serve::serve;
use super::wire::{self, Packet};
use crate::BoxContext;
use crate::fetch::{Fetcher, fetch_tftp};

/// Transfers one box may have at once; further requests wait for the box to retry.
pub const MAX_TRANSFERS_PER_BOX: usize = 8;
/// How long the box may take to acknowledge a block, and how often it is resent.
const BOX_ACK_TIMEOUT: Duration = Duration::from_secs(2);
const BOX_RETRIES: u32 = 5;

/// Makes a transfer socket bound to an address (in the box's gateway namespace).
pub type Bind = Arc<
    dyn Fn(SocketAddrV4) -> Pin<Box<dyn Future<Output = io::Result<StdUdpSocket>> + Send>>
        + Send
        + Sync,
>;

/// Where a box's request goes.
#[derive(Clone)]
pub struct TftpAnswer {
    /// Fetches, stores and reports.
    pub fetcher: Arc<Fetcher>,
    /// Makes transfer sockets.
    pub bind: Bind,
    /// The port fetched upstream (69; a test's own server elsewhere).
    pub upstream_port: u16,
}

/// Serves the box's TFTP from `listener` (IP_PKTINFO on) until dropped.
pub async fn answer_box(listener: UdpSocket, ctx: BoxContext, answer: TftpAnswer) {
    let active: Arc<Mutex<HashSet<SocketAddr>>> = Arc::default();
    let mut transfers = JoinSet::new();
    let mut buf = [0u8; 600];
    loop {
        let received = tokio::select! {
            received = recv_with_destination(&listener, &mut buf) => received,
            Some(_) = transfers.join_next(), if !transfers.is_empty() => continue,
        };
        let (len, from, destination) = match received {
            Ok(received) => received,
            Err(error) => {
                // Not a spin on a socket that keeps failing.
                tracing::debug!(target: "hermes::egress", %error, "box TFTP receive failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(Packet::ReadRequest { file, .. }) = wire::parse(&buf[..len]) else {
            // Writes, junk and strays are dropped: nothing upstream takes uploads.
            continue;
        };
        if transfers.len() >= MAX_TRANSFERS_PER_BOX {
            continue;
        }
        // A box retransmits its request while the fetch runs: one transfer per port.
        if let Ok(mut active) = active.lock()
            && !active.insert(from)
        {
            continue;
        }
        let file = file.to_vec();
        let (ctx, answer, active) = (ctx.clone(), answer.clone(), Arc::clone(&active));
        let server = SocketAddrV4::new(destination, answer.upstream_port);
        transfers.spawn(async move {
            transfer(&ctx, &answer, server, from, &file).await;
            if let Ok(mut active) = active.lock() {
                active.remove(&from);
            }
        });
    }
}

async fn transfer(
    ctx: &BoxContext,
    answer: &TftpAnswer,
    server: SocketAddrV4,
    box_port: SocketAddr,
    file: &[u8],
) {
    let fetched = fetch_tftp(ctx, &answer.fetcher, server.into(), file).await;
    let socket = async {
        let socket = (answer.bind)(SocketAddrV4::new(*server.ip(), 0)).await?;
        let socket = UdpSocket::from_std(socket)?;
        socket.connect(box_port).await?;
        io::Result::Ok(socket)
    };
    let socket = match socket.await {
        Ok(socket) => socket,
        Err(error) => {
            tracing::warn!(target: "hermes::egress", %server, %error, "no TFTP transfer socket for the box");
            return;
        }
    };
    match fetched {
        Ok(body) => {
            if let Err(error) = serve(&socket, &body, BOX_ACK_TIMEOUT, BOX_RETRIES).await {
                tracing::debug!(target: "hermes::egress", %server, %error, "TFTP transfer to the box ended early");
            }
        }
        Err(refusal) => {
            let _ = socket
                .send(&wire::error(refusal.code, refusal.message))
                .await;
        }
    }
}
