//! FTP (`busybox ftpget`, `curl ftp://`, `wget ftp://`): the box's port 21 is
//! answered by Hermes's own server, each `RETR` fetched upstream by Hermes's own
//! client and kept; the box's passive data connections reach the waiting transfer
//! through the gateway ([`DataPorts`]).

pub mod client;
mod hole;
pub mod ports;
pub mod serve;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use hermes_core::config::EgressConfig;

pub use ports::DataPorts;
pub use serve::serve_ftp;

use crate::fetch::Fetcher;
use crate::seams::BoxConnection;

/// FTP's control port.
pub const FTP_PORT: u16 = 21;

/// The boxes' FTP: their control connections to port 21 (when `upstream_ports`
/// lists it) and their data connections to the ports it named.
pub struct FtpGateway {
    fetcher: Arc<Fetcher>,
    ports: Arc<DataPorts>,
    enabled: bool,
}

impl FtpGateway {
    /// Fetches through `fetcher`, if `config` lets port 21 be fetched from.
    pub fn new(config: &EgressConfig, fetcher: Arc<Fetcher>) -> Self {
        FtpGateway {
            fetcher,
            ports: Arc::new(DataPorts::default()),
            enabled: config.upstream_ports.contains(&FTP_PORT),
        }
    }

    /// Its data ports are opened in the firewall of the box's gateway namespace
    /// (named by `naming`): only a port a transfer waits for reaches Hermes.
    pub(crate) fn opening_ports_in(mut self, naming: crate::netns::Naming) -> Self {
        self.ports = Arc::new(DataPorts::in_firewalls(naming));
        self
    }

    /// Whether a connection to `destination` is an FTP control connection to serve.
    pub fn wants(&self, destination: SocketAddr) -> bool {
        self.enabled && destination.port() == FTP_PORT
    }

    /// Takes a box's data connection a transfer waits for (None then), or gives
    /// the connection back.
    pub fn claim(&self, connection: BoxConnection) -> Option<BoxConnection> {
        self.ports.claim(connection)
    }

    /// Serves a control connection to its end.
    pub async fn serve(&self, connection: BoxConnection) {
        serve_ftp(
            connection.stream,
            connection.destination,
            connection.context,
            Arc::clone(&self.fetcher),
            Arc::clone(&self.ports),
        )
        .await;
    }
}

#[cfg(test)]
mod tests;
