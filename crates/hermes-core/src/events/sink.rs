//! Event sinks and the writer that feeds them.
//!
//! The writer runs on its own thread: sessions hand events to an unbounded queue and
//! never wait on a disk. Each sink is isolated: one that fails is reported and retried,
//! and does not stop the others.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};

use super::backlog::Backlog;
use super::{Event, EventBuilder, EventId, EventQueue, Next, WriterMessage};

/// A destination for events.
pub trait EventSink: Send {
    /// A short name for logs.
    fn name(&self) -> String;
    /// Writes one event. It must be durable against a crash of Hermes (not of the
    /// machine) when this returns.
    fn write(&mut self, event: &Event) -> io::Result<()>;
    /// Whether events from failed writes wait in the sink; the writer then calls
    /// [`EventSink::retry`] on a timer.
    fn waiting(&self) -> bool {
        false
    }
    /// Tries again to write what waits.
    fn retry(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// The writer stops: what still waits is given up. Returns how many events.
    fn abandon(&mut self) -> u64 {
        0
    }
}

/// When the event file is rotated. The rotated file is renamed to
/// `<file>.<YYYY-MM-DD>` (the UTC day of its last line), `.<n>` added when that name
/// is taken; the next line goes to a new `<file>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Never: one growing file (for an external logrotate with copytruncate).
    Never,
    /// At the first line of a new UTC day, as Cowrie's `cowrie.json.YYYY-MM-DD`.
    Daily,
    /// Before a line would take the file past this many bytes.
    Size(u64),
}

/// Bytes of event lines kept in memory while the event file cannot be written
/// (`logging.event_backlog_size` sets it for Hermes).
pub const DEFAULT_BACKLOG_BYTES: usize = 16 << 20;

/// Appends one JSON object per line to a file. Each line is written with a single
/// `write(2)` and no user-space buffer, so a SIGKILL loses at most the line being
/// written; a write that fails half way (disk full) is cut back off the file, so the
/// file never holds a partial line. Lines that cannot be written wait in a bounded
/// backlog and are written, in order, on the next write or retry that succeeds; what
/// does not fit is counted and reported by one `hermes.events.dropped` line.
pub struct JsonLinesFile {
    file: LineFile,
    backlog: Backlog,
    /// The sensor the events carry, for the drop report.
    sensor: String,
    /// Why the last write failed, for the drop report.
    last_error: String,
}

/// The file itself: whole lines appended, rotation.
struct LineFile {
    path: PathBuf,
    file: Option<File>,
    /// Bytes in the open file.
    len: u64,
    /// UTC day (`YYYY-MM-DD`) of the open file's last line.
    day: String,
    rotation: Rotation,
}

impl JsonLinesFile {
    /// Opens (creating directories and the file) `path` for appending, without rotation.
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::open_rotating(path, Rotation::Never)
    }

    /// Opens `path` for appending, rotating as `rotation` says. A file left from an
    /// earlier day is rotated before the first new line (daily rotation).
    pub fn open_rotating(path: &Path, rotation: Rotation) -> io::Result<Self> {
        let day = match std::fs::metadata(path).and_then(|m| m.modified()) {
            Ok(modified) => utc_day(modified),
            Err(_) => utc_day(SystemTime::now()),
        };
        let mut file = LineFile {
            path: path.to_owned(),
            file: None,
            len: 0,
            day,
            rotation,
        };
        file.reopen()?;
        Ok(JsonLinesFile {
            file,
            backlog: Backlog::new(DEFAULT_BACKLOG_BYTES),
            sensor: String::new(),
            last_error: String::new(),
        })
    }

    /// Keeps at most `max_bytes` of lines while the file cannot be written.
    pub fn with_backlog(mut self, max_bytes: usize) -> Self {
        self.backlog = Backlog::new(max_bytes);
        self
    }

    /// The count of events this sink had to drop (its backlog was full, or Hermes
    /// stopped while the file could not be written), for the metrics.
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.backlog.dropped_counter()
    }

    /// Writes the backlog, then `line` (None: only the backlog).
    fn write_through(&mut self, line: Option<Vec<u8>>) -> io::Result<()> {
        let sensor = self.sensor.clone();
        let why = self.last_error.clone();
        let report = move |count: u64| {
            let event = EventBuilder::global(EventId::EventsDropped)
                .field("count", count)
                .message(format!(
                    "{count} events dropped: the event log could not be written ({why}) and its backlog was full"
                ))
                .build(&sensor);
            let mut line = event.to_line().into_bytes();
            line.push(b'\n');
            line
        };
        let file = &mut self.file;
        let mut write = |line: &[u8]| file.write_line(line);
        let result = match line {
            Some(line) => self.backlog.write(line, &mut write, &report),
            None => self.backlog.drain(&mut write, &report),
        };
        if let Err(error) = &result {
            self.last_error = error.to_string();
        }
        result
    }
}

