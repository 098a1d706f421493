//! How a fetch reaches upstream: plain TCP for HTTP, TLS of Hermes's own for HTTPS
//! (the name the box sent as SNI, the certificate checked as configured).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::tls::CertSummary;

/// An upstream connection, plain or TLS.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How to connect upstream.
#[derive(Clone)]
pub(super) enum Upstream {
    /// HTTP: TCP only.
    Plain,
    /// HTTPS: TLS over TCP, with `sni` (the box's) when it sent one.
    Tls {
        config: Arc<rustls::ClientConfig>,
        sni: Option<String>,
    },
}

/// What the box's side of an HTTPS fetch said, and what upstream showed.
#[derive(Debug, Clone, Default)]
pub(super) struct TlsSeen {
    /// The name the box sent (SNI), if any.
    pub sni: Option<String>,
    /// Upstream's certificate, once the handshake is done.
    pub upstream_cert: Option<CertSummary>,
}

/// A failed connection: the event's reason and the error in words.
pub(super) type Failure = (&'static str, String);

/// Connects to `destination` within `timeout` (TCP and any TLS handshake together).
pub(super) async fn connect(
    how: &Upstream,
    destination: SocketAddr,
    timeout: Duration,
    seen: Option<&mut TlsSeen>,
) -> Result<Box<dyn Io>, Failure> {
    match tokio::time::timeout(timeout, connect_now(how, destination, seen)).await {
        Ok(result) => result,
        Err(_) => Err(("connect_failed", "connect timed out".to_owned())),
    }
}

async fn connect_now(
    how: &Upstream,
    destination: SocketAddr,
    seen: Option<&mut TlsSeen>,
) -> Result<Box<dyn Io>, Failure> {
    let tcp = TcpStream::connect(destination)
        .await
        .map_err(|error| ("connect_failed", error.to_string()))?;
    let Upstream::Tls { config, sni } = how else {
        return Ok(Box::new(tcp));
    };
    // No SNI from the box: none upstream either (rustls sends none for an address),
    // and the certificate is checked against the address.
    let name = match sni
        .as_deref()
        .map(|name| ServerName::try_from(name.to_owned()))
    {
        Some(Ok(name)) => name,
        Some(Err(error)) => return Err(("tls_failed", format!("server name: {error}"))),
        None => ServerName::IpAddress(destination.ip().into()),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|error| ("tls_failed", format!("upstream TLS: {error}")))?;
    if let Some(seen) = seen
        && let Some(leaf) = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
    {
        match CertSummary::of(leaf) {
            Ok(summary) => seen.upstream_cert = Some(summary),
            Err(error) => {
                tracing::debug!(target: "hermes::egress", %error, "upstream certificate not summarized")
            }
        }
    }
    Ok(Box::new(stream))
}
