//! Sessions a killed Hermes left open (its open-session journal lists them): at the
//! next start each is closed once, as its own process would have closed it. Its
//! metadata gets `end_reason: sensor_died` and the last time the session was seen
//! active, and `cowrie.session.closed` and `hermes.session.recovered` are written.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::events::{ConnectionContext, EventBuilder, EventBus, EventId};
use crate::record::{EndReason, Journal, JournalEntry, OpenSession};

/// A metadata file longer than this is not rewritten (its events are still written).
const MAX_METADATA_BYTES: u64 = 64 << 20;

/// A session left open, found at startup.
#[derive(Debug)]
struct LeftOpen {
    context: ConnectionContext,
    start: SystemTime,
    /// The last time anything of the session was written.
    last_seen: SystemTime,
    /// The metadata file.
    path: PathBuf,
    /// What closes it: its document amended, or one made from the journal.
    metadata: Closing,
}

/// How a session's metadata file is closed.
#[derive(Debug)]
enum Closing {
    /// Its document, read.
    Read(Map<String, Value>),
    /// Missing, empty or cut (a power cut can leave a running session's last rewrite
    /// empty: it was not written out yet): made again from what the journal knows.
    Lost(OpenSession),
    /// Too large to rewrite; left as it is.
    Kept,
}

/// Closes every session the journal under `recordings` lists as open: events first
/// (and flushed), then the metadata, then the journal entry, so a crash in between
/// repeats a close rather than losing it. Returns how many were closed.
pub async fn close_left_open(recordings: &Path, events: &EventBus) -> usize {
    let journal = Journal::new(recordings);
    let entries = match journal.entries() {
        Ok(entries) => entries,
        Err(error) => {
            tracing::error!(target: "hermes::record", %error, "cannot read the open-session journal; sessions a killed process left open stay open");
            return 0;
        }
    };
    let mut left = Vec::new();
    for entry in entries {
        let session = entry.session;
        match examine(recordings, entry) {
            Some(open) => left.push(open),
            None => forget(&journal, session),
        }
    }
    for open in &left {
        emit(open, events);
    }
    events.flush().await;
    for open in &left {
        let doc = match &open.metadata {
            Closing::Read(doc) => Some(doc.clone()),
            Closing::Lost(journaled) => {
                tracing::warn!(target: "hermes::record", session_id = %open.context.session, path = %open.path.display(), "the metadata of a session left open is missing or unreadable; made again from the open-session journal");
                Some(from_journal(open.context.session, journaled, open.start))
            }
            Closing::Kept => None,
        };
        if let Some(doc) = doc
            && let Err(error) = rewrite(&open.path, doc, open.start, open.last_seen)
        {
            tracing::error!(target: "hermes::record", session_id = %open.context.session, path = %open.path.display(), %error, "cannot close the metadata of a session left open");
        }
        forget(&journal, open.context.session);
        tracing::info!(target: "hermes::record", session_id = %open.context.session, "closed a session the previous process left open");
    }
    left.len()
}

fn forget(journal: &Journal, session: crate::ids::SessionId) {
    if let Err(error) = journal.closed(session) {
        tracing::error!(target: "hermes::record", session_id = %session, %error, "cannot remove the open-session journal entry");
    }
}

/// What is known of a journal entry's session; None when it needs no closing (its
/// metadata says it ended: its process closed it before dying) or cannot be told.
fn examine(recordings: &Path, entry: JournalEntry) -> Option<LeftOpen> {
    let Some(open) = entry.open else {
        tracing::error!(target: "hermes::record", session_id = %entry.session, "unreadable open-session journal entry; dropped");
        return None;
    };
    let start = UNIX_EPOCH + Duration::from_micros(open.start_us);
    let path = recordings.join(&open.metadata);
    let doc = read_metadata(&path);
    if let Ok(doc) = &doc
        && doc.get("end_reason").and_then(Value::as_str) != Some(EndReason::Running.as_str())
    {
        return None;
    }
    let mut seen = vec![entry.written, modified(&path)];
    if let Ok(doc) = &doc {
        let casts = doc.get("recordings").and_then(Value::as_array);
        for cast in casts.into_iter().flatten().filter_map(Value::as_str) {
            let relative = Path::new(cast);
            if relative
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
            {
                seen.push(modified(&recordings.join(relative)));
            }
        }
    }
    let last_seen = seen.into_iter().flatten().max().unwrap_or(start).max(start);
    Some(LeftOpen {
        context: context(entry.session, &open),
        start,
        last_seen,
        path,
        metadata: match doc {
            Ok(doc) => Closing::Read(doc),
            Err(Unread::TooLarge) => Closing::Kept,
            Err(Unread::Lost) => Closing::Lost(open),
        },
    })
}

