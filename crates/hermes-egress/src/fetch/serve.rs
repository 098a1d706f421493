//! One box connection to a web server: read its request, decide, fetch, relay, keep.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::SemaphorePermit;
use tokio::time::Instant;

use super::report::{self, Outcome};
use super::request::{RequestError, read_request};
use super::response::ResponseReader;
use super::upstream::{self, TlsSeen, Upstream};
use super::{Fetcher, InFlight};
use crate::BoxContext;

/// Bytes read from upstream at a time.
const READ_SIZE: usize = 16 * 1024;
/// How long closing the box's connection may take.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What a fetch got so far; kept outside the fetch so a timeout still reports it.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// The URL the box asked for.
    pub url: Option<String>,
    /// Bytes received from upstream.
    pub upstream_bytes: u64,
    /// The response being read.
    pub response: Option<ResponseReader>,
    /// For HTTPS: the box's SNI and upstream's certificate.
    pub tls: Option<TlsSeen>,
}

/// Serves one HTTP connection of a box to `original_dst` (the address it connected
/// to, which our DNS gave it). A fetch that is refused or fails closes the box's
/// connection without an answer, as a server that failed would (curl: "Empty reply
/// from server", wget: "No data received"); a 502 page would be a proxy's tell. A
/// fetched response is relayed as it comes; a cut one ends early (curl: "partial
/// file").
pub async fn serve_http<S>(
    stream: S,
    original_dst: SocketAddr,
    ctx: BoxContext,
    fetcher: Arc<Fetcher>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let deadline = Instant::now() + fetcher.fetch_timeout;
    let session = ctx.session_key();
    let fetcher = &*fetcher;
    serve_with(
        stream,
        original_dst,
        &ctx,
        &session,
        fetcher,
        Upstream::Plain,
        None,
        deadline,
    )
    .await;
}

/// A fetch let through: its permit of `egress.limits.concurrent_fetches`, and its
/// place in the count of those under way.
pub(super) struct Admitted<'a> {
    _permit: SemaphorePermit<'a>,
    _in_flight: InFlight<'a>,
}

/// Lets a fetch of `session` to `original_dst` go upstream, or says why not: the
/// SSRF policy, then the session's and the sensor's budget, then a permit.
pub(super) async fn admit<'a>(
    fetcher: &'a Fetcher,
    session: &str,
    original_dst: SocketAddr,
) -> Result<Admitted<'a>, Outcome> {
    if let Err(refusal) = fetcher.policy.check(original_dst) {
        return Err(Outcome::failed(
            refusal.as_str(),
            format!("upstream {original_dst} refused ({})", refusal.as_str()),
        ));
    }
    if let Err(limit) = fetcher.budget.admit(session) {
        return Err(Outcome::failed(
            limit.as_str(),
            format!("{} reached", limit.as_str()),
        ));
    }
    let Ok(permit) = fetcher.permits.acquire().await else {
        return Err(Outcome::failed(
            "fetch_timeout",
            "the gateway is shutting down",
        ));
    };
    Ok(Admitted {
        _permit: permit,
        _in_flight: fetcher.enter(),
    })
}

/// [`serve_http`], reaching upstream as `how` says (for HTTPS, `tls` is what its
/// handshakes saw), all done by `deadline`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve_with<S>(
    mut stream: S,
    original_dst: SocketAddr,
    ctx: &BoxContext,
    session: &str,
    fetcher: &Fetcher,
    how: Upstream<'_>,
    tls: Option<TlsSeen>,
    deadline: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut progress = Progress {
        tls,
        ..Progress::default()
    };
    let run = fetch(
        &mut stream,
        original_dst,
        session,
        fetcher,
        &mut progress,
        how,
    );
    let outcome = match tokio::time::timeout_at(deadline, run).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Cut("fetch_timeout"),
    };
    // A close, not an answer; bounded, as a TLS close waits for the box to read.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, stream.shutdown()).await;
    drop(stream);
    report::finish(outcome, progress, original_dst, session, ctx, fetcher).await;
}

