//! The gateway's parts as the network plugs them in: the download fetcher takes a
//! box's connections to the ports it fetches from, the resolver serves its DNS.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hermes_core::config::EgressConfig;
use tokio::net::{TcpStream, UdpSocket};

use crate::BoxContext;
use crate::dns::{self, Resolver};
use crate::fetch::{Fetcher, serve_http, serve_tls};
use crate::seams::{BoxConnection, DnsServer, FetchHandler, Task};
use crate::tls::TlsGateway;

/// Ports whose TCP traffic is not plain HTTP: TLS ones are taken by
/// [`HttpFetch::with_tls`], FTP's by the gateway's [`crate::ftp::FtpGateway`] (TFTP
/// is UDP and has its own listener).
const NOT_HTTP: &[u16] = &[21, 69, 443, 465, 993, 995, 8443];

/// Ports whose traffic is HTTPS, fetched when a [`TlsGateway`] is plugged in.
const HTTPS: &[u16] = &[443, 8443];

/// HTTP downloads to `egress.upstream_ports`; with a TLS gateway, HTTPS ones too:
/// 443 and 8443 are taken, and a connection to any of these ports that opens with a
/// TLS handshake is served as HTTPS (told apart by its first byte).
pub struct HttpFetch {
    fetcher: Arc<Fetcher>,
    ports: BTreeSet<u16>,
    tls: Option<(Arc<TlsGateway>, BTreeSet<u16>)>,
}

impl HttpFetch {
    /// Fetches through `fetcher` on the configured ports that carry HTTP.
    pub fn new(config: &EgressConfig, fetcher: Arc<Fetcher>) -> Self {
        let ports = config
            .upstream_ports
            .iter()
            .copied()
            .filter(|port| !NOT_HTTP.contains(port))
            .collect();
        HttpFetch {
            fetcher,
            ports,
            tls: None,
        }
    }

    /// Also fetches HTTPS on the configured ports that carry it, answering the
    /// box's TLS through `gateway`.
    pub fn with_tls(mut self, config: &EgressConfig, gateway: Arc<TlsGateway>) -> Self {
        let ports = config
            .upstream_ports
            .iter()
            .copied()
            .filter(|port| HTTPS.contains(port))
            .collect();
        self.tls = Some((gateway, ports));
        self
    }

    fn tls_for(&self, destination: SocketAddr) -> Option<&Arc<TlsGateway>> {
        match &self.tls {
            Some((gateway, ports)) if ports.contains(&destination.port()) => Some(gateway),
            _ => None,
        }
    }
}

/// How long the box may take to send its first byte before the connection is
/// taken for plain HTTP (whose own timeouts then apply).
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the box opened with a TLS handshake record: HTTPS goes to any port, and
/// plain HTTP to 443 too. The byte is peeked, not read.
async fn opens_with_tls(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(SNIFF_TIMEOUT, stream.peek(&mut first)).await,
        Ok(Ok(1)) if first[0] == 0x16
    )
}

#[async_trait]
impl FetchHandler for HttpFetch {
    fn wants(&self, destination: SocketAddr) -> bool {
        self.ports.contains(&destination.port()) || self.tls_for(destination).is_some()
    }

    async fn handle(&self, connection: BoxConnection) {
        if let Some((gateway, _)) = &self.tls
            && opens_with_tls(&connection.stream).await
        {
            return serve_tls(
                connection.stream,
                connection.destination,
                connection.context,
                Arc::clone(&self.fetcher),
                Arc::clone(gateway),
            )
            .await;
        }
        serve_http(
            connection.stream,
            connection.destination,
            connection.context,
            Arc::clone(&self.fetcher),
        )
        .await;
    }
}

/// Every box's DNS answered by one shared resolver (its cache and upstream bounds
/// are the sensor's).
pub fn dns_server(resolver: Arc<Resolver>) -> DnsServer {
    Arc::new(move |socket: UdpSocket, context: BoxContext| -> Task {
        let resolver = Arc::clone(&resolver);
        Box::pin(async move {
            let error = dns::serve(socket, context, resolver).await;
            tracing::debug!(target: "hermes::egress", error = %error, "a box's DNS socket closed");
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_addresses::HostAddresses;
    use crate::ssrf::UpstreamPolicy;
    use crate::tls::{CaName, SensorCa};

    #[test]
    fn https_ports_are_fetched_only_with_a_tls_gateway() {
        let config = EgressConfig::default();
        let dir = tempfile::tempdir().expect("dir");
        let store =
            Arc::new(hermes_core::capture::FileStore::open(dir.path(), 1 << 20).expect("store"));
        let policy = UpstreamPolicy::new(&config, HostAddresses::read());
        let fetcher = Arc::new(Fetcher::new(&config, policy, store));
        let at = |port: u16| SocketAddr::from(([203, 0, 113, 9], port));
        let plain = HttpFetch::new(&config, Arc::clone(&fetcher));
        assert!(plain.wants(at(80)));
        assert!(!plain.wants(at(443)));
        let name = CaName {
            organization: "Northwave Hosting Ltd".to_owned(),
            common_name: "Northwave Hosting Internal CA G2".to_owned(),
        };
        let gateway =
            TlsGateway::new(SensorCa::generate(&name).expect("ca"), true, &[]).expect("gateway");
        let both = HttpFetch::new(&config, fetcher).with_tls(&config, Arc::new(gateway));
        for port in [80, 8080, 443, 8443] {
            assert!(both.wants(at(port)), "{port}");
        }
        for port in [21, 22, 25, 465, 993, 9999] {
            assert!(!both.wants(at(port)), "{port}");
        }
    }
}
