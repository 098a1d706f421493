//! The end of a fetch: the body into the store, and the event that says what
//! happened (`cowrie.session.file_download` or `.failed`).

use std::net::SocketAddr;

use hermes_core::capture::StoreError;
use hermes_core::escape::escape_untrusted;
use hermes_core::events::{EventBuilder, EventId};

use super::Fetcher;
use super::serve::Progress;
use super::upstream::TlsSeen;
use crate::BoxContext;
use crate::tls::Verdict;

/// How a fetch ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// The box sent nothing at all: nothing to report.
    Nothing,
    /// The whole response came.
    Complete,
    /// A limit, a timeout or a close cut the response; what came is kept.
    Cut(&'static str),
    /// Nothing fetched: refused, or failed before a response.
    Failed { reason: &'static str, error: String },
}

impl Outcome {
    pub(super) fn failed(reason: &'static str, error: impl std::fmt::Display) -> Outcome {
        Outcome::Failed {
            reason,
            error: error.to_string(),
        }
    }
}

/// Stores what was fetched and emits the event.
pub(super) async fn finish(
    outcome: Outcome,
    progress: Progress,
    original_dst: SocketAddr,
    session: &str,
    ctx: &BoxContext,
    fetcher: &Fetcher,
) {
    let url = progress.url.unwrap_or_else(|| match &progress.tls {
        Some(tls) => tls_url(tls, original_dst),
        None => format!("http://{original_dst}/"),
    });
    let tls = progress.tls.as_ref();
    let failed = |reason: &'static str, error: String| Failure {
        reported: fetcher.budget.report_failure(session),
        url: &url,
        original_dst,
        upstream_bytes: progress.upstream_bytes,
        reason,
        error,
        tls,
        extra: &[],
    };
    let cut = match outcome {
        Outcome::Nothing => return,
        Outcome::Failed { reason, error } => return failed(reason, error).emit(ctx),
        Outcome::Complete => None,
        Outcome::Cut(reason) => Some(reason),
    };
    let Some(response) = progress.response else {
        let reason = cut.unwrap_or("bad_response");
        return failed(reason, format!("no response ({reason})")).emit(ctx);
    };
    match response.status {
        None => {
            let reason = cut.unwrap_or("bad_response");
            return failed(reason, format!("no response ({reason})")).emit(ctx);
        }
        Some(status) if !(200..300).contains(&status) => {
            let location = match &response.location {
                Some(location) => format!(", Location: {location}"),
                None => String::new(),
            };
            return failed("http_status", format!("HTTP {status}{location}")).emit(ctx);
        }
        Some(_) => {}
    }
    if let Some(reason) = cut
        && response.body.is_empty()
    {
        return failed(reason, format!("cut before any body ({reason})")).emit(ctx);
    }
    let body = response.body;
    let size = body.len() as u64;
    let store = std::sync::Arc::clone(&fetcher.store);
    let stored = match tokio::task::spawn_blocking(move || store.put(&body)).await {
        Ok(Ok(stored)) => stored,
        Ok(Err(error @ StoreError::Full { .. })) => {
            return failed("store_full", error.to_string()).emit(ctx);
        }
        Ok(Err(error)) => return failed("store_error", error.to_string()).emit(ctx),
        Err(error) => return failed("store_error", error.to_string()).emit(ctx),
    };
    let outfile = stored.path.display().to_string();
    let destfile = ctx.emit_download(&url, |event| {
        let event = event
            .field("outfile", outfile.as_str())
            .field("shasum", stored.sha256.as_str())
            .field("size", size)
            .field("duplicate", stored.duplicate)
            .field("upstream", original_dst.to_string())
            .field("upstream_bytes", progress.upstream_bytes)
            .message(format!(
                "Downloaded URL ({}) with SHA-256 {} to {outfile}{}",
                escape_untrusted(&url),
                stored.sha256,
                match cut {
                    Some(reason) => format!(" (cut: {reason})"),
                    None => String::new(),
                }
            ));
        let event = tls_fields(event, progress.tls.as_ref());
        match cut {
            Some(reason) => event.field("truncated", true).field("reason", reason),
            None => event,
        }
    });
    let destfile = destfile
        .as_deref()
        .map(escape_untrusted)
        .unwrap_or_default();
    tracing::info!(target: "hermes::egress", url = %escape_untrusted(&url), %destfile, upstream = %original_dst, sha256 = %stored.sha256, size, truncated = cut.is_some(), "download fetched");
}

/// A client whose TLS handshake with the gateway failed (a box not trusting the
/// sensor's CA, a client refusing the mirror of an upstream certificate that did not
/// verify, or one that gave up): nothing fetched, `https://<sni>/` reported with
/// what upstream showed.
pub(super) fn tls_refused(
    ctx: &BoxContext,
    fetcher: &Fetcher,
    original_dst: SocketAddr,
    tls: TlsSeen,
    error: String,
) {
    let session = ctx.session_key();
    let url = tls_url(&tls, original_dst);
    Failure {
        reported: fetcher.budget.report_failure(&session),
        url: &url,
        original_dst,
        upstream_bytes: 0,
        reason: "tls_handshake",
        error,
        tls: Some(&tls),
        extra: &[],
    }
    .emit(ctx);
}

/// `https://<sni>/` for an HTTPS fetch whose request is not known.
fn tls_url(tls: &TlsSeen, original_dst: SocketAddr) -> String {
    let host = match (&tls.sni, original_dst.ip()) {
        (Some(name), _) => name.clone(),
        (None, std::net::IpAddr::V6(address)) => format!("[{address}]"),
        (None, address) => address.to_string(),
    };
    match original_dst.port() {
        443 => format!("https://{host}/"),
        port => format!("https://{host}:{port}/"),
    }
}

