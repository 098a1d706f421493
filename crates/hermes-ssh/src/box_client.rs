//! Hermes as the client of a box's own sshd ([`hermes_core::box_sshd`]): one SSH
//! connection per attacker session, one channel per session channel, each request
//! replayed as the attacker's client made it.
//!
//! The box is hostile: whatever answers on its port 22 may be a fake server. It
//! reaches nothing but the box's own network (the dialer connects from inside the
//! box's gateway), every step is bounded in time, and what it sends is relayed to the
//! attacker like any output: it cannot make Hermes open anything. The box's host key
//! is not checked: it is the box's own, and root there may change it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hermes_core::box_sshd::{
    BoxChannel, BoxConnecting, BoxLogin, BoxProgram, BoxSession, BoxSshd, BoxSshdError,
    ChannelTakeover, Taken,
};
use hermes_core::boxnet::BoxDialer;
use hermes_core::sandbox::{
    IoPath, OutputChunk, Process, ProcessControl, ProcessOutput, SandboxError, TtySize,
};
use russh::client::{self, Handle, Msg};
use russh::keys::PublicKeyOrCertificate;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Disconnect, Sig};
use tokio::io::AsyncWrite;

use crate::box_stream::QuickAck;
use crate::box_taken::{TakenBoxInput, TakenOutput};

/// The SSH port of the box's sshd.
const SSH_PORT: u16 = 22;
/// How long a login may take, from the connect to the accepted password.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long sshd may take to answer a channel's opening and its request.
const CHANNEL_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a refused connect is tried again while the box's sshd may be starting.
const CONNECT_RETRY: Duration = Duration::from_millis(100);

/// Accepts the box's host key (see the module's doc) and refuses every channel the
/// box's sshd opens towards Hermes (agent, X11, forwarded ports): nothing behind
/// Hermes is the attacker's.
struct BoxServer;

impl client::Handler for BoxServer {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        _channel: russh::Channel<Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await
    }

    async fn server_channel_open_x11(
        &mut self,
        _channel: russh::Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        _channel: russh::Channel<Msg>,
        _connected_address: &str,
        _connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        _channel: russh::Channel<Msg>,
        _socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await
    }
}

/// Answers a channel the box's sshd opens towards Hermes: refused.
async fn refuse(reply: client::ChannelOpenHandle) -> Result<(), russh::Error> {
    reply
        .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
        .await;
    Ok(())
}

/// Logs in to boxes' sshd through `dialer`.
pub struct BoxSshClient {
    dialer: Arc<dyn BoxDialer>,
    config: Arc<client::Config>,
    /// The same with a window of zero, for connections whose channels are taken
    /// over.
    taken_config: Arc<client::Config>,
    takeover: Option<Arc<dyn ChannelTakeover>>,
}

impl BoxSshClient {
    /// A client whose connections go through `dialer`; with `takeover`, each
    /// channel's program's descriptors are taken from the box's sshd where this host
    /// allows it, else its data is relayed through sshd.
    pub fn new(dialer: Arc<dyn BoxDialer>, takeover: Option<Arc<dyn ChannelTakeover>>) -> Self {
        BoxSshClient {
            dialer,
            config: Arc::new(client_config(client::Config::default().window_size)),
            // sshd reads a program's output only while the client's window is open.
            taken_config: Arc::new(client_config(0)),
            takeover,
        }
    }

    async fn handshake(
        &self,
        container_id: &str,
        source: std::net::SocketAddr,
    ) -> Result<(Handle<BoxServer>, QuickAck, Option<Takeover>), BoxSshdError> {
        let takeover = match &self.takeover {
            Some(takeover) if takeover.available(container_id).await => Some(Arc::clone(takeover)),
            _ => None,
        };
        let stream = loop {
            match self.dialer.dial(container_id, source, SSH_PORT).await {
                Ok(stream) => break stream,
                // sshd of a box that just booted may not listen yet.
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                    tokio::time::sleep(CONNECT_RETRY).await;
                }
                Err(error) => return Err(BoxSshdError::Unreachable(error.to_string())),
            }
        };
        let takeover = match (takeover, stream.local_addr()) {
            (Some(takeover), Ok(client)) => Some(Takeover {
                takeover,
                container_id: container_id.to_owned(),
                client,
                taken: Taken::default(),
                starting: tokio::sync::Mutex::new(()),
            }),
            _ => None,
        };
        let config = if takeover.is_some() {
            &self.taken_config
        } else {
            &self.config
        };
        let stream = crate::box_stream::AckingStream::new(stream);
        let quick_ack = stream.quick_ack();
        let handle = client::connect_stream(Arc::clone(config), stream, BoxServer)
            .await
            .map_err(|error| BoxSshdError::Protocol(error.to_string()))?;
        Ok((handle, quick_ack, takeover))
    }
}

