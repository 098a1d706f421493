//! One box connection to an HTTPS server: Hermes answers its TLS with a leaf the
//! sensor's CA minted for the name it sent, then serves the decrypted request as an
//! HTTP download, fetched upstream over TLS of its own.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;

use super::Fetcher;
use super::report;
use super::serve::serve_with;
use super::upstream::Upstream;
use crate::BoxContext;
use crate::tls::TlsGateway;

/// Serves one TLS connection of a box to `original_dst`. A box that sends no TLS
/// is closed silently; one that rejects the minted certificate (a client not
/// trusting the sensor's CA) is reported as a failed download of `https://<sni>/`.
pub async fn serve_tls<S>(
    stream: S,
    original_dst: SocketAddr,
    ctx: BoxContext,
    fetcher: Arc<Fetcher>,
    gateway: Arc<TlsGateway>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = match tokio::time::timeout(fetcher.connect_timeout, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(error)) => {
            tracing::debug!(target: "hermes::egress", upstream = %original_dst, %error, "no TLS client hello from the box");
            return;
        }
        Err(_) => {
            tracing::debug!(target: "hermes::egress", upstream = %original_dst, "no TLS client hello from the box in time");
            return;
        }
    };
    let sni = start.client_hello().server_name().map(str::to_owned);
    let config = match gateway.server_config(sni.as_deref(), original_dst.ip()) {
        Ok(config) => config,
        Err(error) => {
            report::tls_refused(&ctx, &fetcher, original_dst, sni, error.to_string());
            return;
        }
    };
    let handshake = start.into_stream(config);
    let stream = match tokio::time::timeout(fetcher.connect_timeout, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            let error = format!("the box's TLS handshake: {error}");
            report::tls_refused(&ctx, &fetcher, original_dst, sni, error);
            return;
        }
        Err(_) => {
            let error = "the box's TLS handshake timed out".to_owned();
            report::tls_refused(&ctx, &fetcher, original_dst, sni, error);
            return;
        }
    };
    let how = Upstream::Tls {
        config: gateway.upstream(),
        sni,
    };
    serve_with(stream, original_dst, ctx, fetcher, how).await;
}