impl LineFile {
    fn reopen(&mut self) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.len = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    /// Renames the current file out of the way; the next write opens a new one.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if std::fs::metadata(&self.path).is_err() {
            return Ok(());
        }
        let base = format!("{}.{}", self.path.display(), self.day);
        let mut target = PathBuf::from(&base);
        let mut n = 1;
        while target.exists() {
            target = PathBuf::from(format!("{base}.{n}"));
            n += 1;
        }
        std::fs::rename(&self.path, &target)?;
        self.len = 0;
        Ok(())
    }

    fn rotate_if_due(&mut self, today: &str, line_len: usize) -> io::Result<()> {
        let due = match self.rotation {
            Rotation::Never => false,
            Rotation::Daily => self.day != today && self.len > 0,
            Rotation::Size(max) => self.len > 0 && self.len + line_len as u64 > max,
        };
        if due {
            self.rotate()?;
        }
        Ok(())
    }

    /// Appends one whole line (with its newline) in one `write(2)`.
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let today = utc_day(SystemTime::now());
        self.rotate_if_due(&today, line.len())?;
        if self.file.is_none() {
            self.reopen()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("event file is not open"));
        };
        match file.write_all(line) {
            Ok(()) => {
                self.len += line.len() as u64;
                self.day = today;
                Ok(())
            }
            Err(error) => {
                // Cut a partly written line back off, so the file stays whole lines;
                // reopen on the next event (the file may be gone or the disk freed).
                let _ = file.set_len(self.len);
                self.file = None;
                Err(error)
            }
        }
    }
}

impl EventSink for JsonLinesFile {
    fn name(&self) -> String {
        format!("json lines {}", self.file.path.display())
    }

    fn write(&mut self, event: &Event) -> io::Result<()> {
        let mut line = Vec::with_capacity(512);
        serde_json::to_writer(&mut line, event.as_json()).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.sensor.is_empty()
            && let Some(sensor) = event.get("sensor").and_then(|s| s.as_str())
        {
            self.sensor = sensor.to_owned();
        }
        self.write_through(Some(line))
    }

    fn waiting(&self) -> bool {
        self.backlog.is_waiting()
    }

    fn retry(&mut self) -> io::Result<()> {
        self.write_through(None)
    }

    fn abandon(&mut self) -> u64 {
        self.backlog.abandon()
    }
}

/// `YYYY-MM-DD` in UTC.
fn utc_day(time: SystemTime) -> String {
    crate::time::iso8601_micros(time)
        .get(..10)
        .unwrap_or("1970-01-01")
        .to_owned()
}

