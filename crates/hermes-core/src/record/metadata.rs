//! The metadata file written next to a session's recording (`<session>.json`).
//!
//! It is written when the session starts, rewritten while it runs and when it ends,
//! each time whole ([`super::replace`]), so a crash leaves the last version rather
//! than nothing.

use std::io;
use std::path::Path;
use std::time::SystemTime;

use serde_json::{Map, Value, json};

use crate::capture::CapturedFile;
use crate::config::MetadataField;

use super::replace::{Replace, replace_file};

/// A command line as the metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    /// When it was entered (ISO 8601).
    pub time: String,
    /// The session channel (0 for the first).
    pub channel: u32,
    /// The line.
    pub input: String,
    /// The program it was typed into, when not the shell.
    pub realm: Option<String>,
    /// Reconstructed with input that cannot be replayed exactly.
    pub approximate: bool,
}

/// `YYYY/MM/DD` (UTC) of `time`: the directory a session started then is kept in.
pub fn dated_dir(time: SystemTime) -> std::path::PathBuf {
    let stamp = crate::time::iso8601_micros(time);
    let part = |range: std::ops::Range<usize>| stamp.get(range).unwrap_or("00").to_owned();
    [part(0..4), part(5..7), part(8..10)].iter().collect()
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Still running (the start record).
    Running,
    /// The shell or command exited.
    Exited,
    /// The client disconnected.
    ClientClosed,
    /// `server.session_timeout` or `container_pool.max_session_duration` expired.
    Timeout,
    /// No input from the client for `server.idle_timeout`.
    IdleTimeout,
    /// The client stopped answering keepalives (`persona.client_alive_*`).
    ClientNotResponding,
    /// No container could be had (pool empty and creation failed, or capacity).
    ContainerUnavailable,
    /// The shell or command could not be started in the container.
    ExecFailed,
    /// The stream to the container broke.
    StreamError,
    /// Hermes was shut down.
    Shutdown,
    /// Too many sessions at once (`server.max_concurrent_sessions`).
    Capacity,
    /// The container's writable layer reached `security.disk_limit`.
    DiskLimit,
    /// Hermes was killed (or crashed) while the session was open; set at its next start.
    SensorDied,
}

impl EndReason {
    /// The name written to metadata and events.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Running => "running",
            EndReason::Exited => "exited",
            EndReason::ClientClosed => "client_closed",
            EndReason::Timeout => "timeout",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::ClientNotResponding => "client_not_responding",
            EndReason::ContainerUnavailable => "container_unavailable",
            EndReason::ExecFailed => "exec_failed",
            EndReason::StreamError => "stream_error",
            EndReason::Shutdown => "shutdown",
            EndReason::Capacity => "capacity",
            EndReason::DiskLimit => "disk_limit",
            EndReason::SensorDied => "sensor_died",
        }
    }
}

/// One authentication attempt as the metadata records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthAttempt {
    /// Method (`password`, `keyboard-interactive`).
    pub method: &'static str,
    /// Username tried.
    pub username: String,
    /// Password tried.
    pub password: String,
    /// Whether it logged in.
    pub success: bool,
    /// When (ISO 8601).
    pub timestamp: String,
}

/// Commands one session's metadata keeps: it is held in memory and rewritten as the
/// session goes, so a client pasting a million lines must not grow it without end.
pub const MAX_COMMANDS: usize = 10_000;

