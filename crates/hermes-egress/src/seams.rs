//! Where the other parts of the gateway plug in: the download fetcher takes the TCP
//! connections it wants, the resolver serves the box's DNS socket.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::net::{TcpStream, UdpSocket};

use crate::BoxContext;

/// A box's TCP connection as the gateway accepted it.
#[derive(Debug)]
pub struct BoxConnection {
    /// The accepted socket (in the box's gateway namespace).
    pub stream: TcpStream,
    /// Where the box was connecting to.
    pub destination: SocketAddr,
    /// Whose box it is.
    pub context: BoxContext,
}

/// Handles the connections it wants (`egress.mode: fetch`); the rest are refused.
#[async_trait]
pub trait FetchHandler: Send + Sync {
    /// Whether a connection to `destination` is its to handle.
    fn wants(&self, destination: SocketAddr) -> bool;
    /// Serves the connection to its end.
    async fn handle(&self, connection: BoxConnection);
}

/// A future the gateway runs for a box until the box's network goes.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Serves a box's DNS: given the UDP socket bound on port 53 in the box's gateway
/// namespace (queries to any address arrive there) and the box's context.
pub type DnsServer = Arc<dyn Fn(UdpSocket, BoxContext) -> Task + Send + Sync>;

/// Until a resolver is plugged in: queries are read and left unanswered (the box's
/// resolver times out as behind a firewall that drops DNS).
pub fn silent_dns() -> DnsServer {
    Arc::new(|socket: UdpSocket, _context: BoxContext| -> Task {
        Box::pin(async move {
            let mut buffer = [0u8; 512];
            while socket.recv_from(&mut buffer).await.is_ok() {}
        })
    })
}
