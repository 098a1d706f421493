//! What the core needs from a container engine, as small traits. The Docker adapter
//! (`hermes-sandbox`) implements them; tests or another engine could too.

use std::fmt;
use std::io;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncWrite;

use crate::ids::SessionId;

/// How a leased container came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseSource {
    /// Taken from the pre-warmed pool.
    Pool,
    /// Created for this session because the pool was empty.
    OnDemand,
    /// The source's earlier container, started again.
    Reused,
    /// The source's container, already running for another of its sessions.
    Shared,
}

impl LeaseSource {
    /// Name used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseSource::Pool => "pool",
            LeaseSource::OnDemand => "on_demand",
            LeaseSource::Reused => "reused",
            LeaseSource::Shared => "shared",
        }
    }
}

/// A container handed to one session until [`Sandbox::release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The engine's container id.
    pub container_id: String,
    /// Pool or on demand.
    pub source: LeaseSource,
}

impl Lease {
    /// The first 12 characters of the id, as `docker ps` shows it.
    pub fn short_id(&self) -> &str {
        self.container_id.get(..12).unwrap_or(&self.container_id)
    }
}

/// Terminal size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtySize {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
}

impl TtySize {
    /// The size a terminal falls back to when a client sends zeros.
    pub const DEFAULT: TtySize = TtySize {
        width: 80,
        height: 24,
    };

    /// Replaces zero (or absurd) dimensions: a 0x0 terminal breaks full-screen programs.
    pub fn sanitized(width: u32, height: u32) -> TtySize {
        let clamp = |value: u32, fallback: u32| {
            if value == 0 {
                fallback
            } else {
                value.min(10_000)
            }
        };
        TtySize {
            width: clamp(width, Self::DEFAULT.width),
            height: clamp(height, Self::DEFAULT.height),
        }
    }
}

/// A leased container's state, checked periodically while it is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerUsage {
    /// It still runs (it may die: out of memory, killed, engine restart).
    pub running: bool,
    /// Bytes its processes wrote to its own filesystem (writable layer).
    pub disk_bytes: u64,
}

/// A regular file that was created or changed in a container's own filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedFile {
    /// Absolute path in the container.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time as the engine reports it (to notice a file that changed
    /// again since it was last copied).
    pub modified: String,
}

/// A file's content as read from a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRead {
    /// The whole content.
    Content(Bytes),
    /// Larger than the limit given (its size).
    TooLarge(u64),
    /// Not a regular file, or no longer there.
    Unavailable,
}

/// A file found outside the container's own filesystem: in its `/dev/shm` (a tmpfs
/// the engine's diff does not see), or deleted but still open or running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolatileFile {
    /// Path in the container (for a deleted file, the path it had; `memfd:NAME` for
    /// an anonymous memory file).
    pub path: String,
    /// The content, or what stopped it from being read.
    pub content: FileRead,
}

/// A process to start in a leased container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Environment (`NAME`, `value`).
    pub env: Vec<(String, String)>,
    /// User to run as (name or uid).
    pub user: String,
    /// Working directory.
    pub workdir: String,
    /// A terminal of this size, or plain pipes when None.
    pub tty: Option<TtySize>,
    /// The input that turns a standby waiting in the container (see [`StandbySpec`])
    /// into this process; None when it must be started afresh.
    pub standby_input: Option<Vec<u8>>,
    /// It moves files (sftp-server, scp): the sandbox may carry its stdin and stdout
    /// outside the engine's stream, which is the slow part of a bulk transfer.
    pub file_transfer: bool,
}

/// A process a sandbox may start ahead in each ready container, so that a login with
/// a terminal is only a write to it ([`ProcessSpec::standby_input`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbySpec {
    /// The waiting process (on a terminal).
    pub process: ProcessSpec,
    /// What it prints once it is ready for its input (nothing written before that).
    pub ready: Vec<u8>,
    /// Input that makes an unused standby exit (before anything else runs there).
    pub cancel: Vec<u8>,
}

