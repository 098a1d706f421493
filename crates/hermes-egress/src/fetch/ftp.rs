//! A box's FTP `RETR` fetched upstream like a download: the SSRF policy, the
//! session's and the sensor's budget, Hermes's own FTP client logged in with the
//! box's credentials, the bytes streamed to the box's data connection and kept.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::SemaphorePermit;
use tokio::time::Instant;

use super::report::{self, Kept};
use super::{Fetcher, InFlight};
use crate::BoxContext;
use crate::ftp::client::{ClientError, ClientTimeouts, Control};
use crate::ftp::wire::ftp_url;

/// How long upstream may take for each reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from upstream at a time.
const READ_SIZE: usize = 16 * 1024;
/// How long closing the box's data connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The box's answer when nothing was fetched (vsftpd's words for a missing file).
pub const FTP_FAILED: &str = "550 Failed to open file.";
/// The box's answer after the whole file.
const FTP_DONE: &str = "226 Transfer complete.";
/// The box's answer when the transfer was cut.
const FTP_CUT: &str = "426 Failure writing network stream.";

/// What the box asked for.
#[derive(Debug, Clone, Copy)]
pub struct FtpRequest<'a> {
    /// The server the box connected to (the address our DNS gave it).
    pub server: SocketAddr,
    /// The box's `USER`.
    pub user: &'a str,
    /// The box's `PASS`.
    pub password: &'a str,
    /// The file, an absolute path.
    pub path: &'a str,
    /// The file as the box named it (for the `150` reply).
    pub name: &'a str,
}

impl FtpRequest<'_> {
    /// The credentials, as event fields: they are intelligence.
    fn login_fields(&self) -> [(&'static str, String); 2] {
        [
            ("ftp_user", self.user.to_owned()),
            ("ftp_password", self.password.to_owned()),
        ]
    }
}

enum Outcome {
    Complete,
    Cut(&'static str),
    Failed(&'static str, String),
}

/// What came so far; kept outside the transfer so a timeout still keeps it.
#[derive(Default)]
struct Progress {
    body: Vec<u8>,
    upstream_bytes: u64,
    /// The box was told `150`: a failure now is a `426`, not a `550`.
    started: bool,
}

/// A connection to port 21 refused by the SSRF policy, before any greeting.
pub fn ftp_refused(ctx: &BoxContext, fetcher: &Fetcher, server: SocketAddr) -> bool {
    let Err(refusal) = fetcher.policy.check(server) else {
        return false;
    };
    let session = ctx.session_key();
    let url = ftp_url(server, "/");
    let error = format!("upstream {server} refused ({})", refusal.as_str());
    report::failed(
        ctx,
        fetcher,
        &session,
        &url,
        server,
        refusal.as_str(),
        error,
        0,
        &[],
    );
    true
}

/// An FTP fetch open upstream: admitted by the budget, holding its permit, logged in
/// with the box's credentials; `SIZE` and then `RETR` use it, until its deadline.
pub struct FtpUpstream<'a> {
    control: Control,
    deadline: Instant,
    _permit: SemaphorePermit<'a>,
    _in_flight: InFlight<'a>,
}

impl FtpUpstream<'_> {
    /// Whether its `fetch_timeout` is over (it is dropped then; the box's next
    /// command opens another).
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

/// What upstream said to `SIZE`, for the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FtpSize {
    /// `213`: the size.
    Known(u64),
    /// The server has no `SIZE`.
    Unknown,
    /// No such file, or the fetch failed (reported).
    Failed,
}

fn client_failure(error: &ClientError) -> &'static str {
    match error {
        ClientError::Connect(..) => "connect_failed",
        ClientError::Timeout(_) => "fetch_timeout",
        ClientError::Login(_) => "ftp_login",
        ClientError::Refused(..) => "ftp_error",
        ClientError::DataRefused(_, reason) => reason,
        ClientError::Protocol(..) | ClientError::NoPassivePort(_) | ClientError::Send(..) => {
            "bad_response"
        }
    }
}

