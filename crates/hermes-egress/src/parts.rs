//! The gateway's parts as the network plugs them in: the download fetcher takes a
//! box's connections to the ports it fetches from, the resolver serves its DNS.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use hermes_core::config::EgressConfig;
use tokio::net::UdpSocket;

use crate::BoxContext;
use crate::dns::{self, Resolver};
use crate::fetch::{Fetcher, serve_http};
use crate::seams::{BoxConnection, DnsServer, FetchHandler, Task};

/// Ports whose traffic is not plain HTTP (TLS, FTP, TFTP): until the gateway speaks
/// them, their connections are refused and logged as any other.
const NOT_HTTP: &[u16] = &[21, 69, 443, 465, 993, 995, 8443];

/// Plain HTTP downloads to `egress.upstream_ports`.
pub struct HttpFetch {
    fetcher: Arc<Fetcher>,
    ports: BTreeSet<u16>,
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
        HttpFetch { fetcher, ports }
    }
}

#[async_trait]
impl FetchHandler for HttpFetch {
    fn wants(&self, destination: SocketAddr) -> bool {
        self.ports.contains(&destination.port())
    }

    async fn handle(&self, connection: BoxConnection) {
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