/// How often sinks holding events from failed writes try again when no new event
/// comes to make them.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Starts the writer thread. It ends when every [`super::EventBus`] clone is dropped.
pub fn spawn_writer(
    mut queue: EventQueue,
    mut sinks: Vec<Box<dyn EventSink>>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("hermes-events".into())
        .spawn(move || {
            let mut writer = Writer {
                last_complaint: vec![None; sinks.len()],
                last_retry: Instant::now(),
            };
            let mut reported_drops = 0;
            loop {
                let message = if sinks.iter().any(|s| s.waiting()) {
                    match queue.next_within(RETRY_INTERVAL.saturating_sub(writer.last_retry.elapsed())) {
                        Next::Message(message) => message,
                        Next::Idle => {
                            writer.retry(&mut sinks);
                            continue;
                        }
                        Next::Closed => break,
                    }
                } else {
                    match queue.blocking_next() {
                        Some(message) => message,
                        None => break,
                    }
                };
                match message {
                    WriterMessage::Event(event) => writer.write_all(&mut sinks, &event),
                    WriterMessage::Flush(done) => {
                        let _ = done.send(());
                    }
                }
                let dropped = queue.dropped();
                if dropped > reported_drops {
                    let event = queue.dropped_event(dropped - reported_drops);
                    writer.write_all(&mut sinks, &event);
                    reported_drops = dropped;
                }
            }
            // Stopping: one last try, then what still waits is lost, and said so.
            writer.retry(&mut sinks);
            for sink in &mut sinks {
                let lost = sink.abandon();
                if lost > 0 {
                    tracing::error!(target: "hermes::events", sink = %sink.name(), lost, "event sink still failing at shutdown; the events waiting for it are lost");
                }
            }
        })
}

/// What the writer thread keeps between messages.
struct Writer {
    /// Per sink, when its failure was last logged.
    last_complaint: Vec<Option<Instant>>,
    last_retry: Instant,
}

impl Writer {
    fn write_all(&mut self, sinks: &mut [Box<dyn EventSink>], event: &Event) {
        for (sink, complained) in sinks.iter_mut().zip(self.last_complaint.iter_mut()) {
            let result = sink.write(event);
            complain(sink.as_ref(), complained, result);
        }
    }

    /// Lets every sink with waiting events try again.
    fn retry(&mut self, sinks: &mut [Box<dyn EventSink>]) {
        self.last_retry = Instant::now();
        for (sink, complained) in sinks.iter_mut().zip(self.last_complaint.iter_mut()) {
            if sink.waiting() {
                let result = sink.retry();
                complain(sink.as_ref(), complained, result);
            }
        }
    }
}