/// The client's settings, with channels opened at `window_size`.
fn client_config(window_size: u32) -> client::Config {
    let mut config = client::Config {
        // Keystrokes go at once, as OpenSSH's client sends them.
        nodelay: true,
        inactivity_timeout: None,
        client_id: russh::SshId::Standard("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u7".into()),
        window_size,
        ..Default::default()
    };
    // The fastest cipher on this path (AES-NI); the box's sshd offers it.
    let mut ciphers: Vec<russh::cipher::Name> = vec![russh::cipher::AES_128_GCM];
    ciphers.extend(
        config
            .preferred
            .cipher
            .iter()
            .copied()
            .filter(|name| *name != russh::cipher::AES_128_GCM),
    );
    config.preferred.cipher = ciphers.into();
    config
}

fn too_slow(what: &str) -> BoxSshdError {
    BoxSshdError::Unreachable(format!("{what} took over {} s", LOGIN_TIMEOUT.as_secs()))
}

#[async_trait]
impl BoxSshd for BoxSshClient {
    async fn connect(
        &self,
        container_id: &str,
        source: std::net::SocketAddr,
    ) -> Result<Box<dyn BoxConnecting>, BoxSshdError> {
        let (handle, quick_ack, takeover) =
            tokio::time::timeout(LOGIN_TIMEOUT, self.handshake(container_id, source))
                .await
                .map_err(|_| too_slow("the connection"))??;
        Ok(Box::new(Connecting {
            handle,
            quick_ack,
            takeover,
        }))
    }
}

/// What a connection whose channels are taken over needs for it.
struct Takeover {
    takeover: Arc<dyn ChannelTakeover>,
    container_id: String,
    /// The connection's address as the box sees its client.
    client: std::net::SocketAddr,
    /// What its live channels took.
    taken: Taken,
    /// Held while a channel starts, so that channels start one at a time and each
    /// finds only its own descriptors new.
    starting: tokio::sync::Mutex<()>,
}

/// A connection whose key exchange is done.
struct Connecting {
    handle: Handle<BoxServer>,
    quick_ack: QuickAck,
    takeover: Option<Takeover>,
}

#[async_trait]
impl BoxConnecting for Connecting {
    async fn authenticate(
        mut self: Box<Self>,
        login: &BoxLogin,
    ) -> Result<Arc<dyn BoxSession>, BoxSshdError> {
        let auth = self
            .handle
            .authenticate_password(login.account.clone(), login.password.clone());
        let auth = tokio::time::timeout(LOGIN_TIMEOUT, auth)
            .await
            .map_err(|_| too_slow("the login"))?
            .map_err(|error| BoxSshdError::Protocol(error.to_string()))?;
        if !auth.success() {
            return Err(BoxSshdError::Refused(login.account.clone()));
        }
        Ok(Arc::new(BoxSshSession {
            handle: Arc::new(self.handle),
            quick_ack: self.quick_ack,
            takeover: self.takeover,
        }))
    }
}

/// One logged-in connection to a box's sshd.
struct BoxSshSession {
    handle: Arc<Handle<BoxServer>>,
    quick_ack: QuickAck,
    takeover: Option<Takeover>,
}

fn channel_error(error: impl std::fmt::Display) -> BoxSshdError {
    BoxSshdError::Channel(error.to_string())
}

