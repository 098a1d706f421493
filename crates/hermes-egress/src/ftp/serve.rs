//! The FTP server a box meets on port 21: Hermes answers as a plain Debian vsftpd
//! would, keeps the box's working directory and credentials itself, and fetches
//! each `RETR` upstream with those credentials. Passive mode only (`PORT` would
//! have Hermes connect into the box).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::ports::{DataPorts, Pending};
use super::wire::{self, CommandError, LineError, MAX_COMMAND_LINE};
use crate::BoxContext;
use crate::fetch::{
    FTP_FAILED, Fetcher, FtpRequest, FtpSize, FtpUpstream, fetch_ftp, ftp_refused, ftp_size,
    open_ftp,
};

/// What a Debian box's vsftpd greets with.
const GREETING: &str = "220 (vsFTPd 3.0.3)";
/// How long the box may stay silent between commands.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the box may stay silent while a fetch its SIZE opened waits for the
/// RETR (the fetch, and its permit, are let go after).
const HELD_UPSTREAM_WAIT: Duration = Duration::from_secs(10);
/// Commands one control connection may send.
const MAX_COMMANDS: usize = 200;
/// How long a reply to the box may take to write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The box's side of one control connection.
struct Session<'a> {
    ctx: &'a BoxContext,
    fetcher: &'a Fetcher,
    ports: &'a Arc<DataPorts>,
    server: SocketAddr,
    user: Option<String>,
    password: Option<String>,
    cwd: String,
    pending: Option<Pending>,
    /// The fetch a `SIZE` opened upstream, for the `RETR` that follows.
    upstream: Option<FtpUpstream<'a>>,
    /// The file a `SIZE` found missing (reported then; its `RETR` is not again).
    missing: Option<String>,
}

/// Serves one box connection to `server` port 21 until the box quits, idles out
/// or sends too much.
pub async fn serve_ftp<S>(
    stream: S,
    server: SocketAddr,
    ctx: BoxContext,
    fetcher: Arc<Fetcher>,
    ports: Arc<DataPorts>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Refused before a greeting: nothing is there, as far as the box can tell.
    if ftp_refused(&ctx, &fetcher, server) {
        return;
    }
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::new(reader);
    let mut session = Session {
        ctx: &ctx,
        fetcher: &fetcher,
        ports: &ports,
        server,
        user: None,
        password: None,
        cwd: "/".to_owned(),
        pending: None,
        upstream: None,
        missing: None,
    };
    if send(&mut writer, GREETING).await.is_err() {
        return;
    }
    for _ in 0..MAX_COMMANDS {
        // A fetch opened by SIZE holds a sensor-wide permit: a box that then stalls
        // gives it back soon, and may go on without it.
        let holding = session.upstream.is_some();
        let wait = if holding {
            HELD_UPSTREAM_WAIT
        } else {
            IDLE_TIMEOUT
        };
        let line = match tokio::time::timeout(wait, wire::read_line(&mut reader, MAX_COMMAND_LINE))
            .await
        {
            Ok(Ok(line)) => line,
            Ok(Err(LineError::TooLong(_))) => {
                let _ = send(&mut writer, "500 Input line too long.").await;
                break;
            }
            Ok(Err(_)) => break,
            Err(_) if holding => {
                session.upstream = None;
                continue;
            }
            Err(_) => {
                let _ = send(&mut writer, "421 Timeout.").await;
                break;
            }
        };
        let command = match wire::parse_command(&line) {
            Ok(command) => command,
            Err(CommandError::NoVerb | CommandError::ControlBytes) => {
                if send(&mut writer, "500 Unknown command.").await.is_err() {
                    break;
                }
                continue;
            }
        };
        match session.answer(&command, &mut writer).await {
            Some(reply) => {
                if send(&mut writer, &reply).await.is_err() {
                    break;
                }
            }
            None => break,
        }
        if command.verb == "QUIT" {
            break;
        }
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, writer.shutdown()).await;
}

async fn send<W: AsyncWrite + Unpin>(writer: &mut W, reply: &str) -> std::io::Result<()> {
    let line = format!("{reply}\r\n");
    match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(line.as_bytes())).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

impl<'a> Session<'a> {
    fn logged_in(&self) -> bool {
        self.password.is_some()
    }