/// Everything known about a session.
#[derive(Debug, Clone)]
pub struct SessionMetadata {
    /// Session id.
    pub session: String,
    /// Client address.
    pub src_ip: String,
    /// Client port.
    pub src_port: u16,
    /// Our address.
    pub dst_ip: String,
    /// Our port.
    pub dst_port: u16,
    /// Client identification string.
    pub client_version: Option<String>,
    /// The username that logged in.
    pub username: Option<String>,
    /// Authentication attempts in order.
    pub auth_attempts: Vec<AuthAttempt>,
    /// Connection start.
    pub start_time: SystemTime,
    /// Connection end (None while running).
    pub end_time: Option<SystemTime>,
    /// Container that served the session.
    pub container_id: Option<String>,
    /// Commands: `exec` requests and lines entered in shells, the first
    /// [`MAX_COMMANDS`] of them.
    pub commands: Vec<CommandRecord>,
    /// Commands past [`MAX_COMMANDS`], counted only (each is still an event).
    pub commands_omitted: u64,
    /// Files captured from the container.
    pub files: Vec<CapturedFile>,
    /// Exit status of the shell or command.
    pub exit_status: Option<u32>,
    /// Why it ended.
    pub end_reason: EndReason,
    /// The session's recordings (one per channel with a process), relative to the
    /// recordings directory.
    pub recordings: Vec<String>,
    /// Terminal size at start, when there was a terminal.
    pub terminal: Option<(u32, u32)>,
    /// The recording reached `max_recording_size` and stopped recording.
    pub recording_truncated: bool,
    /// A recording could not be written (not created, or writes failed and output
    /// was left out): why, e.g. `no space left on the recordings disk: ...`.
    pub recording_error: Option<String>,
}

impl SessionMetadata {
    /// The JSON document, with the groups `fields` selects.
    pub fn to_json(&self, fields: &[MetadataField]) -> Value {
        let mut doc = Map::new();
        doc.insert("session".into(), self.session.clone().into());
        doc.insert("username".into(), json!(self.username));
        doc.insert("end_reason".into(), self.end_reason.as_str().into());
        doc.insert("exit_status".into(), json!(self.exit_status));
        doc.insert("recording".into(), json!(self.recordings.first()));
        doc.insert("recordings".into(), json!(self.recordings));
        let files: Vec<Value> = self
            .files
            .iter()
            .map(|f| {
                let mut file = json!({
                    "time": f.time,
                    "kind": f.kind.as_str(),
                    "destfile": f.destfile,
                    "shasum": f.shasum,
                    "size": f.size,
                    "duplicate": f.duplicate,
                });
                if let Some(url) = &f.url {
                    file["url"] = url.clone().into();
                }
                if let Some(name) = &f.filename {
                    file["filename"] = name.clone().into();
                }
                file
            })
            .collect();
        doc.insert("files".into(), files.into());
        if self.recording_truncated {
            doc.insert("recording_truncated".into(), true.into());
        }
        if let Some(error) = &self.recording_error {
            doc.insert("recording_error".into(), error.clone().into());
        }
        if let Some((width, height)) = self.terminal {
            doc.insert("terminal".into(), json!({"width": width, "height": height}));
        }
        for field in fields {
            match field {
                MetadataField::ConnectionInfo => {
                    doc.insert("src_ip".into(), self.src_ip.clone().into());
                    doc.insert("src_port".into(), self.src_port.into());
                    doc.insert("dst_ip".into(), self.dst_ip.clone().into());
                    doc.insert("dst_port".into(), self.dst_port.into());
                    doc.insert("client_version".into(), json!(self.client_version));
                }
                MetadataField::AuthenticationAttempts => {
                    let attempts: Vec<Value> = self
                        .auth_attempts
                        .iter()
                        .map(|a| {
                            json!({
                                "method": a.method,
                                "username": a.username,
                                "password": a.password,
                                "success": a.success,
                                "timestamp": a.timestamp,
                            })
                        })
                        .collect();
                    doc.insert("auth_attempts".into(), attempts.into());
                }
                MetadataField::SessionDuration => {
                    doc.insert(
                        "start_time".into(),
                        crate::time::iso8601_micros(self.start_time).into(),
                    );
                    doc.insert(
                        "end_time".into(),
                        json!(self.end_time.map(crate::time::iso8601_micros)),
                    );
                    let duration = self
                        .end_time
                        .and_then(|end| end.duration_since(self.start_time).ok())
                        .map(|d| d.as_secs_f64());
                    doc.insert("duration".into(), json!(duration));
                }
                MetadataField::ContainerId => {
                    doc.insert("container_id".into(), json!(self.container_id));
                }
                MetadataField::CommandsExecuted => {
                    let commands: Vec<Value> = self
                        .commands
                        .iter()
                        .map(|c| {
                            let mut command = json!({
                                "time": c.time,
                                "channel": c.channel,
                                "input": c.input,
                            });
                            if let Some(realm) = &c.realm {
                                command["realm"] = realm.clone().into();
                            }
                            if c.approximate {
                                command["approximate"] = true.into();
                            }
                            command
                        })
                        .collect();
                    doc.insert("commands".into(), commands.into());
                    if self.commands_omitted > 0 {
                        doc.insert("commands_omitted".into(), self.commands_omitted.into());
                    }
                }
            }
        }
        Value::Object(doc)
    }

