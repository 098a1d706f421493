//! The box's own sshd as each session's server. Hermes stays the SSH server the
//! attacker talks to and becomes a client of the OpenSSH inside the box, which then
//! runs every channel as it runs one on a real server: privilege separation, PAM,
//! utmp/wtmp/lastlog, loginuid, auth.log, `SSH_CONNECTION`. The connection comes from
//! the attacker's own address (see [`crate::boxnet::BoxDialer`]), so `ss`, `who` and
//! `last` in the box name the attacker.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::sandbox::{Process, SandboxError, TtySize};

/// The login Hermes makes to a box's sshd for one attacker's session.
#[derive(Clone)]
pub struct BoxLogin {
    /// The box (its engine id).
    pub container_id: String,
    /// The account in the box.
    pub account: String,
    /// The password the attacker logged in with, which the box's account has too.
    pub password: String,
    /// The attacker's address: the connection comes from it where the box's network
    /// can carry it (see [`crate::boxnet::BoxDialer`]).
    pub source: SocketAddr,
}

impl std::fmt::Debug for BoxLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoxLogin")
            .field("container_id", &self.container_id)
            .field("account", &self.account)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// What one session channel asks the box's sshd to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoxProgram {
    /// The account's login shell.
    Shell,
    /// A command, as the client sent it.
    Exec(String),
    /// A subsystem by name (`sftp`).
    Subsystem(String),
}

/// A session channel as the client set it up, replayed to the box's sshd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxChannel {
    /// What it runs.
    pub program: BoxProgram,
    /// Terminal type and size, when the client asked for a terminal.
    pub pty: Option<(String, TtySize)>,
    /// Accepted `env` requests.
    pub env: Vec<(String, String)>,
    /// An accepted `x11-req`: protocol, cookie, screen.
    pub x11: Option<(String, String, u32)>,
    /// An accepted agent forwarding request.
    pub agent: bool,
}

/// Why a login to the box's sshd failed: each is a stage the session reports.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BoxSshdError {
    /// Nothing answered on the box's SSH port, or the connection broke.
    #[error("cannot reach the box's sshd: {0}")]
    Unreachable(String),
    /// Something answered that is not an SSH server we could talk to.
    #[error("the box's sshd: {0}")]
    Protocol(String),
    /// The box's sshd refused the account's password.
    #[error("the box's sshd refused the login of {0}")]
    Refused(String),
    /// The channel could not be opened or its request was refused.
    #[error("the box's sshd refused the channel: {0}")]
    Channel(String),
}

impl From<BoxSshdError> for SandboxError {
    fn from(error: BoxSshdError) -> Self {
        SandboxError::Engine(error.to_string())
    }
}

/// Logs in to boxes' sshd. Implemented by the SSH adapter.
#[async_trait]
pub trait BoxSshd: Send + Sync {
    /// Connects to the sshd of box `container_id` from the attacker's address
    /// `source` (key exchange done), not logged in yet: this part needs no password,
    /// so it runs while the box's account is being set, or while the attacker is
    /// still logging in.
    async fn connect(
        &self,
        container_id: &str,
        source: SocketAddr,
    ) -> Result<Box<dyn BoxConnecting>, BoxSshdError>;

    /// Connects to the box's sshd and logs in as `login` says.
    async fn login(&self, login: &BoxLogin) -> Result<Arc<dyn BoxSession>, BoxSshdError> {
        self.connect(&login.container_id, login.source)
            .await?
            .authenticate(login)
            .await
    }
}

/// A connection to a box's sshd before its login.
#[async_trait]
pub trait BoxConnecting: Send {
    /// Logs in with `login`'s account and password.
    async fn authenticate(
        self: Box<Self>,
        login: &BoxLogin,
    ) -> Result<Arc<dyn BoxSession>, BoxSshdError>;
}

/// One logged-in connection to a box's sshd: the attacker's session there.
#[async_trait]
pub trait BoxSession: Send + Sync {
    /// Opens a session channel and starts what it asks for.
    async fn open(&self, channel: BoxChannel) -> Result<Process, BoxSshdError>;
    /// Ends the connection (sshd closes its session: logout records, auth.log).
    async fn close(&self);
}

/// A taken terminal or pipe, read as a stream or at once.
pub trait TakenRead: AsyncRead + Send + Unpin {
    /// Reads what is there now without waiting for it (`WouldBlock` when nothing
    /// is; 0 at its end). sshd reads a terminal so once its shell has exited, and
    /// ends the channel when nothing more is there, even while a process the shell
    /// left behind still holds the terminal.
    fn read_now(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
}

/// What carries one channel's program's input and output once Hermes holds the
/// descriptors the box's sshd holds for it (see [`ChannelTakeover`]).
pub struct TakenChannel {
    /// The terminal (its master side), or the program's stdout.
    pub output: Box<dyn TakenRead>,
    /// The program's stderr; None on a terminal.
    pub errors: Option<Box<dyn TakenRead>>,
    /// The program's input: the terminal again, or its stdin (None when sshd had
    /// already closed it: the program ended before it was taken).
    pub input: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Whether `output` is a terminal.
    pub terminal: bool,
    /// Its descriptors' keys in the connection's [`Taken`], while it lives.
    pub claim: Claim,
}

impl std::fmt::Debug for TakenChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TakenChannel")
            .field("terminal", &self.terminal)
            .finish_non_exhaustive()
    }
}

/// What the live channels of one connection to a box's sshd hold (keys of their
/// terminals and pipes), so that the next channel's are told apart from them. A
/// channel's keys go with its [`Claim`]: a terminal's number is given again once
/// its channel has ended.
#[derive(Debug, Default, Clone)]
pub struct Taken(Arc<std::sync::Mutex<std::collections::HashSet<u64>>>);

impl Taken {
    fn held(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<u64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keys the live channels hold.
    pub fn keys(&self) -> std::collections::HashSet<u64> {
        self.held().clone()
    }

    /// Holds `keys` for a channel until the claim is dropped.
    pub fn claim(&self, keys: Vec<u64>) -> Claim {
        self.held().extend(keys.iter().copied());
        Claim {
            taken: self.clone(),
            keys,
        }
    }
}

/// One channel's keys in its connection's [`Taken`], released when dropped.
#[derive(Debug)]
pub struct Claim {
    taken: Taken,
    keys: Vec<u64>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut held = self.taken.held();
        for key in &self.keys {
            held.remove(key);
        }
    }
}

/// Takes the descriptors the box's sshd holds for a channel's program (its terminal,
/// or the pipes to its stdin, stdout and stderr), so that the program's input and
/// output go between Hermes and the box through the kernel alone. sshd stays the
/// program's parent and does everything else a real session does (PAM, utmp,
/// exit status, signals, window changes); the connection gives each channel a window
/// of zero, so sshd never reads the program's output itself. Implemented by the
/// sandbox where Hermes sees the box's processes.
#[async_trait]
pub trait ChannelTakeover: Send + Sync {
    /// Whether this host lets Hermes take descriptors from `container_id`'s
    /// processes. Asked before the connection is made: its window depends on it.
    async fn available(&self, container_id: &str) -> bool;

    /// Takes the descriptors of the channel just started on the connection from
    /// `client` (the address the box sees it from) to the box's sshd on `port`:
    /// a terminal when `terminal`, else pipes. `taken` holds what the connection's
    /// live channels took; the new channel's claim joins it.
    async fn take(
        &self,
        container_id: &str,
        client: SocketAddr,
        port: u16,
        terminal: bool,
        taken: &Taken,
    ) -> Result<TakenChannel, BoxSshdError>;
}