/// A piece of a process's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputChunk {
    /// Standard output (or the terminal).
    Stdout(Bytes),
    /// Standard error (never with a terminal).
    Stderr(Bytes),
}

/// Reads a running process's output.
#[async_trait]
pub trait ProcessOutput: Send {
    /// The next chunk, or None when the process closed its output.
    async fn next_chunk(&mut self) -> io::Result<Option<OutputChunk>>;
}

/// The shortest time between two resizes of one container's terminals: a flood of
/// window changes must not become a flood of engine calls.
pub const MIN_RESIZE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Controls a running process.
#[async_trait]
pub trait ProcessControl: Send + Sync {
    /// Resizes its terminal.
    async fn resize(&self, size: TtySize) -> Result<(), SandboxError>;
    /// Its exit status, once it has exited (None while running or unknown).
    async fn exit_status(&self) -> Result<Option<i64>, SandboxError>;
    /// Whether the container it runs in is still running (a process also ends when
    /// its whole container dies).
    async fn container_running(&self) -> Result<bool, SandboxError>;
    /// Sends a signal (`INT`, `TERM`, ... as SSH names them) to the program the
    /// session runs, as sshd signals its session's process. Ok(false) when the engine
    /// gives no way to reach it.
    async fn signal(&self, signal: &str) -> Result<bool, SandboxError>;
}

/// Which way a process's input and output travel between Hermes and the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoPath {
    /// Through the engine's exec stream (dockerd and the container's shim).
    Engine,
    /// Through pipes of the container opened from Hermes's host, past the engine.
    Direct,
    /// A channel of the box's own sshd, over the box's network.
    BoxSshd,
    /// A channel of the box's own sshd whose program's terminal or pipes Hermes
    /// holds from its host: sshd runs it, the data does not pass through sshd.
    BoxSshdTaken,
}

impl IoPath {
    /// Name used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            IoPath::Engine => "engine",
            IoPath::Direct => "direct",
            IoPath::BoxSshd => "sshd",
            IoPath::BoxSshdTaken => "sshd_taken",
        }
    }
}

/// A process started in a container.
pub struct Process {
    /// Its output.
    pub output: Box<dyn ProcessOutput>,
    /// Its input; shutting it down closes the process's stdin.
    pub input: Box<dyn AsyncWrite + Send + Unpin>,
    /// Resize and exit status.
    pub control: Box<dyn ProcessControl>,
    /// How its input and output travel.
    pub path: IoPath,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Process")
    }
}

/// Why the engine could not do something.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SandboxError {
    /// The engine could not be reached or answered with an error.
    #[error("container engine: {0}")]
    Engine(String),
    /// The operation took longer than allowed.
    #[error("container engine did not answer within {0} s")]
    Timeout(u64),
    /// No container can be had right now (shutting down, or what boxes need is
    /// missing).
    #[error("no container available: {0}")]
    Unavailable(String),
    /// `max_containers` boxes run already.
    #[error("no container available: {0}")]
    AtCapacity(String),
    /// The container is gone (died or removed).
    #[error("container {0} is not running")]
    ContainerGone(String),
}

/// A change to a small file's content; None leaves the file as it is.
pub type FileEdit = Box<dyn FnOnce(&[u8]) -> Option<Vec<u8>> + Send>;

/// How thorough a look for files the diff cannot see is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolatileScan {
    /// While the session runs: a process whose open files are the ones seen at the
    /// last look is mostly passed over (every few looks all are read again).
    Running,
    /// The session is over and its box lingers: every process's open files.
    Ended,
    /// The box is about to stop: as `Ended`, and `/dev/shm`.
    Last,
}

/// A container engine with a pool of ready containers.
#[async_trait]
pub trait Sandbox: Send + Sync {
    /// Hands a running container to `session`.
    async fn lease(&self, session: SessionId) -> Result<Lease, SandboxError>;

