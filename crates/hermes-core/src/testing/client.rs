//! The SSH side, faked: a channel that records what the core sends it, and a
//! connection that records disconnects.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

use crate::session::{ClientChannel, ClientConnection};

/// One thing the core sent on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// Stdout bytes.
    Data(Bytes),
    /// Stderr bytes.
    Stderr(Bytes),
    /// The exit status.
    ExitStatus(u32),
    /// EOF.
    Eof,
    /// Channel close.
    Close,
}

/// A session channel's client end: records every call in order.
#[derive(Default)]
pub struct FakeClientChannel {
    ops: Mutex<Vec<ClientOp>>,
    /// The client went away: data and stderr fail.
    gone: AtomicBool,
}

impl FakeClientChannel {
    /// A client that reads everything.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn ops_mut(&self) -> MutexGuard<'_, Vec<ClientOp>> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, op: ClientOp) -> std::io::Result<()> {
        let gone = self.gone.load(Ordering::Acquire);
        if gone && matches!(op, ClientOp::Data(_) | ClientOp::Stderr(_)) {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        self.ops_mut().push(op);
        Ok(())
    }

    /// From now on, writes fail as to a client whose channel is gone.
    pub fn go_away(&self) {
        self.gone.store(true, Ordering::Release);
    }

    /// Everything sent so far, in order.
    pub fn ops(&self) -> Vec<ClientOp> {
        self.ops_mut().clone()
    }

    /// The stdout bytes sent so far, as text.
    pub fn stdout_text(&self) -> String {
        self.text(|op| match op {
            ClientOp::Data(bytes) => Some(bytes),
            _ => None,
        })
    }

    /// The stderr bytes sent so far, as text.
    pub fn stderr_text(&self) -> String {
        self.text(|op| match op {
            ClientOp::Stderr(bytes) => Some(bytes),
            _ => None,
        })
    }

    fn text(&self, pick: impl Fn(&ClientOp) -> Option<&Bytes>) -> String {
        let ops = self.ops_mut();
        let bytes: Vec<u8> = ops.iter().filter_map(pick).flatten().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// How many times the channel was closed.
    pub fn closes(&self) -> usize {
        self.ops_mut()
            .iter()
            .filter(|op| **op == ClientOp::Close)
            .count()
    }
}

#[async_trait]
impl ClientChannel for FakeClientChannel {
    async fn data(&self, bytes: Bytes) -> std::io::Result<()> {
        self.push(ClientOp::Data(bytes))
    }

    async fn stderr(&self, bytes: Bytes) -> std::io::Result<()> {
        self.push(ClientOp::Stderr(bytes))
    }

    async fn exit_status(&self, status: u32) -> std::io::Result<()> {
        self.push(ClientOp::ExitStatus(status))
    }

    async fn eof(&self) -> std::io::Result<()> {
        self.push(ClientOp::Eof)
    }

    async fn close(&self) -> std::io::Result<()> {
        self.push(ClientOp::Close)
    }
}

/// The whole connection's client end: counts disconnects, and lets a test wait for one.
pub struct FakeClientConnection {
    disconnects: AtomicU32,
    disconnected: watch::Sender<bool>,
}

impl FakeClientConnection {
    /// A connection not disconnected yet.
    pub fn new() -> Arc<Self> {
        Arc::new(FakeClientConnection {
            disconnects: AtomicU32::new(0),
            disconnected: watch::channel(false).0,
        })
    }

    /// How many times the core asked to disconnect.
    pub fn disconnects(&self) -> u32 {
        self.disconnects.load(Ordering::Acquire)
    }

    /// Waits until the core disconnects the client.
    pub async fn wait_disconnected(&self) {
        let mut rx = self.disconnected.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }
}

impl ClientConnection for FakeClientConnection {
    fn disconnect(&self) {
        self.disconnects.fetch_add(1, Ordering::AcqRel);
        self.disconnected.send_replace(true);
    }
}
