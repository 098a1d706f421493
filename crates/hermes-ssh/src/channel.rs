//! One session channel on the russh side: its messages drive the core's
//! [`ChannelSession`]; the core answers through [`RusshClientChannel`].

use std::io;

use async_trait::async_trait;
use bytes::Bytes;
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};

use tokio::sync::watch;

use hermes_core::session::{ChannelSession, ClientChannel, ForwardCapture};

/// Sends to the client over one channel, within its flow-control window.
pub(crate) struct RusshClientChannel {
    write: ChannelWriteHalf<Msg>,
    /// Set once we closed the channel: russh forgets a channel it closed itself, so
    /// the client's answering close never reaches the reader, which must stop anyway
    /// (or the channel would count against MaxSessions for ever).
    closed: watch::Sender<bool>,
}

impl RusshClientChannel {
    /// The channel, and what tells its reader that we closed it.
    pub(crate) fn new(write: ChannelWriteHalf<Msg>) -> (Self, watch::Receiver<bool>) {
        let (closed, closed_rx) = watch::channel(false);
        (RusshClientChannel { write, closed }, closed_rx)
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
        let result = self.write.close().await.map_err(gone);
        self.closed.send_replace(true);
        result
    }
}

/// Feeds the channel's requests and data to the core, in order, until it closes.
pub(crate) async fn run_channel(
    mut read: ChannelReadHalf,
    mut closed: watch::Receiver<bool>,
    mut session: ChannelSession,
) {
    loop {
        let message = tokio::select! {
            message = read.wait() => message,
            _ = closed.wait_for(|closed| *closed) => None,
        };
        let Some(message) = message else {
            break;
        };
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
            ChannelMsg::RequestX11 {
                single_connection,
                x11_authentication_protocol,
                x11_authentication_cookie,
                x11_screen_number,
                ..
            } => {
                session.x11_request(
                    &x11_authentication_protocol,
                    &x11_authentication_cookie,
                    x11_screen_number,
                    single_connection,
                );
            }
            ChannelMsg::AgentForward { .. } => {
                session.agent_request();
            }
            ChannelMsg::RequestShell { .. } => session.shell().await,
            ChannelMsg::Exec { command, .. } => session.exec(&command).await,
            ChannelMsg::RequestSubsystem { name, .. } => {
                session.subsystem(&name).await;
            }
            ChannelMsg::Signal { signal } => session.signal(&signal_name(&signal)).await,
            ChannelMsg::Data { data } => session.data(&data).await,
            ChannelMsg::Eof => session.eof(),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    session.close().await;
}

/// The SSH name of a signal (RFC 4254 6.10: without the SIG prefix).
fn signal_name(signal: &Sig) -> String {
    match signal {
        Sig::ABRT => "ABRT".to_owned(),
        Sig::ALRM => "ALRM".to_owned(),
        Sig::FPE => "FPE".to_owned(),
        Sig::HUP => "HUP".to_owned(),
        Sig::ILL => "ILL".to_owned(),
        Sig::INT => "INT".to_owned(),
        Sig::KILL => "KILL".to_owned(),
        Sig::PIPE => "PIPE".to_owned(),
        Sig::QUIT => "QUIT".to_owned(),
        Sig::SEGV => "SEGV".to_owned(),
        Sig::TERM => "TERM".to_owned(),
        Sig::USR1 => "USR1".to_owned(),
        Sig::Custom(name) => name.clone(),
    }
}

/// A captured `direct-tcpip` channel: what the client sends is logged until the byte
/// limit, the time limit, or the client's EOF, then the channel is closed.
pub(crate) async fn run_capture(mut channel: Channel<Msg>, mut capture: ForwardCapture) {
    let deadline = tokio::time::sleep(capture.lifetime());
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            message = channel.wait() => match message {
                Some(ChannelMsg::Data { data }) => {
                    if !capture.data(&data) {
                        break;
                    }
                }
                Some(ChannelMsg::Eof | ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
        }
    }
    let _ = channel.eof().await;
    let _ = channel.close().await;
}