impl BoxSshSession {
    async fn start(&self, request: BoxChannel) -> Result<Process, BoxSshdError> {
        let starting = match &self.takeover {
            Some(takeover) => Some(takeover.starting.lock().await),
            None => None,
        };
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(channel_error)?;
        let (mut read, write) = channel.split();
        // sshd applies these before the program starts; only the program's request
        // needs an answer (a refused pty or env is what sshd would do without them).
        for (name, value) in &request.env {
            write
                .set_env(false, name.clone(), value.clone())
                .await
                .map_err(channel_error)?;
        }
        // Taken over, the program's descriptors are a terminal only if sshd gave
        // it one: its answer is needed.
        let mut pty_answer = request.pty.is_some() && starting.is_some();
        if let Some((term, size)) = &request.pty {
            write
                .request_pty(pty_answer, term, size.width, size.height, 0, 0, &[])
                .await
                .map_err(channel_error)?;
        }
        let mut terminal = request.pty.is_some();
        if let Some((protocol, cookie, screen)) = &request.x11 {
            write
                .request_x11(false, false, protocol.clone(), cookie.clone(), *screen)
                .await
                .map_err(channel_error)?;
        }
        if request.agent {
            write.agent_forward(false).await.map_err(channel_error)?;
        }
        match &request.program {
            BoxProgram::Shell => write.request_shell(true).await,
            BoxProgram::Exec(command) => write.exec(true, command.as_bytes()).await,
            BoxProgram::Subsystem(name) => write.request_subsystem(true, name.clone()).await,
        }
        .map_err(channel_error)?;
        let status = Arc::new(Mutex::new(None));
        let mut early = Vec::new();
        tokio::time::timeout(CHANNEL_TIMEOUT, async {
            loop {
                match read.wait().await {
                    Some(ChannelMsg::Success) if pty_answer => pty_answer = false,
                    Some(ChannelMsg::Failure) if pty_answer => {
                        pty_answer = false;
                        terminal = false;
                    }
                    Some(ChannelMsg::Success) => return Ok(()),
                    Some(ChannelMsg::Failure) => {
                        return Err(BoxSshdError::Channel("request refused".into()));
                    }
                    Some(ChannelMsg::Close) | None => {
                        return Err(BoxSshdError::Channel("closed before it ran".into()));
                    }
                    Some(message) => {
                        if let Some(chunk) = note(&status, message) {
                            early.push(chunk);
                        }
                    }
                }
            }
        })
        .await
        .map_err(|_| BoxSshdError::Channel("no answer".into()))??;
        if request.pty.is_some() {
            // The program runs on a terminal: sshd has turned Nagle off.
            self.quick_ack.stop();
        }
        let write = Arc::new(write);
        let control = Box::new(BoxControl {
            write: Arc::clone(&write),
            status: Arc::clone(&status),
            handle: Arc::clone(&self.handle),
        });
        if let (Some(takeover), Some(_starting)) = (&self.takeover, starting) {
            let mut fds = takeover
                .takeover
                .take(
                    &takeover.container_id,
                    takeover.client,
                    SSH_PORT,
                    terminal,
                    &takeover.taken,
                )
                .await?;
            let keep_errors = !matches!(request.program, BoxProgram::Subsystem(_));
            let input = TakenBoxInput::new(fds.input.take(), &write);
            return Ok(Process {
                output: Box::new(TakenOutput::new(fds, keep_errors, read, write, status)),
                input: Box::new(input),
                control,
                path: IoPath::BoxSshdTaken,
            });
        }
        Ok(Process {
            output: Box::new(BoxOutput {
                read,
                early: early.into(),
                status,
                done: false,
            }),
            input: Box::new(BoxInput {
                writer: Box::pin(write.make_writer()),
            }),
            control,
            path: IoPath::BoxSshd,
        })
    }
}

#[async_trait]
impl BoxSession for BoxSshSession {
    async fn open(&self, channel: BoxChannel) -> Result<Process, BoxSshdError> {
        self.start(channel).await
    }

    async fn close(&self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.handle.disconnect(Disconnect::ByApplication, "", "en"),
        )
        .await;
    }
}

/// The channel's exit, as sshd reported it: a status, or 128 + the signal's number
/// as a shell reports a program killed by it.
pub(crate) type ExitSlot = Arc<Mutex<Option<i64>>>;

/// Keeps what is not output (the exit) and returns what is.
pub(crate) fn note(status: &ExitSlot, message: ChannelMsg) -> Option<OutputChunk> {
    match message {
        ChannelMsg::Data { data } => Some(OutputChunk::Stdout(data)),
        ChannelMsg::ExtendedData { data, ext: 1 } => Some(OutputChunk::Stderr(data)),
        ChannelMsg::ExitStatus { exit_status } => {
            set_exit(status, i64::from(exit_status));
            None
        }
        ChannelMsg::ExitSignal { signal_name, .. } => {
            set_exit(status, 128 + signal_number(&signal_name));
            None
        }
        _ => None,
    }
}

fn set_exit(status: &ExitSlot, value: i64) {
    *status.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
}

fn signal_number(signal: &Sig) -> i64 {
    match signal {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(_) => 0,
    }
}