/// Logs a sink's failure, once a minute per sink rather than once per event, and its
/// recovery.
fn complain(sink: &dyn EventSink, complained: &mut Option<Instant>, result: io::Result<()>) {
    match result {
        Err(error) => {
            if complained.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                tracing::error!(target: "hermes::events", sink = %sink.name(), %error, "event sink failed; its events wait in a bounded backlog and are retried");
                *complained = Some(Instant::now());
            }
        }
        Ok(()) => {
            if complained.is_some() && !sink.waiting() {
                tracing::info!(target: "hermes::events", sink = %sink.name(), "event sink writes again; its backlog is written");
                *complained = None;
            }
        }
    }
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

    fn remove_event(i: usize) -> EventBuilder {
        EventBuilder::global(EventId::ContainerRemove)
            .field("container_id", format!("c{i}"))
            .field("reason", "r")
    }

    /// Every line of every file in `dir` whose name starts with `prefix`, checked.
    fn all_lines(dir: &Path, prefix: &str) -> (usize, Vec<String>) {
        let mut files = 0;
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(dir).expect("dir") {
            let entry = entry.expect("entry");
            if !entry.file_name().to_string_lossy().starts_with(prefix) {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(entry.path()).expect("read");
            assert!(text.is_empty() || text.ends_with('\n'), "whole lines only");
            for line in text.lines() {
                let value: serde_json::Value = serde_json::from_str(line).expect("json line");
                ids.push(value["container_id"].as_str().expect("id").to_owned());
            }
        }
        (files, ids)
    }

    #[tokio::test]
    async fn size_rotation_under_load_loses_no_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.json");
        let (bus, rx) = EventBus::new("s");
        let writer = spawn_writer(
            rx,
            vec![Box::new(
                JsonLinesFile::open_rotating(&path, Rotation::Size(64 << 10)).expect("open"),
            )],
        )
        .expect("writer");
        // Four producers at once, as sessions emit.
        let mut tasks = Vec::new();
        for t in 0..4 {
            let bus = bus.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..5_000 {
                    bus.emit(remove_event(t * 100_000 + i));
                }
            }));
        }
        for task in tasks {
            task.await.expect("producer");
        }
        bus.flush().await;
        assert_eq!(bus.dropped(), 0);
        drop(bus);
        writer.join().expect("writer");
        let (files, mut ids) = all_lines(dir.path(), "events.json");
        assert!(files > 10, "rotated into {files} files");
        for entry in std::fs::read_dir(dir.path()).expect("dir") {
            let len = entry.expect("entry").metadata().expect("stat").len();
            assert!(len <= 64 << 10, "{len}");
        }
        let total = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!((total, ids.len()), (20_000, 20_000));
    }

    #[test]
    fn daily_rotation_names_the_file_by_its_day() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.json");
        let (bus, _rx) = EventBus::new("s");
        let event = |i| remove_event(i).build(bus.sensor());
        let mut sink = JsonLinesFile::open_rotating(&path, Rotation::Daily).expect("open");
        sink.write(&event(1)).expect("write");
        sink.write(&event(2)).expect("write");
        // As if those lines were written on an earlier day.
        sink.file.day = "2026-01-01".into();
        sink.write(&event(3)).expect("write");
        let old = std::fs::read_to_string(dir.path().join("events.json.2026-01-01"))
            .expect("rotated file");
        assert_eq!(old.lines().count(), 2);
        assert_eq!(
            std::fs::read_to_string(&path)
                .expect("read")
                .lines()
                .count(),
            1
        );
        // A second rotation for the same day does not overwrite the first.
        sink.file.day = "2026-01-01".into();
        sink.write(&event(4)).expect("write");
        assert!(dir.path().join("events.json.2026-01-01.1").exists());
        let (_, ids) = all_lines(dir.path(), "events.json");
        assert_eq!(ids.len(), 4);
    }

    #[test]
    fn a_file_left_from_an_earlier_day_is_rotated_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.json");
        std::fs::write(&path, "{\"container_id\":\"old\"}\n").expect("write");
        let old = SystemTime::now() - Duration::from_secs(3 * 86_400);
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(old))
            .expect("mtime");
        let (bus, _rx) = EventBus::new("s");
        let mut sink = JsonLinesFile::open_rotating(&path, Rotation::Daily).expect("open");
        sink.write(&remove_event(1).build(bus.sensor()))
            .expect("write");
        let rotated = dir.path().join(format!("events.json.{}", utc_day(old)));
        assert!(rotated.exists(), "{}", rotated.display());
        assert_eq!(
            std::fs::read_to_string(&path)
                .expect("read")
                .lines()
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn a_stalled_sink_never_blocks_emitters() {
        struct Stalled(std::sync::mpsc::Receiver<()>);
        impl EventSink for Stalled {
            fn name(&self) -> String {
                "stalled".into()
            }
            fn write(&mut self, _: &Event) -> io::Result<()> {
                // Blocks until the test lets go (a hung NFS mount, a full pipe).
                let _ = self.0.recv();
                Ok(())
            }
        }
        let (release, stalled) = std::sync::mpsc::channel();
        let (bus, rx) = EventBus::with_capacity("s", 1000);
        let writer = spawn_writer(rx, vec![Box::new(Stalled(stalled))]).expect("writer");
        let started = Instant::now();
        for i in 0..50_000 {
            bus.emit(remove_event(i));
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(5),
            "emitting took {elapsed:?} behind a stalled sink"
        );
        assert!(bus.dropped() >= 48_000, "{}", bus.dropped());
        drop(release);
        drop(bus);
        writer.join().expect("writer");
    }

    /// Points the sink at `/dev/full` (every write: ENOSPC), as a full disk.
    fn fill(sink: &mut JsonLinesFile) -> PathBuf {
        let real = std::mem::replace(&mut sink.file.path, PathBuf::from("/dev/full"));
        sink.file.file = None;
        real
    }

    fn free(sink: &mut JsonLinesFile, real: PathBuf) {
        sink.file.path = real;
        sink.file.file = None;
    }

    #[test]
    fn a_full_disk_keeps_events_then_writes_them_in_order_with_the_drop_report() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.json");
        let (bus, _rx) = EventBus::new("sensor-x");
        let event = |i| remove_event(i).build(bus.sensor());
        let one_line = event(10).to_line().len() + 1;
        let mut sink = JsonLinesFile::open(&path)
            .expect("open")
            .with_backlog(10 * one_line);
        let dropped = sink.dropped_counter();
        sink.write(&event(0)).expect("write");
        let real = fill(&mut sink);
        for i in 1..=25 {
            assert!(sink.write(&event(i)).is_err());
        }
        assert!(sink.waiting());
        assert_eq!(sink.backlog.len(), 10);
        assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 15);
        assert!(sink.retry().is_err(), "still full");
        free(&mut sink, real);
        sink.retry().expect("space is back");
        assert!(!sink.waiting());
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 12);
        let ids: Vec<&str> = lines[..11]
            .iter()
            .map(|l| l["container_id"].as_str().expect("id"))
            .collect();
        let expected: Vec<String> = (0..=10).map(|i| format!("c{i}")).collect();
        assert_eq!(ids, expected);
        let report = lines[11].as_object().expect("object");
        EventId::EventsDropped.check(report).expect("catalogue");
        assert_eq!(report["count"], 15);
        assert_eq!(report["sensor"], "sensor-x");
        assert!(
            report["message"]
                .as_str()
                .is_some_and(|m| m.contains("No space left")),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn the_writer_retries_on_a_timer_without_new_events() {
        /// Fails while the flag is set; counts lines as written.
        struct Flaky {
            full: Arc<std::sync::atomic::AtomicBool>,
            waiting: u64,
            written: Arc<AtomicU64>,
        }
        impl EventSink for Flaky {
            fn name(&self) -> String {
                "flaky".into()
            }
            fn write(&mut self, _: &Event) -> io::Result<()> {
                self.waiting += 1;
                self.retry()
            }
            fn waiting(&self) -> bool {
                self.waiting > 0
            }
            fn retry(&mut self) -> io::Result<()> {
                if self.full.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(io::Error::from_raw_os_error(28));
                }
                self.written
                    .fetch_add(self.waiting, std::sync::atomic::Ordering::Relaxed);
                self.waiting = 0;
                Ok(())
            }
        }
        let full = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let written = Arc::new(AtomicU64::new(0));
        let (bus, rx) = EventBus::new("s");
        let writer = spawn_writer(
            rx,
            vec![Box::new(Flaky {
                full: Arc::clone(&full),
                waiting: 0,
                written: Arc::clone(&written),
            })],
        )
        .expect("writer");
        for i in 0..5 {
            bus.emit(remove_event(i));
        }
        bus.flush().await;
        assert_eq!(written.load(std::sync::atomic::Ordering::Relaxed), 0);
        full.store(false, std::sync::atomic::Ordering::Relaxed);
        // No event comes: only the timer can write them.
        let started = Instant::now();
        while written.load(std::sync::atomic::Ordering::Relaxed) < 5 {
            assert!(
                started.elapsed() < RETRY_INTERVAL * 5,
                "not retried within {:?}",
                RETRY_INTERVAL * 5
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(bus);
        writer.join().expect("writer");
    }
}