async fn fetch<S>(
    stream: &mut S,
    original_dst: SocketAddr,
    session: &str,
    fetcher: &Fetcher,
    progress: &mut Progress,
    how: Upstream<'_>,
) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // A connection already open upstream (HTTPS) holds a permit: its request must
    // come as promptly as a connect would (a box stalling there would starve the
    // others), not within the whole fetch's time.
    let wait = match how {
        Upstream::Plain => fetcher.fetch_timeout,
        Upstream::Opened(_) => fetcher.connect_timeout,
    };
    let request = match tokio::time::timeout(wait, read_request(stream)).await {
        Ok(Ok(request)) => request,
        Ok(Err(RequestError::Incomplete(0))) => return Outcome::Nothing,
        Ok(Err(error)) => return Outcome::failed("bad_request", error),
        Err(_) => return Outcome::failed("fetch_timeout", "no request in time"),
    };
    progress.url = Some(match how {
        Upstream::Plain => request.url(original_dst),
        Upstream::Opened(_) => request.https_url(original_dst),
    });
    let (mut upstream, _admitted) = match how {
        Upstream::Opened(Ok(opened)) => (opened.io, opened.admitted),
        Upstream::Opened(Err(outcome)) => return outcome,
        Upstream::Plain => {
            let admitted = match admit(fetcher, session, original_dst).await {
                Ok(admitted) => admitted,
                Err(outcome) => return outcome,
            };
            match upstream::connect_plain(original_dst, fetcher.connect_timeout).await {
                Ok(io) => (io, admitted),
                Err((reason, error)) => return Outcome::failed(reason, error),
            }
        }
    };
    // The head, then the body: what came with the head, the rest from the box.
    let body_start = request.rest.len().min(request.body_length as usize);
    let sent = async {
        upstream
            .write_all(&request.upstream_head(original_dst))
            .await?;
        upstream.write_all(&request.rest[..body_start]).await?;
        let mut body = (&mut *stream).take(request.body_length - body_start as u64);
        tokio::io::copy(&mut body, &mut upstream).await?;
        upstream.flush().await
    };
    if let Err(error) = sent.await {
        return Outcome::failed("connect_failed", format!("sending the request: {error}"));
    }
    let head_only = request.method.eq_ignore_ascii_case("HEAD");
    relay(stream, &mut upstream, session, fetcher, progress, head_only).await
}

/// Streams the response to the box, keeping its body, until it ends or a limit
/// cuts it.
async fn relay<S, U>(
    stream: &mut S,
    upstream: &mut U,
    session: &str,
    fetcher: &Fetcher,
    progress: &mut Progress,
    head_only: bool,
) -> Outcome
where
    S: AsyncWrite + Unpin,
    U: AsyncRead + Unpin + ?Sized,
{
    let response = progress
        .response
        .insert(ResponseReader::new(fetcher.download_size, head_only));
    let mut buffer = vec![0u8; READ_SIZE];
    loop {
        let read = match upstream.read(&mut buffer).await {
            Ok(0) => {
                return match response.close() {
                    Ok(()) => Outcome::Complete,
                    Err(_) if response.status.is_some() => Outcome::Cut("incomplete"),
                    Err(error) => Outcome::failed("bad_response", error),
                };
            }
            Ok(read) => read,
            Err(error) => return Outcome::failed("bad_response", error),
        };
        let (granted, limit) = fetcher.budget.take(session, read as u64);
        let granted = granted as usize;
        progress.upstream_bytes += granted as u64;
        let fed = match response.feed(&buffer[..granted]) {
            Ok(fed) => fed,
            Err(error) => return Outcome::failed("bad_response", error),
        };
        if stream.write_all(&buffer[..fed.consumed]).await.is_err() {
            return Outcome::Cut("client_closed");
        }
        if fed.limit_reached {
            return Outcome::Cut("download_size");
        }
        if fed.done {
            return Outcome::Complete;
        }
        if let Some(limit) = limit {
            return Outcome::Cut(limit.as_str());
        }
    }
}
