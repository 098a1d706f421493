//! The box's own sshd as each session's server. Hermes stays the SSH server the
//! attacker talks to and becomes a client of the OpenSSH inside the box, which then
//! runs every channel as it runs one on a real server: privilege separation, PAM,
//! utmp/wtmp/lastlog, loginuid, auth.log, `SSH_CONNECTION`. The connection comes from
//! the attacker's own address (see [`crate::boxnet::BoxDialer`]), so `ss`, `who` and
//! `last` in the box name the attacker.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;

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
    /// Connects to the box's sshd (key exchange done), not logged in yet: this part
    /// needs no password, so it runs while the box's account is being set.
    async fn connect(&self, login: &BoxLogin) -> Result<Box<dyn BoxConnecting>, BoxSshdError>;

    /// Connects to the box's sshd and logs in as `login` says.
    async fn login(&self, login: &BoxLogin) -> Result<Arc<dyn BoxSession>, BoxSshdError> {
        self.connect(login).await?.authenticate(login).await
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
