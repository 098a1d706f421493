//! One connection's HTTPS: Hermes reads the client's hello, connects upstream over
//! TLS of its own with the same name, and answers the client's handshake with the
//! certificate a real server's would be worth to it: a leaf of the sensor's CA
//! (which every box trusts) when upstream's certificate verified; a mirror of
//! upstream's signed by that CA when a root vouches for it but not for this name or
//! not now (the box's client then fails on the same name or date); a mirror nobody
//! trusts when no root vouches for it (self-signed, an unknown CA). A client that
//! checks certificates then fails where it would have failed against the real
//! server, and one that does not (`curl -k`, `wget --no-check-certificate`) sends its
//! request, which is fetched on the connection already open, within every limit of
//! a plain HTTP fetch.
//!
//! The SSH client's forwards (`ssh -D`, `-L`) do not trust the sensor's CA: they are
//! always shown the mirror, so only a client that does not check gets through; a
//! real sshd would have given it the real server, but Hermes relays no TLS it
//! cannot read.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_rustls::LazyConfigAcceptor;

use super::Fetcher;
use super::report::{self, Outcome};
use super::serve::{admit, serve_with};
use super::upstream::{self, Opened, TlsSeen, Upstream};
use crate::BoxContext;
use crate::tls::{TlsGateway, Verdict};

/// Who is on the other side of the gateway's TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsClient {
    /// A box: it trusts the sensor's CA.
    Box,
    /// The SSH client's forward: it trusts no certificate of ours.
    Forward,
}

/// Serves one TLS connection of a box to `original_dst`. A box that sends no TLS
/// is closed silently; one that rejects the certificate shown (a client not
/// trusting the sensor's CA, or checking what upstream's was worth) is reported as a
/// failed download of `https://<sni>/`.
pub async fn serve_tls<S>(
    stream: S,
    original_dst: SocketAddr,
    ctx: BoxContext,
    fetcher: Arc<Fetcher>,
    gateway: Arc<TlsGateway>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    serve_tls_for(TlsClient::Box, stream, original_dst, ctx, fetcher, gateway).await;
}

/// [`serve_tls`] for `client`.
pub async fn serve_tls_for<S>(
    client: TlsClient,
    stream: S,
    original_dst: SocketAddr,
    ctx: BoxContext,
    fetcher: Arc<Fetcher>,
    gateway: Arc<TlsGateway>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let deadline = Instant::now() + fetcher.fetch_timeout;
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = match tokio::time::timeout(fetcher.connect_timeout, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(error)) => {
            tracing::debug!(target: "hermes::egress", upstream = %original_dst, %error, "no TLS client hello");
            return;
        }
        Err(_) => {
            tracing::debug!(target: "hermes::egress", upstream = %original_dst, "no TLS client hello in time");
            return;
        }
    };
    let mut seen = TlsSeen {
        sni: start.client_hello().server_name().map(str::to_owned),
        ..TlsSeen::default()
    };
    let session = ctx.session_key();
    let open = open(&fetcher, &gateway, &session, original_dst, &mut seen);
    let opened = match tokio::time::timeout_at(deadline, open).await {
        Ok(opened) => opened,
        Err(_) => Err(Outcome::failed(
            "fetch_timeout",
            "upstream not reached in time",
        )),
    };
    let config = match shown(client, &gateway, &opened, &seen, original_dst) {
        Ok(config) => config,
        Err(error) => {
            report::tls_refused(&ctx, &fetcher, original_dst, seen, error);
            return;
        }
    };
    let handshake = start.into_stream(config);
    let stream = match tokio::time::timeout(fetcher.connect_timeout, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            let error = format!("the client's TLS handshake: {error}");
            report::tls_refused(&ctx, &fetcher, original_dst, seen, error);
            return;
        }
        Err(_) => {
            let error = "the client's TLS handshake timed out".to_owned();
            report::tls_refused(&ctx, &fetcher, original_dst, seen, error);
            return;
        }
    };
    let how = Upstream::Opened(opened);
    serve_with(
        stream,
        original_dst,
        &ctx,
        &session,
        &fetcher,
        how,
        Some(seen),
        deadline,
    )
    .await;
}

/// Admits the fetch and connects upstream, noting its certificate in `seen`.
async fn open<'a>(
    fetcher: &'a Fetcher,
    gateway: &TlsGateway,
    session: &str,
    original_dst: SocketAddr,
    seen: &mut TlsSeen,
) -> Result<Opened<'a>, Outcome> {
    let admitted = admit(fetcher, session, original_dst).await?;
    let connect = upstream::connect_tls(gateway, original_dst, fetcher.connect_timeout, seen);
    match connect.await {
        Ok(io) => Ok(Opened { io, admitted }),
        Err((reason, error)) => Err(Outcome::failed(reason, error)),
    }
}

/// The configuration whose certificate the client is shown: the mirror of
/// upstream's where a real server's would not be trusted by it, otherwise a leaf
/// of the sensor's CA (also when upstream was not reached: the request is still
/// read, for its URL).
fn shown(
    client: TlsClient,
    gateway: &TlsGateway,
    opened: &Result<Opened<'_>, Outcome>,
    seen: &TlsSeen,
    original_dst: SocketAddr,
) -> Result<Arc<ServerConfig>, String> {
    // Mirrored, and whether by the sensor's CA (the box trusts it, and then fails
    // on the original's own name or dates).
    let mirrored = match (client, &seen.verdict) {
        (TlsClient::Forward, _) => Some(false),
        (TlsClient::Box, Some(Verdict::Invalid(_))) => Some(true),
        (TlsClient::Box, Some(Verdict::Untrusted(_))) => Some(false),
        (TlsClient::Box, Some(Verdict::Verified) | None) => None,
    };
    if let (Ok(_), Some(by_ca), Some(original)) = (opened, mirrored, seen.chain.first()) {
        return gateway
            .mirror_config(original, by_ca, seen.sni.as_deref(), original_dst.ip())
            .map_err(|error| error.to_string());
    }
    gateway
        .server_config(seen.sni.as_deref(), original_dst.ip())
        .map_err(|error| error.to_string())
}
