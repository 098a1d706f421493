//! Event sinks and the writer that feeds them.
//!
//! The writer runs on its own thread: sessions hand events to an unbounded queue and
//! never wait on a disk. Each sink is isolated: one that fails is reported and retried,
//! and does not stop the others.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Event, WriterMessage};

/// A destination for events.
pub trait EventSink: Send {
    /// A short name for logs.
    fn name(&self) -> String;
    /// Writes one event. It must be durable against a crash of Hermes (not of the
    /// machine) when this returns.
    fn write(&mut self, event: &Event) -> io::Result<()>;
}

/// Appends one JSON object per line to a file. Each line is written with a single
/// `write(2)` and no user-space buffer, so a SIGKILL loses at most the line being written.
pub struct JsonLinesFile {
    path: PathBuf,
    file: Option<File>,
    line: Vec<u8>,
}

impl JsonLinesFile {
    /// Opens (creating directories and the file) `path` for appending.
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut sink = JsonLinesFile {
            path: path.to_owned(),
            file: None,
            line: Vec::with_capacity(1024),
        };
        sink.reopen()?;
        Ok(sink)
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        self.file = Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?,
        );
        Ok(())
    }
}

impl EventSink for JsonLinesFile {
    fn name(&self) -> String {
        format!("json lines {}", self.path.display())
    }

    fn write(&mut self, event: &Event) -> io::Result<()> {
        if self.file.is_none() {
            self.reopen()?;
        }
        self.line.clear();
        serde_json::to_writer(&mut self.line, event.as_json()).map_err(io::Error::other)?;
        self.line.push(b'\n');
        let result = match self.file.as_mut() {
            Some(file) => file.write_all(&self.line),
            None => Err(io::Error::other("event file is not open")),
        };
        if result.is_err() {
            // Reopen on the next event: the file may have been removed or the disk freed.
            self.file = None;
        }
        result
    }
}

/// Starts the writer thread. It ends when every [`super::EventBus`] clone is dropped.
pub fn spawn_writer(
    mut receiver: mpsc::UnboundedReceiver<WriterMessage>,
    mut sinks: Vec<Box<dyn EventSink>>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("hermes-events".into())
        .spawn(move || {
            let mut last_complaint: Vec<Option<Instant>> = vec![None; sinks.len()];
            while let Some(message) = receiver.blocking_recv() {
                match message {
                    WriterMessage::Event(event) => {
                        for (sink, complained) in sinks.iter_mut().zip(last_complaint.iter_mut()) {
                            if let Err(error) = sink.write(&event) {
                                // One complaint a minute per sink, not one per event.
                                if complained.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                                    tracing::error!(target: "hermes::events", sink = %sink.name(), %error, "event sink failed; events are retried on the next write");
                                    *complained = Some(Instant::now());
                                }
                            }
                        }
                    }
                    WriterMessage::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventBuilder, EventBus, EventId};

    #[tokio::test]
    async fn events_land_as_json_lines_and_flush_waits_for_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs/events.json");
        let (bus, rx) = EventBus::new("sensor-a");
        let writer = spawn_writer(
            rx,
            vec![Box::new(JsonLinesFile::open(&path).expect("open"))],
        )
        .expect("writer");
        for i in 0..100 {
            bus.emit(
                EventBuilder::global(EventId::ContainerRemove)
                    .field("container_id", format!("c{i}"))
                    .field("reason", "line\nbreak \u{1b}[31m"),
            );
        }
        bus.flush().await;
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 100);
        for line in lines {
            let value: serde_json::Value = serde_json::from_str(line).expect("json");
            let object = value.as_object().expect("object");
            EventId::ContainerRemove.check(object).expect("catalogue");
        }
        assert!(
            !text.contains('\u{1b}'),
            "control characters are escaped by JSON"
        );
        drop(bus);
        writer.join().expect("writer ends when the bus is dropped");
    }

    #[tokio::test]
    async fn a_failing_sink_does_not_stop_the_others() {
        struct Broken;
        impl EventSink for Broken {
            fn name(&self) -> String {
                "broken".into()
            }
            fn write(&mut self, _: &Event) -> io::Result<()> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.json");
        let (bus, rx) = EventBus::new("s");
        let _writer = spawn_writer(
            rx,
            vec![
                Box::new(Broken),
                Box::new(JsonLinesFile::open(&path).expect("open")),
            ],
        )
        .expect("writer");
        bus.emit(
            EventBuilder::global(EventId::ContainerRemove)
                .field("container_id", "x")
                .field("reason", "y"),
        );
        bus.flush().await;
        assert_eq!(
            std::fs::read_to_string(&path)
                .expect("read")
                .lines()
                .count(),
            1
        );
    }
}