/// The SSH name of a signal the core names (`INT`, `TERM`, ...).
fn signal_of(name: &str) -> Sig {
    match name {
        "ABRT" => Sig::ABRT,
        "ALRM" => Sig::ALRM,
        "FPE" => Sig::FPE,
        "HUP" => Sig::HUP,
        "ILL" => Sig::ILL,
        "INT" => Sig::INT,
        "KILL" => Sig::KILL,
        "PIPE" => Sig::PIPE,
        "QUIT" => Sig::QUIT,
        "SEGV" => Sig::SEGV,
        "TERM" => Sig::TERM,
        "USR1" => Sig::USR1,
        other => Sig::Custom(other.to_owned()),
    }
}

struct BoxOutput {
    read: ChannelReadHalf,
    early: std::collections::VecDeque<OutputChunk>,
    status: ExitSlot,
    done: bool,
}

#[async_trait]
impl ProcessOutput for BoxOutput {
    async fn next_chunk(&mut self) -> io::Result<Option<OutputChunk>> {
        if let Some(chunk) = self.early.pop_front() {
            return Ok(Some(chunk));
        }
        if self.done {
            return Ok(None);
        }
        loop {
            match self.read.wait().await {
                // sshd closes the channel once the program has exited and its
                // output is out; EOF alone may come before the exit status.
                Some(ChannelMsg::Close) | None => {
                    self.done = true;
                    return Ok(None);
                }
                Some(message) => {
                    if let Some(chunk) = note(&self.status, message) {
                        return Ok(Some(chunk));
                    }
                }
            }
        }
    }
}

struct BoxInput {
    writer: Pin<Box<dyn AsyncWrite + Send>>,
}

impl AsyncWrite for BoxInput {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        self.writer.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        // Sends the channel's EOF: the program reads the end of its input.
        self.writer.as_mut().poll_shutdown(cx)
    }
}

struct BoxControl {
    write: Arc<ChannelWriteHalf<Msg>>,
    status: ExitSlot,
    handle: Arc<Handle<BoxServer>>,
}

fn engine(error: impl std::fmt::Display) -> SandboxError {
    SandboxError::Engine(format!("the box's sshd: {error}"))
}

#[async_trait]
impl ProcessControl for BoxControl {
    async fn resize(&self, size: TtySize) -> Result<(), SandboxError> {
        self.write
            .window_change(size.width, size.height, 0, 0)
            .await
            .map_err(engine)
    }

    async fn exit_status(&self) -> Result<Option<i64>, SandboxError> {
        Ok(*self.status.lock().unwrap_or_else(|p| p.into_inner()))
    }

    async fn container_running(&self) -> Result<bool, SandboxError> {
        Ok(!self.handle.is_closed())
    }

    async fn signal(&self, signal: &str) -> Result<bool, SandboxError> {
        self.write
            .signal(signal_of(signal))
            .await
            .map(|()| true)
            .map_err(engine)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn signals_keep_their_names_and_numbers() {
        for (name, number) in [("INT", 2), ("TERM", 15), ("KILL", 9), ("HUP", 1)] {
            assert_eq!(signal_number(&signal_of(name)), number, "{name}");
        }
        assert!(matches!(signal_of("WINCH"), Sig::Custom(name) if name == "WINCH"));
    }

    #[test]
    fn output_and_exit_are_told_apart() {
        let status: ExitSlot = Arc::default();
        let data = ChannelMsg::Data {
            data: Bytes::from_static(b"\x00\x01\x02out"),
        };
        assert_eq!(
            note(&status, data),
            Some(OutputChunk::Stdout(Bytes::from_static(b"\x00\x01\x02out")))
        );
        let err = ChannelMsg::ExtendedData {
            data: Bytes::from_static(b"err"),
            ext: 1,
        };
        assert_eq!(
            note(&status, err),
            Some(OutputChunk::Stderr(Bytes::from_static(b"err")))
        );
        assert_eq!(
            note(&status, ChannelMsg::ExitStatus { exit_status: 3 }),
            None
        );
        assert_eq!(*status.lock().unwrap(), Some(3));
        let killed = ChannelMsg::ExitSignal {
            signal_name: Sig::KILL,
            core_dumped: false,
            error_message: String::new(),
            lang_tag: String::new(),
        };
        assert_eq!(note(&status, killed), None);
        assert_eq!(*status.lock().unwrap(), Some(137));
    }
}
