//! Clients the measurements drive: russh in-process (exact timings, thousands of
//! connections) and the real OpenSSH client (`ssh`, `scp`) logging in by password.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use russh::ChannelMsg;
use russh::client::{self, Handle, Msg};
use tokio::net::TcpSocket;

use crate::client::AcceptAnyKey;
use crate::target::Target;

pub type Connection = Handle<AcceptAnyKey>;

/// A TCP connection to `addr`, from `source` when given (a loopback alias).
pub async fn tcp(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// An SSH connection (key exchange done), not logged in.
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Option<Connection> {
    let stream = tcp(addr, source).await.ok()?;
    let config = Arc::new(client::Config {
        nodelay: true,
        ..Default::default()
    });
    client::connect_stream(config, stream, AcceptAnyKey)
        .await
        .ok()
}

/// A logged-in connection to `target`.
pub async fn login(target: &Target, source: Option<IpAddr>) -> Option<Connection> {
    let mut handle = connect(target.addr, source).await?;
    let result = handle
        .authenticate_password(target.user.clone(), target.password.clone())
        .await
        .ok()?;
    result.success().then_some(handle)
}

/// A channel's output as it arrives, keeping only a bounded tail (100 MB through a
/// terminal must not pile up in the client).
pub struct Stream {
    pub channel: russh::Channel<Msg>,
    pub bytes: u64,
    tail: Vec<u8>,
    pub closed: bool,
}

const TAIL: usize = 4096;

impl Stream {
    pub fn new(channel: russh::Channel<Msg>) -> Stream {
        Stream {
            channel,
            bytes: 0,
            tail: Vec::new(),
            closed: false,
        }
    }

    /// Opens a session channel with a terminal and a shell.
    pub async fn shell(connection: &Connection) -> Option<Stream> {
        let channel = connection.channel_open_session().await.ok()?;
        channel
            .request_pty(true, "xterm", 80, 24, 0, 0, &[])
            .await
            .ok()?;
        channel.request_shell(true).await.ok()?;
        Some(Stream::new(channel))
    }

    /// Runs `command` without a terminal and waits for its channel to close.
    pub async fn exec_to_end(connection: &Connection, command: &str, timeout: Duration) -> bool {
        let Ok(channel) = connection.channel_open_session().await else {
            return false;
        };
        if channel.exec(true, command).await.is_err() {
            return false;
        }
        let mut stream = Stream::new(channel);
        stream.read_until(|_| false, timeout).await;
        stream.closed
    }

    pub async fn send(&self, bytes: &[u8]) -> bool {
        self.channel.data(bytes).await.is_ok()
    }

    /// Reads until `done(tail)` holds, the channel closes or the timeout passes.
    pub async fn read_until(&mut self, done: impl Fn(&[u8]) -> bool, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done(&self.tail) {
                return true;
            }
            if self.closed {
                return false;
            }
            match tokio::time::timeout_at(deadline, self.channel.wait()).await {
                Err(_) => return false,
                Ok(Some(ChannelMsg::Data { data }))
                | Ok(Some(ChannelMsg::ExtendedData { data, .. })) => self.absorb(&data),
                Ok(Some(ChannelMsg::Close)) | Ok(None) => self.closed = true,
                Ok(Some(_)) => {}
            }
        }
    }

    fn absorb(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.tail.extend_from_slice(data);
        if self.tail.len() > TAIL * 2 {
            self.tail.drain(..self.tail.len() - TAIL);
        }
    }

    /// The last bytes received (at most 8 KiB).
    pub fn tail(&self) -> &[u8] {
        &self.tail
    }

    /// Forgets the tail (so a later search only sees what comes next).
    pub fn clear(&mut self) {
        self.tail.clear();
    }
}

/// Whether a terminal's output ends at a shell prompt (`# ` or `$ `).
pub fn at_prompt(tail: &[u8]) -> bool {
    tail.ends_with(b"# ") || tail.ends_with(b"$ ")
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The OpenSSH client logging in to `target` by password (answered through
/// SSH_ASKPASS), quiet, without host key checks.
pub struct OpenSsh {
    askpass: PathBuf,
}

impl OpenSsh {
    pub fn new(dir: &Path) -> OpenSsh {
        use std::os::unix::fs::PermissionsExt;
        let askpass = dir.join("askpass.sh");
        let _ = std::fs::write(&askpass, "#!/bin/sh\nprintf '%s\\n' \"$BENCH_PASSWORD\"\n");
        let _ = std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700));
        OpenSsh { askpass }
    }

    /// `program` (`ssh` or `scp`) with the options for `target`.
    pub fn command(&self, program: &str, target: &Target) -> Command {
        let mut command = Command::new(program);
        command
            .args(["-F", "/dev/null"])
            .args(["-o", &format!("Port={}", target.addr.port())])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "LogLevel=ERROR"])
            .args(["-o", "PreferredAuthentications=password"])
            .args(["-o", "PubkeyAuthentication=no"])
            .args(["-o", "NumberOfPasswordPrompts=1"])
            .env("SSH_ASKPASS", &self.askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("BENCH_PASSWORD", &target.password)
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null());
        command
    }

    /// `user@host` of `target` for the command line.
    pub fn destination(target: &Target) -> String {
        match target.addr.ip() {
            IpAddr::V6(ip) => format!("{}@[{ip}]", target.user),
            IpAddr::V4(ip) => format!("{}@{ip}", target.user),
        }
    }
}
