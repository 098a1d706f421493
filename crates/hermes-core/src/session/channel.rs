//! One session channel: PTY, environment, the shell or command in the container, the
//! pumps between them, and the channel's recording.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::input::InputQueue;
use super::launch::{self, Launch, Program, X11Forward, account_name, is_file_transfer};
use super::pump::{PumpContext, SharedTracker, Teller, pump_output, tell};
use super::recording::{
    SharedRecorder, finish_recording, recording_failed, with_recorder, write_failure,
};
use super::resize::TerminalResizer;
use super::session_place::{HeldPlace, SessionPlace};
use super::sshd_path;
use super::{ClientChannel, Connection};
use crate::capture::{ScpUploads, SftpUploads, Upload};
use crate::commands::{Command, CommandTracker};
use crate::escape::escape_untrusted;
use crate::events::EventId;
use crate::persona;
use crate::record::{AsciicastRecorder, CastHeader, EndReason};
use crate::sandbox::{ProcessControl, ProcessSpec, TtySize};

/// How much of a file-transfer channel (scp, sftp) is recorded. Its stream is the
/// files' bytes, which the capture store keeps; as asciicast every binary byte is
/// decoded and escaped, and recording 64 MiB of it took over half of Hermes's CPU in a
/// transfer and held scp to under half of sshd's speed.
const TRANSFER_RECORDING_LIMIT: u64 = 1 << 20;

/// Reads the client's side of a file transfer for the names of the files it sends.
enum UploadReader {
    Scp(ScpUploads),
    Sftp(SftpUploads),
}

impl UploadReader {
    fn feed(&mut self, bytes: &[u8]) {
        match self {
            UploadReader::Scp(scp) => scp.feed(bytes),
            UploadReader::Sftp(sftp) => sftp.feed(bytes),
        }
    }

    fn uploads(&self) -> &[Upload] {
        match self {
            UploadReader::Scp(scp) => scp.uploads(),
            UploadReader::Sftp(sftp) => sftp.uploads(),
        }
    }
}

/// The home directory of the session's account (what relative scp/sftp paths start
/// from).
fn home_of(account: &str) -> String {
    if account == "root" {
        "/root".to_owned()
    } else {
        format!("/home/{account}")
    }
}

/// Whether an exec'd command is a shell reading its commands from stdin
/// (`ssh host sh < script`).
fn is_stdin_shell(command: &str) -> bool {
    let words: Vec<&str> = command.split_whitespace().collect();
    let program = words
        .first()
        .map(|w| w.rsplit('/').next().unwrap_or(w))
        .unwrap_or("");
    matches!(program, "sh" | "bash" | "dash" | "ash" | "zsh" | "ksh")
        && words[1..]
            .iter()
            .all(|w| matches!(*w, "-s" | "-i" | "-l" | "-" | "--login"))
}

struct Running {
    control: Arc<dyn ProcessControl>,
    pump: JoinHandle<()>,
    writer: JoinHandle<()>,
    /// Hands window changes to its terminal (None without one).
    resizer: Option<TerminalResizer>,
}

/// Input that arrives before the process starts is recorded up to this many bytes
/// (all of it still reaches the process).
const MAX_EARLY_INPUT: usize = 1 << 20;

/// `env` requests one channel applies at most: sshd ignores the 129th.
const MAX_ENV: usize = 128;

/// Bytes of applied environment (names and values) one channel keeps at most; past
/// it a request is refused. The kernel refuses an environment string over 128 KiB
/// anyway, so a real server could not run a shell with more.
const MAX_ENV_BYTES: usize = 64 * 1024;

/// The signals sshd delivers (its `name2sig` table); others are refused.
const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "FPE", "HUP", "ILL", "INT", "KILL", "PIPE", "QUIT", "SEGV", "TERM", "USR1",
    "USR2",
];

/// State of one session channel. The SSH adapter calls these in the order the client's
/// requests arrive.
pub struct ChannelSession {
    conn: Arc<Connection>,
    client: Arc<dyn ClientChannel>,
    index: u32,
    pty: Option<(String, TtySize)>,
    env: Vec<(String, String)>,
    x11: Option<X11Forward>,
    agent: bool,
    started: bool,
    running: Option<Running>,
    input: InputQueue,
    /// Input that arrived before the recording started, for the recording.
    early_input: Vec<u8>,
    recorder: SharedRecorder,
    /// Command lines from the channel's input (shells and terminal programs).
    tracker: SharedTracker,
    /// File names from scp/sftp input, and how many were handed to the connection.
    uploads: Option<(UploadReader, usize)>,
    /// Counts against `persona.max_sessions` until the channel is closed.
    place: Arc<HeldPlace>,
}

