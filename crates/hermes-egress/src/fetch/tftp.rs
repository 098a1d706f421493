//! A box's TFTP read request fetched upstream like a download: the SSRF policy,
//! the session's and the sensor's budget, Hermes's own client, the store, the event.

use std::net::SocketAddr;
use std::time::Duration;

use hermes_core::capture::StoreError;
use hermes_core::escape::escape_untrusted;

use super::Fetcher;
use super::report;
use crate::BoxContext;
use crate::tftp::wire::ErrorCode;
use crate::tftp::{ClientError, ClientLimits, client};

/// Retransmissions of one packet to a silent TFTP server.
const RETRIES: u32 = 3;
/// The longest wait for one packet of the server (TFTP servers answer at once).
const PACKET_TIMEOUT: Duration = Duration::from_secs(2);

/// What the box is told when nothing was fetched: a TFTP ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TftpRefusal {
    /// The ERROR packet's code.
    pub code: ErrorCode,
    /// Its message.
    pub message: &'static str,
}

const NOT_FOUND: TftpRefusal = TftpRefusal {
    code: ErrorCode::NotFound,
    message: "File not found",
};
const TIMEOUT: TftpRefusal = TftpRefusal {
    code: ErrorCode::Undefined,
    message: "Timeout",
};

/// The URL a TFTP fetch is reported under.
pub fn tftp_url(server: SocketAddr, file: &[u8]) -> String {
    let host = match server.ip() {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let file = String::from_utf8_lossy(file);
    let file = file.trim_start_matches('/');
    match server.port() {
        69 => format!("tftp://{host}/{file}"),
        port => format!("tftp://{host}:{port}/{file}"),
    }
}

/// Fetches `file` from `server` for the box of `ctx`; the bytes, stored and
/// reported, or the ERROR to answer with (the failure reported).
pub async fn fetch_tftp(
    ctx: &BoxContext,
    fetcher: &Fetcher,
    server: SocketAddr,
    file: &[u8],
) -> Result<Vec<u8>, TftpRefusal> {
    let session = ctx.session_key();
    let url = tftp_url(server, file);
    let fail = |reason: &'static str, error: String, upstream_bytes: u64, answer: TftpRefusal| {
        report::failed(
            ctx,
            fetcher,
            &session,
            &url,
            server,
            reason,
            error,
            upstream_bytes,
            &[],
        );
        Err(answer)
    };
    if let Err(refusal) = fetcher.policy.check(server) {
        let error = format!("upstream {server} refused ({})", refusal.as_str());
        return fail(refusal.as_str(), error, 0, TIMEOUT);
    }
    if let Err(limit) = fetcher.budget.admit(&session) {
        let error = format!("{} reached", limit.as_str());
        return fail(limit.as_str(), error, 0, TIMEOUT);
    }
    let Ok(_permit) = fetcher.permits.acquire().await else {
        return fail(
            "fetch_timeout",
            "the gateway is shutting down".into(),
            0,
            TIMEOUT,
        );
    };
    let _in_flight = fetcher.enter();
    let limits = ClientLimits {
        max_size: fetcher.download_size,
        packet_timeout: PACKET_TIMEOUT.min(fetcher.fetch_timeout),
        retries: RETRIES,
        total_timeout: fetcher.fetch_timeout,
    };
    let body = match client::fetch(server, file, limits).await {
        Ok(body) => body,
        Err(error) => {
            let (reason, answer) = match &error {
                ClientError::Io(_) | ClientError::NoAnswer => ("connect_failed", TIMEOUT),
                ClientError::Deadline => ("fetch_timeout", TIMEOUT),
                ClientError::TooLarge(_) => (
                    "download_size",
                    TftpRefusal {
                        code: ErrorCode::DiskFull,
                        message: "File too large",
                    },
                ),
                ClientError::Server { .. } => ("tftp_error", NOT_FOUND),
                ClientError::Protocol(_) => ("bad_response", TIMEOUT),
            };
            return fail(reason, error.to_string(), 0, answer);
        }
    };
    let size = body.len() as u64;
    let (granted, limit) = fetcher.budget.take(&session, size);
    if let Some(limit) = limit.filter(|_| granted < size) {
        let error = format!("{} reached", limit.as_str());
        return fail(limit.as_str(), error, granted, TIMEOUT);
    }
    let store = std::sync::Arc::clone(&fetcher.store);
    let to_store = body.clone();
    let stored = match tokio::task::spawn_blocking(move || store.put(&to_store)).await {
        Ok(Ok(stored)) => stored,
        Ok(Err(error @ StoreError::Full { .. })) => {
            return fail("store_full", error.to_string(), size, TIMEOUT);
        }
        Ok(Err(error)) => return fail("store_error", error.to_string(), size, TIMEOUT),
        Err(error) => return fail("store_error", error.to_string(), size, TIMEOUT),
    };
    let outfile = stored.path.display().to_string();
    let destfile = ctx.emit_download(&url, |event| {
        event
            .field("outfile", outfile.as_str())
            .field("shasum", stored.sha256.as_str())
            .field("size", size)
            .field("duplicate", stored.duplicate)
            .field("upstream", server.to_string())
            .field("upstream_bytes", size)
            .message(format!(
                "Downloaded URL ({}) with SHA-256 {} to {outfile}",
                escape_untrusted(&url),
                stored.sha256,
            ))
    });
    let destfile = destfile
        .as_deref()
        .map(escape_untrusted)
        .unwrap_or_default();
    tracing::info!(target: "hermes::egress", url = %escape_untrusted(&url), %destfile, upstream = %server, sha256 = %stored.sha256, size, "TFTP download fetched");
    Ok(body)
}
