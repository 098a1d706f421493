//! HTTPS for the box: Hermes answers its TLS with a certificate the sensor's CA
//! minted for the name asked (the box trusts that CA), or, where a real client would
//! not have accepted the server's certificate, with a mirror of it that fails the
//! same way; and fetches upstream over TLS of its own.

mod ca;
pub mod der;
mod leaves;
mod mirror;
mod setup;
mod upstream;

use std::net::IpAddr;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub use ca::{CaError, CaName, SensorCa};
pub use der::CertSummary;
pub use mirror::MirrorError;
pub use setup::TlsSetupError;
pub use upstream::{Verdict, client_config};

/// What TLS interception shares: the CA, the leaves it minted, the upstream client
/// and, when upstream certificates are verified, their judge.
#[derive(Debug)]
pub struct TlsGateway {
    ca: SensorCa,
    leaves: leaves::Leaves,
    upstream: Arc<rustls::ClientConfig>,
    judge: Option<upstream::Judge>,
}

impl TlsGateway {
    /// A gateway minting with `ca`, verifying upstream certificates when `verify`
    /// (against the system's roots and `extra_roots`).
    pub fn new(
        ca: SensorCa,
        verify: bool,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<TlsGateway, rustls::Error> {
        let judge = match verify {
            true => Some(upstream::Judge::new(extra_roots)?),
            false => None,
        };
        Ok(TlsGateway {
            ca,
            leaves: leaves::Leaves::default(),
            upstream: client_config()?,
            judge,
        })
    }

    /// The CA the boxes must trust.
    pub fn ca(&self) -> &SensorCa {
        &self.ca
    }

    /// The upstream client configuration (any certificate: see [`Self::judge`]).
    pub fn upstream(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.upstream)
    }

    /// What an upstream `chain` (leaf first) is worth for `name`; `None` when
    /// upstream certificates are not verified (`verify_upstream: false`).
    pub fn judge(&self, chain: &[CertificateDer<'_>], name: &ServerName<'_>) -> Option<Verdict> {
        self.judge.as_ref().map(|judge| judge.judge(chain, name))
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
        let config = serving(self.ca.mint(&host)?)?;
        self.leaves.put(&host, Arc::clone(&config));
        Ok(config)
    }

    /// The configuration showing a mirror of the upstream certificate `original`
    /// (DER): signed by the sensor's CA when `by_ca` (a box then trusts its issuer
    /// and checks the rest, names and validity, as of the original), otherwise by
    /// nobody any client trusts. `host` as for [`Self::server_config`]. Kept by the
    /// original's digest.
    pub fn mirror_config(
        &self,
        original: &CertificateDer<'_>,
        by_ca: bool,
        sni: Option<&str>,
        destination: IpAddr,
    ) -> Result<Arc<ServerConfig>, MirrorError> {
        let signer = if by_ca { "ca" } else { "self" };
        let digest = hermes_core::capture::sha256_hex(original);
        let key = format!("mirror {signer} {digest}");
        if let Some(config) = self.leaves.get(&key) {
            return Ok(config);
        }
        let host = match sni {
            Some(name) => name.to_ascii_lowercase(),
            None => destination.to_string(),
        };
        let issuer = by_ca.then(|| self.ca.issuer());
        let leaf = mirror::mirror(original, &host, issuer)?;
        let config = serving(leaf).map_err(CaError::from)?;
        self.leaves.put(&key, Arc::clone(&config));
        Ok(config)
    }
}

/// A mirror of `original` minted afresh (a measurement's).
#[cfg(test)]
pub fn mirror_for_measurement(original: &[u8]) -> Result<Arc<CertifiedKey>, MirrorError> {
    mirror::mirror(original, "dropper.test", None)
}

/// A server configuration showing `leaf`, HTTP/1.1 only (the gateway reads one
/// HTTP/1 request).
fn serving(leaf: Arc<CertifiedKey>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Minted(leaf)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The one leaf of a connection's name.
#[derive(Debug)]
struct Minted(Arc<CertifiedKey>);

impl ResolvesServerCert for Minted {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}