fn context(session: crate::ids::SessionId, open: &OpenSession) -> ConnectionContext {
    let address = |ip: &str, port| {
        SocketAddr::new(
            ip.parse::<IpAddr>()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            port,
        )
    };
    ConnectionContext {
        session,
        src: address(&open.src_ip, open.src_port),
        dst: address(&open.dst_ip, open.dst_port),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Why a metadata document was not read.
enum Unread {
    TooLarge,
    /// Missing, empty, cut or not a document.
    Lost,
}

fn read_metadata(path: &Path) -> Result<Map<String, Value>, Unread> {
    let size = std::fs::metadata(path).map_err(|_| Unread::Lost)?.len();
    if size > MAX_METADATA_BYTES {
        return Err(Unread::TooLarge);
    }
    let text = std::fs::read(path).map_err(|_| Unread::Lost)?;
    match serde_json::from_slice(&text) {
        Ok(Value::Object(doc)) => Ok(doc),
        _ => Err(Unread::Lost),
    }
}

/// A metadata document with what the journal kept of the session (its addresses
/// and start); `metadata_lost` says the rest (credentials, commands, files) is
/// only in the event log and the recording.
fn from_journal(
    session: crate::ids::SessionId,
    open: &OpenSession,
    start: SystemTime,
) -> Map<String, Value> {
    let mut doc = Map::new();
    doc.insert("session".into(), session.to_string().into());
    doc.insert("src_ip".into(), open.src_ip.clone().into());
    doc.insert("src_port".into(), open.src_port.into());
    doc.insert("dst_ip".into(), open.dst_ip.clone().into());
    doc.insert("dst_port".into(), open.dst_port.into());
    doc.insert(
        "start_time".into(),
        crate::time::iso8601_micros(start).into(),
    );
    doc.insert("metadata_lost".into(), true.into());
    doc
}

fn emit(open: &LeftOpen, events: &EventBus) {
    let elapsed = open
        .last_seen
        .duration_since(open.start)
        .unwrap_or(Duration::ZERO);
    let duration_ms = elapsed.as_millis() as u64;
    let end_time = crate::time::iso8601_micros(open.last_seen);
    events.emit(
        EventBuilder::connection(EventId::SessionClosed, &open.context)
            .field("duration_ms", duration_ms)
            .field(
                "duration",
                (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            )
            .message(format!(
                "Connection lost after {duration_ms} milliseconds (Hermes stopped without closing it)"
            )),
    );
    events.emit(
        EventBuilder::connection(EventId::SessionRecovered, &open.context)
            .field("end_reason", EndReason::SensorDied.as_str())
            .field("end_time", end_time.clone())
            .message(format!(
                "Session left open by a Hermes process that stopped without closing it; last active {end_time}"
            )),
    );
}

/// The metadata closed: `end_reason`, and `end_time` and `duration` where the
/// document carries times. Temp file, then rename (no temp file left on failure).
fn rewrite(
    path: &Path,
    mut doc: Map<String, Value>,
    start: SystemTime,
    last_seen: SystemTime,
) -> std::io::Result<()> {
    doc.insert("end_reason".into(), EndReason::SensorDied.as_str().into());
    if doc.contains_key("start_time") {
        doc.insert(
            "end_time".into(),
            crate::time::iso8601_micros(last_seen).into(),
        );
        let duration = last_seen.duration_since(start).unwrap_or(Duration::ZERO);
        doc.insert("duration".into(), duration.as_secs_f64().into());
    }
    let mut text = serde_json::to_vec_pretty(&Value::Object(doc)).map_err(std::io::Error::other)?;
    text.push(b'\n');
    crate::record::write_atomically(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MetadataField;
    use crate::events::{JsonLinesFile, spawn_writer};
    use crate::ids::SessionId;
    use crate::record::SessionMetadata;

    fn metadata(session: SessionId, start: SystemTime, end_reason: EndReason) -> SessionMetadata {
        SessionMetadata {
            session: session.to_string(),
            src_ip: "198.51.100.7".into(),
            src_port: 50000,
            dst_ip: "203.0.113.5".into(),
            dst_port: 22,
            client_version: None,
            username: Some("root".into()),
            auth_attempts: Vec::new(),
            start_time: start,
            end_time: None,
            container_id: Some("c1".into()),
            commands: Vec::new(),
            commands_omitted: 0,
            files: Vec::new(),
            exit_status: None,
            end_reason,
            recordings: Vec::new(),
            terminal: None,
            recording_truncated: false,
            recording_error: None,
        }
    }

    /// A session as a killed process leaves it: metadata `running`, journal entry.
    fn left_by_a_dead_process(recordings: &Path, end_reason: EndReason) -> (SessionId, PathBuf) {
        let session = SessionId::random();
        let start = SystemTime::now() - Duration::from_secs(30);
        let relative = crate::record::dated_dir(start).join(format!("{session}.json"));
        metadata(session, start, end_reason)
            .write(&recordings.join(&relative), &MetadataField::ALL)
            .expect("metadata");
        Journal::new(recordings)
            .opened(
                session,
                &OpenSession {
                    src_ip: "198.51.100.7".into(),
                    src_port: 50000,
                    dst_ip: "203.0.113.5".into(),
                    dst_port: 22,
                    start_us: start
                        .duration_since(UNIX_EPOCH)
                        .expect("after the epoch")
                        .as_micros() as u64,
                    metadata: relative.clone(),
                },
            )
            .expect("journal");
        (session, recordings.join(relative))
    }

    fn events_of(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("json"))
            .collect()
    }

    #[tokio::test]
    async fn sessions_left_open_are_closed_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let recordings = dir.path().join("recordings");
        let (open, open_path) = left_by_a_dead_process(&recordings, EndReason::Running);
        // Closed by its process, which died before removing the journal entry.
        let (_, ended_path) = left_by_a_dead_process(&recordings, EndReason::ClientClosed);
        let log = dir.path().join("events.json");
        let (bus, rx) = EventBus::new("s");
        let _writer = spawn_writer(rx, vec![Box::new(JsonLinesFile::open(&log).expect("log"))])
            .expect("writer");

        assert_eq!(close_left_open(&recordings, &bus).await, 1);
        let events = events_of(&log);
        let ids: Vec<(&str, &str)> = events
            .iter()
            .map(|e| {
                (
                    e["eventid"].as_str().unwrap_or_default(),
                    e["session"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        let session = open.to_string();
        assert_eq!(
            ids,
            [
                ("cowrie.session.closed", session.as_str()),
                ("hermes.session.recovered", session.as_str())
            ]
        );
        for event in &events {
            let id = EventId::from_name(event["eventid"].as_str().unwrap_or_default())
                .expect("catalogued");
            id.check(event.as_object().expect("object"))
                .expect("fields");
            assert_eq!(event["src_ip"], "198.51.100.7");
            assert_eq!(event["dst_port"], 22);
        }
        assert!(events[0]["duration_ms"].as_u64().expect("duration") >= 29_000);
        assert_eq!(events[1]["end_reason"], "sensor_died");

        let doc: Value =
            serde_json::from_slice(&std::fs::read(&open_path).expect("read")).expect("json");
        assert_eq!(doc["end_reason"], "sensor_died");
        assert_eq!(doc["end_time"], events[1]["end_time"]);
        assert!(doc["duration"].as_f64().expect("duration") >= 29.0);
        assert_eq!(doc["container_id"], "c1", "the rest is kept");
        let doc: Value =
            serde_json::from_slice(&std::fs::read(&ended_path).expect("read")).expect("json");
        assert_eq!(
            doc["end_reason"], "client_closed",
            "an ended session is left alone"
        );
        assert!(
            Journal::new(&recordings)
                .entries()
                .expect("journal")
                .is_empty(),
            "both entries gone"
        );

        // The next start finds nothing to close.
        assert_eq!(close_left_open(&recordings, &bus).await, 0);
        assert_eq!(events_of(&log).len(), 2);
    }

    /// A power cut can leave a running session's last metadata rewrite empty (not
    /// written out yet) or leave none: the journal's entry still closes it.
    #[tokio::test]
    async fn a_session_whose_metadata_was_lost_gets_one_from_the_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let recordings = dir.path().join("recordings");
        let (empty, empty_path) = left_by_a_dead_process(&recordings, EndReason::Running);
        std::fs::write(&empty_path, b"").expect("emptied");
        let (cut, cut_path) = left_by_a_dead_process(&recordings, EndReason::Running);
        std::fs::write(&cut_path, b"{\"session\": \"ab").expect("cut");
        let (missing, missing_path) = left_by_a_dead_process(&recordings, EndReason::Running);
        std::fs::remove_file(&missing_path).expect("removed");
        let log = dir.path().join("events.json");
        let (bus, rx) = EventBus::new("s");
        let _writer = spawn_writer(rx, vec![Box::new(JsonLinesFile::open(&log).expect("log"))])
            .expect("writer");

        assert_eq!(close_left_open(&recordings, &bus).await, 3);
        for (path, session) in [
            (&empty_path, empty),
            (&cut_path, cut),
            (&missing_path, missing),
        ] {
            let doc: Value =
                serde_json::from_slice(&std::fs::read(path).expect("written")).expect("json");
            assert_eq!(doc["session"], session.to_string());
            assert_eq!(doc["end_reason"], "sensor_died");
            assert_eq!(doc["metadata_lost"], true);
            assert_eq!(doc["src_ip"], "198.51.100.7");
            assert_eq!(doc["src_port"], 50000);
            assert_eq!(doc["dst_port"], 22);
            assert!(doc["start_time"].as_str().is_some_and(|t| t.ends_with('Z')));
            assert!(doc["duration"].as_f64().expect("duration") >= 29.0);
        }
        assert_eq!(events_of(&log).len(), 6, "each closed in the event log too");
    }
}