    /// The reply to `command` (None: close the connection).
    async fn answer<W>(&mut self, command: &wire::Command, writer: &mut W) -> Option<String>
    where
        W: AsyncWrite + Unpin,
    {
        let arg = command.arg.as_str();
        // Only the commands of a download keep the fetch SIZE opened (and its permit).
        let on_the_way = matches!(
            command.verb.as_str(),
            "TYPE" | "PASV" | "EPSV" | "RETR" | "SIZE"
        );
        if !on_the_way || self.upstream.as_ref().is_some_and(FtpUpstream::expired) {
            self.upstream = None;
        }
        let reply = match command.verb.as_str() {
            "QUIT" => "221 Goodbye.".to_owned(),
            "USER" => {
                if self.logged_in() {
                    "530 Can't change to another user.".to_owned()
                } else {
                    self.user = Some(arg.to_owned());
                    "331 Please specify the password.".to_owned()
                }
            }
            "PASS" => match (&self.user, self.logged_in()) {
                (_, true) => "230 Already logged in.".to_owned(),
                (None, false) => "503 Login with USER first.".to_owned(),
                (Some(user), false) => {
                    tracing::debug!(target: "hermes::egress", user = %hermes_core::escape::escape_untrusted(user), server = %self.server, "a box logged in to FTP");
                    self.password = Some(arg.to_owned());
                    "230 Login successful.".to_owned()
                }
            },
            "FEAT" => "502 Command not implemented.".to_owned(),
            _ if !self.logged_in() => "530 Please login with USER and PASS.".to_owned(),
            "SYST" => "215 UNIX Type: L8".to_owned(),
            "NOOP" => "200 NOOP ok.".to_owned(),
            "TYPE" => match arg.to_ascii_uppercase().as_str() {
                "I" | "L 8" => "200 Switching to Binary mode.".to_owned(),
                "A" | "A N" => "200 Switching to ASCII mode.".to_owned(),
                _ => "500 Unrecognised TYPE command.".to_owned(),
            },
            "PWD" | "XPWD" => format!("257 \"{}\" is the current directory", self.cwd),
            "CWD" | "XCWD" => match wire::resolve(&self.cwd, arg) {
                Some(path) if !arg.is_empty() => {
                    self.cwd = path;
                    "250 Directory successfully changed.".to_owned()
                }
                _ => "550 Failed to change directory.".to_owned(),
            },
            "CDUP" | "XCUP" => {
                self.cwd = wire::resolve(&self.cwd, "..").unwrap_or_else(|| "/".to_owned());
                "250 Directory successfully changed.".to_owned()
            }
            "SIZE" => self.size(arg).await,
            "MDTM" => "502 Command not implemented.".to_owned(),
            "PASV" => match self.server.ip() {
                IpAddr::V4(ip) => match self.open_port().await {
                    Some(port) => wire::pasv_reply(ip, port),
                    None => "425 Could not listen for passive connection.".to_owned(),
                },
                IpAddr::V6(_) => "425 Could not listen for passive connection.".to_owned(),
            },
            "EPSV" if arg.eq_ignore_ascii_case("ALL") => "200 EPSV ALL ok.".to_owned(),
            "EPSV" => match self.open_port().await {
                Some(port) => wire::epsv_reply(port),
                None => "425 Could not listen for passive connection.".to_owned(),
            },
            "PORT" => "500 Illegal PORT command.".to_owned(),
            "EPRT" => "500 Bad EPRT command.".to_owned(),
            "RETR" => return self.retrieve(arg, writer).await,
            _ => "502 Command not implemented.".to_owned(),
        };
        Some(reply)
    }

    /// A new data port for the box (the previous one, if any, forgotten).
    async fn open_port(&mut self) -> Option<u16> {
        self.pending = None;
        let pending = self.ports.open(&self.ctx.container_id, self.server.ip())?;
        let pending = self
            .ports
            .open_in_firewall(&self.ctx.container_id, pending)
            .await?;
        let port = pending.port();
        self.pending = Some(pending);
        Some(port)
    }

    /// The fetch of `path` as the box named it (`arg`), with its login.
    fn request<'r>(&'r self, path: &'r str, arg: &'r str) -> FtpRequest<'r> {
        FtpRequest {
            server: self.server,
            user: self.user.as_deref().unwrap_or_default(),
            password: self.password.as_deref().unwrap_or_default(),
            path,
            name: arg,
        }
    }

    /// `SIZE`, asked upstream: the fetch it opens stays for the `RETR` that follows.
    async fn size(&mut self, arg: &str) -> String {
        const NO_SIZE: &str = "550 Could not get file size.";
        let Some(path) = wire::resolve(&self.cwd, arg).filter(|_| !arg.is_empty()) else {
            return NO_SIZE.to_owned();
        };
        let upstream = match self.upstream.take() {
            Some(upstream) => Some(upstream),
            None => open_ftp(self.ctx, self.fetcher, self.request(&path, arg)).await,
        };
        let Some(mut upstream) = upstream else {
            self.missing = Some(path);
            return NO_SIZE.to_owned();
        };
        let size = ftp_size(
            self.ctx,
            self.fetcher,
            &mut upstream,
            self.request(&path, arg),
        )
        .await;
        match size {
            FtpSize::Known(size) => {
                self.upstream = Some(upstream);
                format!("213 {size}")
            }
            FtpSize::Unknown => {
                self.upstream = Some(upstream);
                "502 Command not implemented.".to_owned()
            }
            FtpSize::Failed => {
                self.missing = Some(path);
                NO_SIZE.to_owned()
            }
        }
    }

    async fn retrieve<W>(&mut self, arg: &str, writer: &mut W) -> Option<String>
    where
        W: AsyncWrite + Unpin,
    {
        let Some(path) = wire::resolve(&self.cwd, arg).filter(|_| !arg.is_empty()) else {
            return Some(FTP_FAILED.to_owned());
        };
        if self.missing.as_deref() == Some(path.as_str()) {
            // Its `SIZE` failed, and was reported.
            self.pending = None;
            return Some(FTP_FAILED.to_owned());
        }
        let Some(mut pending) = self.pending.take() else {
            return Some("425 Use PORT or PASV first.".to_owned());
        };
        let Some(data) = pending.connection().await else {
            return Some("425 Failed to establish connection.".to_owned());
        };
        drop(pending);
        let upstream = self.upstream.take();
        let request = self.request(&path, arg);
        let reply = fetch_ftp(self.ctx, self.fetcher, request, upstream, writer, data).await;
        Some(reply.to_owned())
    }
}
