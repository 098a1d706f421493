//! The HTTP download gateway: a box's connection to a web server is answered by
//! Hermes, which fetches the request upstream (after the SSRF check, within limits),
//! streams the response back and keeps the body in the capture store.

mod budget;
mod ftp;
mod report;
mod request;
mod response;
mod serve;
mod tftp;
mod tls;
mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hermes_core::capture::FileStore;
use hermes_core::config::EgressConfig;
use tokio::sync::Semaphore;

pub use budget::Limit;
pub use ftp::{
    FTP_FAILED, FtpRequest, FtpSize, FtpUpstream, fetch_ftp, ftp_refused, ftp_size, open_ftp,
};
pub use request::{Request, RequestError, read_request};
pub use response::{ResponseError, ResponseReader};
pub use serve::serve_http;
pub use tftp::{TftpRefusal, fetch_tftp, tftp_url};
pub use tls::{TlsClient, serve_tls, serve_tls_for};

use crate::ssrf::UpstreamPolicy;

/// What every fetch of the sensor shares: the policy, the limits, the store.
#[derive(Debug)]
pub struct Fetcher {
    policy: UpstreamPolicy,
    store: Arc<FileStore>,
    download_size: usize,
    connect_timeout: Duration,
    fetch_timeout: Duration,
    budget: budget::Budget,
    permits: Semaphore,
    connects: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Fetcher {
    /// A fetcher with `config`'s limits.
    pub fn new(config: &EgressConfig, policy: UpstreamPolicy, store: Arc<FileStore>) -> Self {
        let limits = &config.limits;
        Fetcher {
            policy,
            store,
            download_size: limits.download_size.bytes_usize(),
            connect_timeout: limits.connect_timeout.get(),
            fetch_timeout: limits.fetch_timeout.get(),
            budget: budget::Budget::new(
                limits.fetches_per_session,
                limits.session_bytes.bytes(),
                limits.hourly_bytes.bytes(),
            ),
            permits: Semaphore::new(limits.concurrent_fetches as usize),
            connects: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    /// The SSRF policy.
    pub fn policy(&self) -> &UpstreamPolicy {
        &self.policy
    }

    /// Upstream connections attempted so far.
    pub fn upstream_connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// The most fetches that held an upstream connection at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::Relaxed)
    }

    /// Forgets the per-session counts of a session that ended.
    pub fn forget_session(&self, session: &str) {
        self.budget.forget(session);
    }

    /// Notes a fetch going upstream; the guard notes its end.
    fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.connects.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }
}

struct InFlight<'a>(&'a Fetcher);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod ftp_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tftp_tests;
#[cfg(test)]
pub(crate) mod tls_tests;