impl ChannelSession {
    pub(super) fn new(
        conn: Arc<Connection>,
        client: Arc<dyn ClientChannel>,
        index: u32,
        place: Arc<HeldPlace>,
    ) -> Self {
        let input = InputQueue::new(Arc::clone(&conn.input_backlog));
        ChannelSession {
            conn,
            client,
            index,
            pty: None,
            env: Vec::new(),
            x11: None,
            agent: false,
            started: false,
            running: None,
            input,
            early_input: Vec::new(),
            recorder: Arc::new(Mutex::new(None)),
            tracker: Arc::new(Mutex::new(None)),
            uploads: None,
            place,
        }
    }

    /// What gives the channel's place back when the client closes it.
    pub fn place(&self) -> SessionPlace {
        SessionPlace::of(&self.place)
    }

    /// `pty-req`: remembers terminal type and size. Returns whether it is accepted.
    pub fn pty_request(&mut self, term: &str, width: u32, height: u32) -> bool {
        if self.started {
            return false;
        }
        let size = TtySize::sanitized(width, height);
        self.emit_size(size);
        self.pty = Some((term.to_owned(), size));
        self.conn
            .update_metadata(|m| m.terminal = Some((size.width, size.height)));
        true
    }

    /// `window-change`: resizes the process's terminal (coalesced, never waiting for
    /// the engine) and records it.
    pub async fn window_change(&mut self, width: u32, height: u32) {
        let size = TtySize::sanitized(width, height);
        self.emit_size(size);
        if let Some((_, current)) = self.pty.as_mut() {
            *current = size;
        }
        with_recorder(&self.conn, &self.recorder, |rec| {
            rec.resize(size.width, size.height)
        });
        if let Some(resizer) = self.running.as_ref().and_then(|r| r.resizer.as_ref()) {
            resizer.request(size);
        }
    }

    fn emit_size(&self, size: TtySize) {
        self.conn.emit(EventId::ClientSize, |event| {
            event
                .field("width", size.width)
                .field("height", size.height)
                .message(format!("Terminal Size: {} {}", size.width, size.height))
        });
    }

    /// `env`: logged always; applied and accepted only for the names Debian's sshd
    /// accepts (`AcceptEnv LANG LC_*`), at most [`MAX_ENV`] of them (sshd ignores
    /// more) within [`MAX_ENV_BYTES`].
    pub fn env_request(&mut self, name: &str, value: &str) -> bool {
        let kept: usize = self.env.iter().map(|(n, v)| n.len() + v.len()).sum();
        let accepted = persona::accepts_env(name)
            && !self.started
            && self.env.len() < MAX_ENV
            && kept + name.len() + value.len() <= MAX_ENV_BYTES;
        self.conn.emit(EventId::ClientVar, |event| {
            event
                .field("name", name)
                .field("value", value)
                .field("accepted", accepted)
                .message(format!("request_env: {name}={value}"))
        });
        if accepted {
            self.env.push((name.to_owned(), value.to_owned()));
        }
        accepted
    }

    /// `x11-req`: logged; accepted before the program starts, as Debian's sshd with
    /// `X11Forwarding yes` and xauth installed accepts it. The session gets DISPLAY and
    /// an xauth entry; no X connection is ever forwarded.
    pub fn x11_request(
        &mut self,
        protocol: &str,
        cookie: &str,
        screen: u32,
        single_connection: bool,
    ) -> bool {
        let accepted = !self.started;
        self.conn.emit(EventId::X11Request, |event| {
            event
                .field("auth_protocol", protocol)
                .field("screen", screen)
                .field("single_connection", single_connection)
                .field("accepted", accepted)
                .message(format!(
                    "X11 forwarding request: {protocol} screen {screen}"
                ))
        });
        if accepted {
            self.x11 = Some(X11Forward {
                protocol: protocol.to_owned(),
                cookie: cookie.to_owned(),
                screen,
            });
        }
        accepted
    }