/// Reports a fetch of `request` that kept nothing.
fn report_failed(
    ctx: &BoxContext,
    fetcher: &Fetcher,
    request: FtpRequest<'_>,
    reason: &'static str,
    error: String,
    upstream_bytes: u64,
) {
    report::failed(
        ctx,
        fetcher,
        &ctx.session_key(),
        &ftp_url(request.server, request.path),
        request.server,
        reason,
        error,
        upstream_bytes,
        &request.login_fields(),
    );
}

/// Opens a fetch of `request` upstream (the SSRF policy, the budget, a permit, the
/// login); a failure is reported and None returned.
pub async fn open_ftp<'a>(
    ctx: &BoxContext,
    fetcher: &'a Fetcher,
    request: FtpRequest<'_>,
) -> Option<FtpUpstream<'a>> {
    let fail = |reason: &'static str, error: String| {
        report_failed(ctx, fetcher, request, reason, error, 0);
        None
    };
    if let Err(refusal) = fetcher.policy.check(request.server) {
        let error = format!("upstream {} refused ({})", request.server, refusal.as_str());
        return fail(refusal.as_str(), error);
    }
    let session = ctx.session_key();
    if let Err(limit) = fetcher.budget.admit(&session) {
        return fail(limit.as_str(), format!("{} reached", limit.as_str()));
    }
    let Ok(permit) = fetcher.permits.acquire().await else {
        return fail("fetch_timeout", "the gateway is shutting down".into());
    };
    let in_flight = fetcher.enter();
    let deadline = Instant::now() + fetcher.fetch_timeout;
    let timeouts = ClientTimeouts {
        connect: fetcher.connect_timeout,
        reply: REPLY_TIMEOUT,
    };
    let login = Control::login(request.server, request.user, request.password, timeouts);
    match tokio::time::timeout_at(deadline, login).await {
        Ok(Ok(control)) => Some(FtpUpstream {
            control,
            deadline,
            _permit: permit,
            _in_flight: in_flight,
        }),
        Ok(Err(error)) => fail(client_failure(&error), error.to_string()),
        Err(_) => fail("fetch_timeout", "no login in time".into()),
    }
}

/// Asks upstream the size of `request`'s file (for the box's `SIZE`); a missing file
/// or a failure is reported as the fetch of that file.
pub async fn ftp_size(
    ctx: &BoxContext,
    fetcher: &Fetcher,
    upstream: &mut FtpUpstream<'_>,
    request: FtpRequest<'_>,
) -> FtpSize {
    let asked = tokio::time::timeout_at(upstream.deadline, upstream.control.size(request.path));
    let (reason, error) = match asked.await {
        Ok(Ok(reply)) if reply.code == 213 => match reply.text.trim().parse() {
            Ok(size) => return FtpSize::Known(size),
            Err(_) => ("bad_response", format!("SIZE: {}", reply.summary())),
        },
        Ok(Ok(reply)) if reply.code == 550 => {
            ("ftp_error", format!("SIZE refused: {}", reply.summary()))
        }
        Ok(Ok(_)) => return FtpSize::Unknown,
        Ok(Err(error)) => (client_failure(&error), error.to_string()),
        Err(_) => ("fetch_timeout", "no answer to SIZE in time".into()),
    };
    report_failed(ctx, fetcher, request, reason, error, 0);
    FtpSize::Failed
}