    /// Hands an earlier container (this engine's id) to a session again, starting it
    /// when it is stopped. [`SandboxError::ContainerGone`] when it no longer exists.
    async fn resume(&self, container_id: &str) -> Result<Lease, SandboxError>;

    /// Takes a container back: it is stopped and kept for forensics in the background;
    /// the caller does not wait.
    fn release(&self, lease: Lease);

    /// Freezes every process of a lingering container (their state kept, no CPU).
    /// Engines that cannot leave it running.
    async fn freeze(&self, _container_id: &str) -> Result<(), SandboxError> {
        Ok(())
    }

    /// Thaws a container [`Sandbox::freeze`] froze (one not frozen is left as it is).
    async fn thaw(&self, _container_id: &str) -> Result<(), SandboxError> {
        Ok(())
    }

    /// Whether the container still runs, and what it has written to its filesystem.
    async fn usage(&self, lease: &Lease) -> Result<ContainerUsage, SandboxError>;

    /// Starts a process in a leased container.
    async fn spawn(&self, lease: &Lease, spec: ProcessSpec) -> Result<Process, SandboxError>;

    /// Paths added or modified in the container's own filesystem since it was created
    /// (its writable layer; deletions left out), at most `max`. Engines without a
    /// diff return none.
    async fn changed_paths(
        &self,
        _lease: &Lease,
        _max: usize,
    ) -> Result<Vec<String>, SandboxError> {
        Ok(Vec::new())
    }

    /// Rewrites the container's `/etc/<name>` from outside it, as shadow-utils
    /// rewrites its files (the old one kept as `<name>-`, owner and mode kept), with
    /// nothing started in the container. Returns the new file and the backup; Ok(None)
    /// when `edit` declines or this engine cannot reach the container's files, and
    /// the caller then runs the tool in the container instead.
    async fn edit_etc_file(
        &self,
        _lease: &Lease,
        _name: &'static str,
        _edit: FileEdit,
    ) -> Result<Option<Vec<ChangedFile>>, SandboxError> {
        Ok(None)
    }

    /// The regular files among `paths` with their size and modification time (to
    /// the second), without reading them.
    async fn stat_files(
        &self,
        _lease: &Lease,
        _paths: Vec<String>,
    ) -> Result<Vec<ChangedFile>, SandboxError> {
        Ok(Vec::new())
    }

    /// The regular files among `paths` (directories, links, devices and paths gone
    /// meanwhile are left out) with their size and modification time, and with
    /// `content` also their content up to `max_size` bytes. Read through the engine:
    /// nothing runs in the container.
    async fn read_files(
        &self,
        _lease: &Lease,
        _paths: Vec<String>,
        _max_size: u64,
        _content: bool,
    ) -> Result<Vec<(ChangedFile, FileRead)>, SandboxError> {
        Ok(Vec::new())
    }

    /// Files the diff cannot see: deleted files that a process of the container still
    /// runs or holds open (no process is started for this, so the attacker cannot
    /// notice), and at [`VolatileScan::Last`] also the files in `/dev/shm` (read by a
    /// process in the container, so only once the session is over). At most
    /// `max_files`, each up to `max_size` bytes.
    async fn volatile_files(
        &self,
        _lease: &Lease,
        _scan: VolatileScan,
        _max_files: usize,
        _max_size: u64,
    ) -> Result<Vec<VolatileFile>, SandboxError> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_sizes_fall_back() {
        assert_eq!(TtySize::sanitized(0, 0), TtySize::DEFAULT);
        assert_eq!(
            TtySize::sanitized(120, 0),
            TtySize {
                width: 120,
                height: 24
            }
        );
        assert_eq!(
            TtySize::sanitized(u32::MAX, 50),
            TtySize {
                width: 10_000,
                height: 50
            }
        );
    }
}