    /// `auth-agent-req@openssh.com`: logged; accepted before the program starts, as
    /// sshd's `AllowAgentForwarding yes` does. The session gets SSH_AUTH_SOCK; the
    /// client's agent is never used.
    pub fn agent_request(&mut self) -> bool {
        let accepted = !self.started;
        self.conn.emit(EventId::AgentRequest, |event| {
            event
                .field("accepted", accepted)
                .message("agent forwarding request")
        });
        self.agent |= accepted;
        accepted
    }

    /// `shell`: starts a login shell in the container.
    pub async fn shell(&mut self) {
        self.start(Program::Shell).await;
    }

    /// `subsystem`: starts the subsystem's command as sshd's `Subsystem` line does
    /// (`sftp` only, as in Debian's sshd_config). Returns whether it is accepted.
    pub async fn subsystem(&mut self, name: &str) -> bool {
        let command = persona::subsystem_command(name).filter(|_| !self.started);
        self.conn.emit(EventId::Subsystem, |event| {
            event
                .field("name", name)
                .field("accepted", command.is_some())
                .message(format!("subsystem request: {name}"))
        });
        tracing::info!(target: "hermes::session", session_id = %self.conn.session_id(), name = %escape_untrusted(name), accepted = command.is_some(), "subsystem request");
        let Some(command) = command else {
            return false;
        };
        self.start(Program::Subsystem {
            name: name.to_owned(),
            command: command.to_owned(),
        })
        .await;
        true
    }

    /// `signal`: logged; delivered to the channel's process where the engine lets
    /// Hermes reach it, for the names sshd knows.
    pub async fn signal(&mut self, name: &str) {
        let known = SIGNALS.contains(&name);
        let delivered = match (&self.running, known) {
            (Some(running), true) => match running.control.signal(name).await {
                Ok(delivered) => delivered,
                Err(error) => {
                    tracing::warn!(target: "hermes::session", session_id = %self.conn.session_id(), %error, "cannot deliver a signal");
                    false
                }
            },
            _ => false,
        };
        self.conn.emit(EventId::Signal, |event| {
            event
                .field("signal", name)
                .field("delivered", delivered)
                .message(format!("signal request: {name}"))
        });
    }

    /// `exec`: runs `command` through the user's shell, as sshd does.
    pub async fn exec(&mut self, command: &[u8]) {
        let command = String::from_utf8_lossy(command).into_owned();
        tracing::info!(target: "hermes::session", session_id = %self.conn.session_id(), command = %escape_untrusted(&command), "exec request");
        self.conn.command(
            self.index,
            Command {
                input: command.clone(),
                realm: None,
                approximate: false,
            },
            false,
        );
        self.start(Program::Exec(command)).await;
    }

    /// Bytes from the client: recorded, then queued for the process (input that
    /// arrives before it starts waits for it).
    pub async fn data(&mut self, bytes: &[u8]) {
        self.conn.input_seen();
        let running = self.running.is_some();
        if running {
            with_recorder(&self.conn, &self.recorder, |rec| rec.input(bytes));
        } else if self.early_input.len() + bytes.len() <= MAX_EARLY_INPUT {
            self.early_input.extend_from_slice(bytes);
        }
        self.input.push(bytes).await;
        if running {
            self.observe_input(bytes).await;
        }
    }

    /// Reads the client's input for command lines and uploaded file names, after it
    /// is queued for the process.
    async fn observe_input(&mut self, bytes: &[u8]) {
        let commands = self
            .tracker
            .lock()
            .ok()
            .and_then(|mut tracker| tracker.as_mut().map(|t| t.input(bytes)))
            .unwrap_or_default();
        if !commands.is_empty() {
            // The Enter goes to the box first: a command's event, log line and
            // metadata rewrite are not in the way of its output.
            tokio::task::yield_now().await;
        }
        for command in commands {
            self.conn.command(self.index, command, true);
        }
        if let Some((reader, handed)) = &mut self.uploads {
            reader.feed(bytes);
            let found = reader.uploads();
            if found.len() > *handed {
                self.conn
                    .files
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .uploads
                    .extend_from_slice(&found[*handed..]);
                *handed = found.len();
            }
        }
    }

    /// EOF from the client: closes the process's stdin once its input is written; its
    /// output still arrives. With a terminal, EOF changes nothing, as with sshd: the
    /// pty master stays open, so the shell goes on reading (and Docker would end the
    /// whole stream).
    pub fn eof(&mut self) {
        if self.pty.is_none() {
            self.input.finish();
        }
    }