/// A fetch outside HTTP (TFTP, FTP) that kept nothing; `extra` fields added.
#[allow(clippy::too_many_arguments)]
pub(super) fn failed(
    ctx: &BoxContext,
    fetcher: &Fetcher,
    session: &str,
    url: &str,
    original_dst: SocketAddr,
    reason: &'static str,
    error: String,
    upstream_bytes: u64,
    extra: &[(&'static str, String)],
) {
    Failure {
        reported: fetcher.budget.report_failure(session),
        url,
        original_dst,
        upstream_bytes,
        reason,
        error,
        tls: None,
        extra,
    }
    .emit(ctx);
}

/// What a fetch outside HTTP (FTP) kept, for [`kept`].
pub(super) struct Kept<'a> {
    /// The URL it is reported under.
    pub url: &'a str,
    /// The server.
    pub upstream: SocketAddr,
    /// Bytes received from it.
    pub upstream_bytes: u64,
    /// Why it was cut, if it was (what came before is kept).
    pub cut: Option<&'static str>,
    /// Fields of the protocol's own.
    pub extra: &'a [(&'static str, String)],
}

/// Stores `body` and reports it (or the store's failure).
pub(super) async fn kept(
    ctx: &BoxContext,
    fetcher: &Fetcher,
    session: &str,
    kept: Kept<'_>,
    body: Vec<u8>,
) {
    let size = body.len() as u64;
    let store = std::sync::Arc::clone(&fetcher.store);
    let fail = |reason: &'static str, error: String| {
        failed(
            ctx,
            fetcher,
            session,
            kept.url,
            kept.upstream,
            reason,
            error,
            kept.upstream_bytes,
            kept.extra,
        )
    };
    let stored = match tokio::task::spawn_blocking(move || store.put(&body)).await {
        Ok(Ok(stored)) => stored,
        Ok(Err(error @ StoreError::Full { .. })) => return fail("store_full", error.to_string()),
        Ok(Err(error)) => return fail("store_error", error.to_string()),
        Err(error) => return fail("store_error", error.to_string()),
    };
    let outfile = stored.path.display().to_string();
    let url = kept.url;
    let cut = kept.cut;
    let destfile = ctx.emit_download(url, |event| {
        let mut event = event
            .field("outfile", outfile.as_str())
            .field("shasum", stored.sha256.as_str())
            .field("size", size)
            .field("duplicate", stored.duplicate)
            .field("upstream", kept.upstream.to_string())
            .field("upstream_bytes", kept.upstream_bytes)
            .message(format!(
                "Downloaded URL ({}) with SHA-256 {} to {outfile}{}",
                escape_untrusted(url),
                stored.sha256,
                match cut {
                    Some(reason) => format!(" (cut: {reason})"),
                    None => String::new(),
                }
            ));
        for (name, value) in kept.extra {
            event = event.field(name, value.as_str());
        }
        match cut {
            Some(reason) => event.field("truncated", true).field("reason", reason),
            None => event,
        }
    });
    let destfile = destfile
        .as_deref()
        .map(escape_untrusted)
        .unwrap_or_default();
    tracing::info!(target: "hermes::egress", url = %escape_untrusted(url), %destfile, upstream = %kept.upstream, sha256 = %stored.sha256, size, truncated = cut.is_some(), "download fetched");
}

/// The SNI the box sent and the certificate upstream showed, when known.
fn tls_fields(event: EventBuilder, tls: Option<&TlsSeen>) -> EventBuilder {
    let Some(tls) = tls else {
        return event;
    };
    let event = match &tls.sni {
        Some(sni) => event.field("sni", sni.as_str()),
        None => event,
    };
    let event = match &tls.upstream_cert {
        Some(cert) => event
            .field("upstream_cert_subject", cert.subject.as_str())
            .field("upstream_cert_issuer", cert.issuer.as_str())
            .field("upstream_cert_sha256", cert.sha256.as_str())
            .field("upstream_cert_not_after", cert.not_after.as_str()),
        None => event,
    };
    match tls.verdict.as_ref().map(Verdict::error) {
        Some(None) => event.field("upstream_cert_verified", true),
        Some(Some(error)) => event
            .field("upstream_cert_verified", false)
            .field("upstream_cert_error", error),
        None => event,
    }
}

/// A fetch that kept nothing.
struct Failure<'a> {
    reported: bool,
    url: &'a str,
    original_dst: SocketAddr,
    upstream_bytes: u64,
    reason: &'static str,
    error: String,
    tls: Option<&'a TlsSeen>,
    extra: &'a [(&'static str, String)],
}

impl Failure<'_> {
    fn emit(self, ctx: &BoxContext) {
        let url = escape_untrusted(self.url);
        let error = escape_untrusted(&self.error);
        if !self.reported {
            tracing::debug!(target: "hermes::egress", %url, upstream = %self.original_dst, reason = self.reason, %error, "download failed (past the events reported per session)");
            return;
        }
        tracing::info!(target: "hermes::egress", %url, upstream = %self.original_dst, reason = self.reason, %error, "download failed");
        ctx.emit(EventId::FileDownloadFailed, |event| {
            let event = event
                .field("url", self.url)
                .field("error", self.error.as_str())
                .field("reason", self.reason)
                .field("upstream", self.original_dst.to_string())
                .message(format!("Failed to download URL ({url}): {error}"));
            let mut event = tls_fields(event, self.tls);
            for (name, value) in self.extra {
                event = event.field(name, value.as_str());
            }
            match self.upstream_bytes {
                0 => event,
                bytes => event.field("upstream_bytes", bytes),
            }
        });
    }
}
