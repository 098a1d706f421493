//! Drives a [`ChannelSession`] from its own task, as the SSH adapter does: requests
//! are handled one at a time in order, so a shell waiting for its container holds
//! back what the client sends after it.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::client::FakeClientChannel;
use crate::session::ChannelSession;

/// What a client sends on a session channel.
#[derive(Debug, Clone)]
pub enum ChannelRequest {
    /// `pty-req` with a terminal type and size.
    Pty {
        /// Terminal type.
        term: String,
        /// Columns.
        width: u32,
        /// Rows.
        height: u32,
    },
    /// `window-change`.
    WindowChange {
        /// Columns.
        width: u32,
        /// Rows.
        height: u32,
    },
    /// `shell`.
    Shell,
    /// `exec`.
    Exec(String),
    /// `signal`.
    Signal(String),
    /// Channel data.
    Data(Vec<u8>),
    /// EOF.
    Eof,
}

/// A session channel run by its own task; [`ChannelDriver::close`] ends it.
pub struct ChannelDriver {
    requests: mpsc::UnboundedSender<ChannelRequest>,
    task: JoinHandle<()>,
    /// What the core sent the client on this channel.
    pub client: Arc<FakeClientChannel>,
}

impl ChannelDriver {
    /// Runs `session`, whose client end is `client`.
    pub fn start(mut session: ChannelSession, client: Arc<FakeClientChannel>) -> Self {
        let (requests, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(request) = rx.recv().await {
                match request {
                    ChannelRequest::Pty {
                        term,
                        width,
                        height,
                    } => {
                        session.pty_request(&term, width, height);
                    }
                    ChannelRequest::WindowChange { width, height } => {
                        session.window_change(width, height).await
                    }
                    ChannelRequest::Shell => session.shell().await,
                    ChannelRequest::Exec(command) => session.exec(command.as_bytes()).await,
                    ChannelRequest::Signal(name) => session.signal(&name).await,
                    ChannelRequest::Data(bytes) => session.data(&bytes).await,
                    ChannelRequest::Eof => session.eof(),
                }
            }
            session.close().await;
        });
        ChannelDriver {
            requests,
            task,
            client,
        }
    }

    /// Sends a request (handled after the ones before it).
    pub fn send(&self, request: ChannelRequest) {
        let _ = self.requests.send(request);
    }

    /// `pty-req` for an 80x24 xterm, then `shell`.
    pub fn terminal_shell(&self) {
        self.send(ChannelRequest::Pty {
            term: "xterm".to_owned(),
            width: 80,
            height: 24,
        });
        self.send(ChannelRequest::Shell);
    }

    /// The client closes the channel: the requests sent before are handled, then the
    /// session's `close`. Returns once it has run.
    pub async fn close(self) {
        drop(self.requests);
        let _ = self.task.await;
    }
}