/// Fetches `request` for the box of `ctx` on `upstream` (opened now when None):
/// `150` on the box's `control`, the bytes on its `data` connection (closed at the
/// end), stored and reported. Returns the final reply for the box.
pub async fn fetch_ftp<C, D>(
    ctx: &BoxContext,
    fetcher: &Fetcher,
    request: FtpRequest<'_>,
    upstream: Option<FtpUpstream<'_>>,
    control: &mut C,
    mut data: D,
) -> &'static str
where
    C: AsyncWrite + Unpin,
    D: AsyncWrite + Unpin,
{
    let upstream = match upstream {
        Some(upstream) => Some(upstream),
        None => open_ftp(ctx, fetcher, request).await,
    };
    let Some(mut upstream) = upstream else {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, data.shutdown()).await;
        return FTP_FAILED;
    };
    let session = ctx.session_key();
    let mut progress = Progress::default();
    let run = retrieve(
        fetcher,
        &session,
        request,
        &mut upstream.control,
        control,
        &mut data,
        &mut progress,
    );
    let outcome = match tokio::time::timeout_at(upstream.deadline, run).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(error)) => Outcome::Failed(client_failure(&error), error.to_string()),
        Err(_) => Outcome::Cut("fetch_timeout"),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, data.shutdown()).await;
    drop(data);
    upstream.control.quit().await;
    drop(upstream);
    let refused = if progress.started {
        FTP_CUT
    } else {
        FTP_FAILED
    };
    let fail = |reason: &'static str, error: String| {
        report_failed(
            ctx,
            fetcher,
            request,
            reason,
            error,
            progress.upstream_bytes,
        );
    };
    let (cut, reply) = match outcome {
        Outcome::Failed(reason, error) => {
            fail(reason, error);
            return refused;
        }
        Outcome::Cut(reason) if progress.body.is_empty() => {
            fail(reason, format!("cut before any data ({reason})"));
            return refused;
        }
        Outcome::Cut(reason) => (Some(reason), FTP_CUT),
        Outcome::Complete => (None, FTP_DONE),
    };
    let url = ftp_url(request.server, request.path);
    let extra = request.login_fields();
    let kept = Kept {
        url: &url,
        upstream: request.server,
        upstream_bytes: progress.upstream_bytes,
        cut,
        extra: &extra,
    };
    report::kept(ctx, fetcher, &session, kept, progress.body).await;
    reply
}

/// `RETR` on a logged-in control connection, relayed to the box.
async fn retrieve<C, D>(
    fetcher: &Fetcher,
    session: &str,
    request: FtpRequest<'_>,
    upstream: &mut Control,
    control: &mut C,
    data: &mut D,
    progress: &mut Progress,
) -> Result<Outcome, ClientError>
where
    C: AsyncWrite + Unpin,
    D: AsyncWrite + Unpin,
{
    // The data connection goes to the control connection's peer: checked again all
    // the same (its port is the server's choice, not one of `upstream_ports`).
    let check = |address: SocketAddr| {
        fetcher
            .policy
            .check_address(address.ip())
            .map_err(|refusal| refusal.as_str())
    };
    let mut upstream_data = upstream.open_data(check).await?;
    let size = upstream.retrieve(request.path).await?;
    let opening = match size {
        Some(size) => format!(
            "150 Opening BINARY mode data connection for {} ({size} bytes).\r\n",
            request.name
        ),
        None => format!(
            "150 Opening BINARY mode data connection for {}.\r\n",
            request.name
        ),
    };
    if control.write_all(opening.as_bytes()).await.is_err() {
        let error = "the box closed its control connection".into();
        return Ok(Outcome::Failed("client_closed", error));
    }
    progress.started = true;
    let outcome = relay(&mut upstream_data, data, session, fetcher, progress).await;
    drop(upstream_data);
    Ok(match outcome {
        Some(cut) => Outcome::Cut(cut),
        None => match upstream.finish().await {
            Ok(reply) if reply.is_complete() => Outcome::Complete,
            Ok(_) | Err(_) => Outcome::Cut("incomplete"),
        },
    })
}

/// Streams upstream's data to the box and keeps it; the reason it was cut, if it was.
async fn relay<U, D>(
    upstream: &mut U,
    data: &mut D,
    session: &str,
    fetcher: &Fetcher,
    progress: &mut Progress,
) -> Option<&'static str>
where
    U: AsyncRead + Unpin,
    D: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; READ_SIZE];
    loop {
        let read = match upstream.read(&mut buffer).await {
            Ok(0) => return None,
            Ok(read) => read,
            Err(_) => return Some("incomplete"),
        };
        let room = fetcher.download_size.saturating_sub(progress.body.len());
        let wanted = read.min(room);
        let (granted, limit) = fetcher.budget.take(session, wanted as u64);
        let granted = usize::try_from(granted).unwrap_or(wanted).min(wanted);
        progress.upstream_bytes += granted as u64;
        let chunk = &buffer[..granted];
        progress.body.extend_from_slice(chunk);
        if data.write_all(chunk).await.is_err() {
            return Some("client_closed");
        }
        if let Some(limit) = limit {
            return Some(limit.as_str());
        }
        if wanted < read {
            return Some("download_size");
        }
    }
}
