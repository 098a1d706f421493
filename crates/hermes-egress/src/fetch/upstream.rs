//! How a fetch reaches upstream: plain TCP for HTTP, TLS of Hermes's own for HTTPS
//! (the name the box sent as SNI, the certificate judged as configured).

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::report::Outcome;
use super::serve::Admitted;
use crate::tls::{CertSummary, TlsGateway, Verdict};

/// An upstream connection, plain or TLS.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How a fetch reaches upstream.
pub(super) enum Upstream<'a> {
    /// HTTP: admitted and connected once the request is read.
    Plain,
    /// HTTPS: admitted and connected before the box's handshake (upstream's
    /// certificate decides which one the box is shown), or what stopped that; a
    /// failure is reported once the request is read, with its URL.
    Opened(Result<Opened<'a>, Outcome>),
}

/// An upstream connection with the fetch's permit and its place in the counts.
pub(super) struct Opened<'a> {
    pub io: Box<dyn Io>,
    pub admitted: Admitted<'a>,
}

/// What the box's side of an HTTPS fetch said, and what upstream showed.
#[derive(Debug, Clone, Default)]
pub(super) struct TlsSeen {
    /// The name the box sent (SNI), if any.
    pub sni: Option<String>,
    /// Upstream's certificate, once the handshake is done.
    pub upstream_cert: Option<CertSummary>,
    /// Upstream's chain as sent, leaf first (for the judge and a mirror).
    pub chain: Vec<CertificateDer<'static>>,
    /// Whether the chain verified (`None`: not checked, `verify_upstream: false`).
    pub verdict: Option<Verdict>,
}

/// A failed connection: the event's reason and the error in words.
pub(super) type Failure = (&'static str, String);

/// Connects to `destination` over TCP within `timeout`.
pub(super) async fn connect_plain(
    destination: SocketAddr,
    timeout: Duration,
) -> Result<Box<dyn Io>, Failure> {
    match tokio::time::timeout(timeout, TcpStream::connect(destination)).await {
        Ok(Ok(tcp)) => Ok(Box::new(tcp)),
        Ok(Err(error)) => Err(("connect_failed", error.to_string())),
        Err(_) => Err(("connect_failed", "connect timed out".to_owned())),
    }
}

/// Connects to `destination` over TLS within `timeout` (TCP and the handshake
/// together), sending the box's SNI; notes upstream's chain and what the gateway's
/// judge made of it in `seen`.
pub(super) async fn connect_tls(
    gateway: &TlsGateway,
    destination: SocketAddr,
    timeout: Duration,
    seen: &mut TlsSeen,
) -> Result<Box<dyn Io>, Failure> {
    match tokio::time::timeout(timeout, connect_tls_now(gateway, destination, seen)).await {
        Ok(result) => result,
        Err(_) => Err(("connect_failed", "connect timed out".to_owned())),
    }
}

async fn connect_tls_now(
    gateway: &TlsGateway,
    destination: SocketAddr,
    seen: &mut TlsSeen,
) -> Result<Box<dyn Io>, Failure> {
    // No SNI from the box: none upstream either (rustls sends none for an address),
    // and the certificate is checked against the address.
    let name = match seen
        .sni
        .as_deref()
        .map(|name| ServerName::try_from(name.to_owned()))
    {
        Some(Ok(name)) => name,
        Some(Err(error)) => return Err(("tls_failed", format!("server name: {error}"))),
        None => ServerName::IpAddress(destination.ip().into()),
    };
    let tcp = TcpStream::connect(destination)
        .await
        .map_err(|error| ("connect_failed", error.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(gateway.upstream());
    let stream = connector
        .connect(name.clone(), tcp)
        .await
        .map_err(|error| ("tls_failed", format!("upstream TLS: {error}")))?;
    seen.chain = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    if let Some(leaf) = seen.chain.first() {
        match CertSummary::of(leaf) {
            Ok(summary) => seen.upstream_cert = Some(summary),
            Err(error) => {
                tracing::debug!(target: "hermes::egress", %error, "upstream certificate not summarized")
            }
        }
    }
    seen.verdict = gateway.judge(&seen.chain, &name);
    Ok(Box::new(stream))
}