    /// The file's content: the document, pretty-printed.
    pub fn to_bytes(&self, fields: &[MetadataField]) -> io::Result<Vec<u8>> {
        let mut text =
            serde_json::to_vec_pretty(&self.to_json(fields)).map_err(io::Error::other)?;
        text.push(b'\n');
        Ok(text)
    }

    /// Writes the document to `path` atomically (temp file, then rename).
    pub fn write(&self, path: &Path, fields: &[MetadataField]) -> io::Result<()> {
        write_atomically(path, &self.to_bytes(fields)?)
    }
}

/// Replaces `path` with `text` to last ([`Replace::Durable`]).
pub fn write_atomically(path: &Path, text: &[u8]) -> io::Result<()> {
    replace_file(path, text, Replace::Durable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SessionMetadata {
        SessionMetadata {
            session: "0123456789ab".into(),
            src_ip: "198.51.100.7".into(),
            src_port: 50000,
            dst_ip: "203.0.113.5".into(),
            dst_port: 22,
            client_version: Some("SSH-2.0-x".into()),
            username: Some("root".into()),
            auth_attempts: vec![AuthAttempt {
                method: "password",
                username: "root".into(),
                password: "toor".into(),
                success: true,
                timestamp: "2026-01-01T00:00:00.000000Z".into(),
            }],
            start_time: SystemTime::UNIX_EPOCH,
            end_time: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1500)),
            container_id: Some("abc".into()),
            commands_omitted: 0,
            commands: vec![CommandRecord {
                time: "2026-01-01T00:00:01.000000Z".into(),
                channel: 0,
                input: "python3".into(),
                realm: None,
                approximate: false,
            }],
            files: vec![],
            exit_status: Some(3),
            end_reason: EndReason::Exited,
            recordings: vec!["2026/01/01/0123456789ab.cast".into()],
            terminal: Some((80, 24)),
            recording_truncated: false,
            recording_error: None,
        }
    }

    #[test]
    fn all_groups() {
        let doc = sample().to_json(&MetadataField::ALL);
        assert_eq!(doc["duration"], 1.5);
        assert_eq!(doc["exit_status"], 3);
        assert_eq!(doc["end_reason"], "exited");
        assert_eq!(doc["src_port"], 50000);
        assert_eq!(doc["auth_attempts"][0]["password"], "toor");
        assert_eq!(doc["container_id"], "abc");
        assert_eq!(doc["commands"][0]["input"], "python3");
        assert_eq!(doc["recording"], "2026/01/01/0123456789ab.cast");
        assert_eq!(doc["files"], json!([]));
    }

    #[test]
    fn sessions_are_filed_by_day() {
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(dated_dir(time), std::path::PathBuf::from("2026/11/18"));
    }

    #[test]
    fn groups_can_be_left_out() {
        let doc = sample().to_json(&[MetadataField::ContainerId]);
        assert!(doc.get("auth_attempts").is_none());
        assert!(doc.get("src_ip").is_none());
        assert_eq!(doc["session"], "0123456789ab");
        assert_eq!(doc["container_id"], "abc");
    }

    #[test]
    fn write_replaces_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json");
        let mut meta = sample();
        meta.end_reason = EndReason::Running;
        meta.write(&path, &MetadataField::ALL).expect("write");
        meta.end_reason = EndReason::Exited;
        meta.write(&path, &MetadataField::ALL).expect("write");
        let doc: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(doc["end_reason"], "exited");
        assert!(!dir.path().join("s.json.tmp").exists());
    }
}