    /// The client closed the channel (or the connection went away).
    pub async fn close(mut self) {
        self.input.close();
        if let Some(running) = self.running.take() {
            running.writer.abort();
            running.pump.abort();
            let _ = running.pump.await;
        }
        finish_recording(&self.conn, &self.recorder);
        if self.uploads.is_some() {
            // The transfer is over: copy what it brought.
            self.conn.schedule_capture();
        }
    }

    async fn start(&mut self, program: Program) {
        if self.started {
            return;
        }
        self.started = true;
        let mut terminated = self.conn.terminated.subscribe();
        // Held while waiting: a session that ends meanwhile waits for this channel's
        // message, as it waits for a running pump's.
        let telling = self.conn.pumps.token();
        let lease = tokio::select! {
            lease = self.conn.wait_for_lease() => lease,
            reason = async { terminated.wait_for(|t| t.is_some()).await.ok().and_then(|r| *r) } => {
                let teller = Teller {
                    conn: &self.conn,
                    client: self.client.as_ref(),
                    recorder: &self.recorder,
                    on_stderr: self.pty.is_none(),
                };
                tell(teller, reason.unwrap_or(EndReason::ClientClosed)).await;
                return;
            }
        };
        drop(telling);
        let lease = match lease {
            Ok(lease) => lease,
            Err(reason) => {
                self.fail(reason).await;
                return;
            }
        };
        let username = self.conn.username();
        let process = match self.conn.box_session(&lease).await {
            Ok(Some(session)) => {
                let request = sshd_path::box_channel(
                    &program,
                    self.pty.as_ref(),
                    &self.env,
                    self.x11.as_ref(),
                    self.agent,
                );
                session
                    .open(request)
                    .await
                    .map_err(|e| ("box_channel", e.into()))
            }
            Ok(None) => {
                let spec = self.process_spec(&program);
                let spawned = self.conn.services.sandbox.spawn(&lease, spec).await;
                spawned.map_err(|e| ("exec_start", e))
            }
            Err(error) => Err(("box_sshd", error)),
        };
        let process = match process {
            Ok(process) => process,
            Err((stage, error)) => {
                tracing::error!(target: "hermes::session", session_id = %self.conn.session_id(), stage, %error, "cannot start process in container");
                self.conn.emit_session_error(stage, &error.to_string());
                self.fail(EndReason::ExecFailed).await;
                return;
            }
        };
        self.conn.process_started.send_replace(true);
        self.conn.emit(EventId::ChannelProcess, |event| {
            event
                .field("channel", self.index)
                .field("path", process.path.as_str())
                .message(format!(
                    "channel {} started, its data through {}",
                    self.index,
                    process.path.as_str()
                ))
        });
        self.start_recording(&program, &username);
        self.start_observing(&program, &username);
        let early_input = std::mem::take(&mut self.early_input);
        if !early_input.is_empty() {
            with_recorder(&self.conn, &self.recorder, |rec| rec.input(&early_input));
            self.observe_input(&early_input).await;
        }
        let control: Arc<dyn ProcessControl> = Arc::from(process.control);
        let pump = tokio::spawn(pump_output(PumpContext {
            conn: Arc::clone(&self.conn),
            client: Arc::clone(&self.client),
            recorder: Arc::clone(&self.recorder),
            tracker: Arc::clone(&self.tracker),
            control: Arc::clone(&control),
            output: process.output,
            stderr_messages: self.pty.is_none(),
            _telling: self.conn.pumps.token(),
        }));
        let writer = tokio::spawn(self.input.writer(process.input));
        let resizer = self.pty.as_ref().map(|(_, size)| {
            TerminalResizer::start(Arc::clone(&control), *size, self.conn.session_id())
        });
        self.running = Some(Running {
            control,
            pump,
            writer,
            resizer,
        });
    }

    /// The process that stands in for sshd's session (see [`launch::process_spec`]).
    fn process_spec(&self, program: &Program) -> ProcessSpec {
        let username = self.conn.username();
        launch::process_spec(&Launch {
            program,
            username: &username,
            src: self.conn.context.src,
            dst: self.conn.context.dst,
            pty: self.pty.as_ref(),
            env: &self.env,
            x11: self.x11.as_ref(),
            agent: self.agent,
        })
    }

