//! One session channel on the russh side: its messages drive the core's
//! [`ChannelSession`]; the core answers through [`RusshClientChannel`].

use std::io;

use async_trait::async_trait;
use bytes::Bytes;
use russh::server::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};

use hermes_core::session::{ChannelSession, ClientChannel};

/// Sends to the client over one channel, within its flow-control window.
pub(crate) struct RusshClientChannel {
    write: ChannelWriteHalf<Msg>,
}

impl RusshClientChannel {
    pub(crate) fn new(write: ChannelWriteHalf<Msg>) -> Self {
        RusshClientChannel { write }
    }
}

fn gone(error: russh::Error) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, error.to_string())
}

#[async_trait]
impl ClientChannel for RusshClientChannel {
    async fn data(&self, bytes: Bytes) -> io::Result<()> {
        self.write.data_bytes(bytes).await.map_err(gone)
    }

    async fn stderr(&self, bytes: Bytes) -> io::Result<()> {
        // SSH_EXTENDED_DATA_STDERR
        self.write.extended_data_bytes(1, bytes).await.map_err(gone)
    }

    async fn exit_status(&self, status: u32) -> io::Result<()> {
        self.write.exit_status(status).await.map_err(gone)
    }

    async fn eof(&self) -> io::Result<()> {
        self.write.eof().await.map_err(gone)
    }

    async fn close(&self) -> io::Result<()> {
        self.write.close().await.map_err(gone)
    }
}

/// Feeds the channel's requests and data to the core, in order, until it closes.
pub(crate) async fn run_channel(mut read: ChannelReadHalf, mut session: ChannelSession) {
    while let Some(message) = read.wait().await {
        match message {
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            } => {
                session.pty_request(&term, col_width, row_height);
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            } => session.window_change(col_width, row_height).await,
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } => {
                session.env_request(&variable_name, &variable_value);
            }
            ChannelMsg::RequestShell { .. } => session.shell().await,
            ChannelMsg::Exec { command, .. } => session.exec(&command).await,
            ChannelMsg::Data { data } => session.data(&data).await,
            ChannelMsg::Eof => session.eof().await,
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    session.close().await;
}
