//! HTTPS for the box: Hermes answers its TLS with a certificate the sensor's CA
//! minted for the name asked (the box trusts that CA), and fetches upstream over TLS
//! of its own.

mod ca;
pub mod der;
mod leaves;
mod setup;
mod upstream;

use std::net::IpAddr;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub use ca::{CaError, CaName, SensorCa};
pub use der::CertSummary;
pub use setup::TlsSetupError;
pub use upstream::client_config;

/// What TLS interception shares: the CA, the leaves it minted, the upstream client.
#[derive(Debug)]
pub struct TlsGateway {
    ca: SensorCa,
    leaves: leaves::Leaves,
    upstream: Arc<rustls::ClientConfig>,
}

impl TlsGateway {
    /// A gateway minting with `ca`, verifying upstream certificates when `verify`
    /// (against the system's roots and `extra_roots`).
    pub fn new(
        ca: SensorCa,
        verify: bool,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<TlsGateway, rustls::Error> {
        Ok(TlsGateway {
            ca,
            leaves: leaves::Leaves::default(),
            upstream: client_config(verify, extra_roots)?,
        })
    }

    /// The CA the boxes must trust.
    pub fn ca(&self) -> &SensorCa {
        &self.ca
    }

    /// The upstream client configuration.
    pub fn upstream(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.upstream)
    }

    /// Names whose leaf is kept.
    pub fn leaves_kept(&self) -> usize {
        self.leaves.len()
    }

    /// The box-facing configuration for `sni`, or for the address the box connected
    /// to when it sent no name; minted once, then kept.
    pub fn server_config(
        &self,
        sni: Option<&str>,
        destination: IpAddr,
    ) -> Result<Arc<ServerConfig>, CaError> {
        let host = match sni {
            Some(name) => name.to_ascii_lowercase(),
            None => destination.to_string(),
        };
        if let Some(config) = self.leaves.get(&host) {
            return Ok(config);
        }
        let leaf = self.ca.mint(&host)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Minted(leaf)));
        // HTTP/1.1 only: the gateway reads one HTTP/1 request.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        self.leaves.put(&host, Arc::clone(&config));
        Ok(config)
    }
}

/// The one leaf of a connection's name.
#[derive(Debug)]
struct Minted(Arc<CertifiedKey>);

impl ResolvesServerCert for Minted {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}