    /// What the channel's input is read for: command lines of shells and terminal
    /// programs, file names of scp and sftp.
    fn start_observing(&mut self, program: &Program, username: &str) {
        let home = home_of(&account_name(username));
        let tracker = match (program, self.pty.is_some()) {
            (Program::Shell, true) => Some(CommandTracker::terminal_shell()),
            (Program::Shell, false) => Some(CommandTracker::plain_shell()),
            (Program::Exec(command), true) => Some(CommandTracker::terminal_program(command)),
            (Program::Exec(command), false) if is_stdin_shell(command) => {
                Some(CommandTracker::plain_shell())
            }
            _ => None,
        };
        if let Ok(mut slot) = self.tracker.lock() {
            *slot = tracker;
        }
        self.uploads = match program {
            Program::Exec(command) => {
                ScpUploads::for_command(command, &home).map(|scp| (UploadReader::Scp(scp), 0))
            }
            Program::Subsystem { name, .. } if name == "sftp" => {
                Some((UploadReader::Sftp(SftpUploads::new(&home)), 0))
            }
            _ => None,
        };
    }

    /// The recording's file name, and the directory it goes in.
    fn recording_path(&self) -> Option<(PathBuf, String)> {
        let dir = self.conn.record_dir.clone()?;
        let session = self.conn.session_id();
        let name = if self.index == 0 {
            format!("{session}.cast")
        } else {
            format!("{session}-{}.cast", self.index)
        };
        Some((dir, name))
    }

    fn start_recording(&self, program: &Program, username: &str) {
        let Some((dir, name)) = self.recording_path() else {
            return;
        };
        let path = dir.join(&name);
        let (term, size) = match &self.pty {
            Some((term, size)) => (term.clone(), *size),
            None => (String::new(), TtySize::DEFAULT),
        };
        let hostname = &self.conn.services.config.persona.hostname;
        let mut title = format!(
            "{}@{hostname} from {}",
            escape_untrusted(username),
            self.conn.context.src.ip().to_canonical()
        );
        match program {
            Program::Exec(command) => {
                title.push_str(": ");
                title.push_str(&escape_untrusted(command));
            }
            Program::Subsystem { name, .. } => {
                title.push_str(": subsystem ");
                title.push_str(&escape_untrusted(name));
            }
            Program::Shell => {}
        }
        let header = CastHeader {
            width: size.width,
            height: size.height,
            term,
            shell: "/bin/bash".to_owned(),
            title,
        };
        let mut max_size = self
            .conn
            .services
            .config
            .recording
            .max_recording_size
            .bytes();
        if is_file_transfer(program, self.pty.is_some()) {
            max_size = max_size.min(TRANSFER_RECORDING_LIMIT);
        }
        // The one format there is; a second would be chosen here.
        let created = match self.conn.services.config.recording.format {
            crate::config::RecordingFormat::Asciicast => {
                AsciicastRecorder::create(&path, &header, max_size)
            }
        };
        match created {
            Ok(recorder) => {
                tracing::info!(target: "hermes::record", session_id = %self.conn.session_id(), path = %path.display(), "recording started");
                self.conn.update_metadata(|m| {
                    let relative = crate::record::dated_dir(m.start_time).join(&name);
                    m.recordings.push(relative.display().to_string());
                });
                self.conn.emit(EventId::LogOpen, |event| {
                    event
                        .field("ttylog", path.display().to_string())
                        .message(format!("Opening TTY Log: {}", path.display()))
                });
                if let Ok(mut slot) = self.recorder.lock() {
                    *slot = Some(recorder);
                }
            }
            Err(error) => {
                tracing::error!(target: "hermes::record", session_id = %self.conn.session_id(), path = %path.display(), %error, "cannot create recording ({}); the session goes on unrecorded", write_failure(&error));
                recording_failed(
                    &self.conn,
                    &path.display().to_string(),
                    &error,
                    "not recorded",
                );
            }
        }
    }

    /// No container or no process: tell the client in the stage's words, then end.
    async fn fail(&mut self, reason: EndReason) {
        let teller = Teller {
            conn: &self.conn,
            client: self.client.as_ref(),
            recorder: &self.recorder,
            on_stderr: self.pty.is_none(),
        };
        tell(teller, reason).await;
        self.conn.terminate(reason).await;
    }
}
