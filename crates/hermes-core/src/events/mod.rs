//! The event pipeline: one catalogue of ids, events built against it, a bus that never
//! blocks the session that emits, and sinks that write JSON lines.

mod backlog;
mod catalogue;
mod sink;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};
use tokio::sync::mpsc;

pub use catalogue::{COMMON_FIELDS, CONNECTION_FIELDS, EventId, Field, FieldType, markdown_table};
pub use sink::{
    DEFAULT_BACKLOG_BYTES, EventSink, JsonLinesFile, RETRY_INTERVAL, Rotation, spawn_writer,
};

use crate::ids::SessionId;

/// Who an event is about: the connection fields every connection event carries.
#[derive(Debug, Clone)]
pub struct ConnectionContext {
    /// Session id of the connection.
    pub session: SessionId,
    /// Client address (the attacker's).
    pub src: SocketAddr,
    /// Our address as the client reached it.
    pub dst: SocketAddr,
}

/// One event, ready to be written.
#[derive(Debug, Clone)]
pub struct Event {
    id: EventId,
    fields: Map<String, Value>,
}

impl Event {
    /// The event's id.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// The event as a JSON object (what a sink writes).
    pub fn as_json(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// A field's value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }

    /// One compact JSON line, without the newline.
    pub fn to_line(&self) -> String {
        // Serialising a map of JSON values cannot fail.
        serde_json::to_string(&self.fields).unwrap_or_default()
    }
}

/// Builds an event; [`EventBus::emit`] finishes and sends it.
#[derive(Debug)]
pub struct EventBuilder {
    id: EventId,
    connection: Option<ConnectionContext>,
    fields: Map<String, Value>,
    message: String,
}

impl EventBuilder {
    /// Starts an event about a connection.
    pub fn connection(id: EventId, context: &ConnectionContext) -> Self {
        Self {
            id,
            connection: Some(context.clone()),
            fields: Map::new(),
            message: String::new(),
        }
    }

    /// Starts an event that belongs to no connection.
    pub fn global(id: EventId) -> Self {
        Self {
            id,
            connection: None,
            fields: Map::new(),
            message: String::new(),
        }
    }

    /// Adds a field.
    pub fn field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(name.to_owned(), value.into());
        self
    }

    /// Sets the human-readable `message`.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    pub(crate) fn build(self, sensor: &str) -> Event {
        let mut fields = self.fields;
        for value in fields.values_mut() {
            bound_value(value);
        }
        fields.insert("eventid".into(), self.id.as_str().into());
        fields.insert("timestamp".into(), crate::time::now_iso8601().into());
        fields.insert("sensor".into(), sensor.into());
        fields.insert("message".into(), bounded_text(self.message).into());
        if let Some(ctx) = self.connection {
            fields.insert("session".into(), ctx.session.to_string().into());
            fields.insert(
                "src_ip".into(),
                ctx.src.ip().to_canonical().to_string().into(),
            );
            fields.insert("src_port".into(), ctx.src.port().into());
            // A forward's destination (Cowrie's direct-tcpip events) takes the place
            // of the connection's; the source is always the connection's.
            fields
                .entry("dst_ip")
                .or_insert_with(|| ctx.dst.ip().to_canonical().to_string().into());
            fields
                .entry("dst_port")
                .or_insert_with(|| ctx.dst.port().into());
            fields.insert("protocol".into(), "ssh".into());
        }
        Event {
            id: self.id,
            fields,
        }
    }
}

/// Bytes of one string field (and of the message) at most: log shippers cut or refuse
/// longer lines (Splunk's default line is 10,000 bytes), and an attacker chooses many
/// values' length. The recording and the session metadata keep what is cut here.
pub const MAX_FIELD_BYTES: usize = 4096;

/// Elements of one list field at most (a client's algorithm lists have a few dozen).
pub const MAX_LIST_ITEMS: usize = 64;

/// `text` itself when it fits [`MAX_FIELD_BYTES`], else its start with a marker that
/// gives its full length.
pub fn bounded_text(text: String) -> String {
    cut_with_length(text, MAX_FIELD_BYTES)
}

/// `text` itself when it has at most `max` bytes, else its start (on a character
/// boundary) followed by `...[truncated, N bytes]`, all within `max` bytes.
pub fn cut_with_length(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let marker = format!("...[truncated, {} bytes]", text.len());
    let mut cut = max.saturating_sub(marker.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut bounded = text;
    bounded.truncate(cut);
    bounded.push_str(&marker);
    bounded
}

/// Bounds every string in a field's value, and the length of its lists.
fn bound_value(value: &mut Value) {
    match value {
        Value::String(text) if text.len() > MAX_FIELD_BYTES => {
            *text = bounded_text(std::mem::take(text));
        }
        Value::Array(items) => {
            if items.len() > MAX_LIST_ITEMS {
                let more = items.len() - (MAX_LIST_ITEMS - 1);
                items.truncate(MAX_LIST_ITEMS - 1);
                items.push(Value::String(format!("...[{more} more]")));
            }
            items.iter_mut().for_each(bound_value);
        }
        Value::Object(map) => map.values_mut().for_each(bound_value),
        _ => {}
    }
}

/// What travels from the bus to the writer.
#[derive(Debug)]
pub enum WriterMessage {
    /// Write this event.
    Event(Event),
    /// Answer once everything sent before has been written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// How many events may wait for the writer. Past it, events are counted as dropped
/// (and reported by a `hermes.events.dropped` event) rather than blocking a session
/// or growing without bound behind a stalled sink.
pub const QUEUE_CAPACITY: usize = 100_000;

/// Sends events to the writer thread. Cloning is cheap; emitting never waits.
#[derive(Clone)]
pub struct EventBus {
    sender: mpsc::Sender<WriterMessage>,
    sensor: Arc<str>,
    dropped: Arc<AtomicU64>,
}

/// The writer's end of the bus: queued events, and the count of those that found the
/// queue full.
pub struct EventQueue {
    receiver: mpsc::Receiver<WriterMessage>,
    dropped: Arc<AtomicU64>,
    sensor: Arc<str>,
}

impl EventBus {
    /// A bus for `sensor` with the default queue, and the writer's end for
    /// [`spawn_writer`].
    pub fn new(sensor: &str) -> (EventBus, EventQueue) {
        Self::with_capacity(sensor, QUEUE_CAPACITY)
    }

    /// A bus whose queue holds `capacity` events.
    pub fn with_capacity(sensor: &str, capacity: usize) -> (EventBus, EventQueue) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let sensor: Arc<str> = Arc::from(sensor);
        (
            EventBus {
                sender,
                sensor: Arc::clone(&sensor),
                dropped: Arc::clone(&dropped),
            },
            EventQueue {
                receiver,
                dropped,
                sensor,
            },
        )
    }

    /// Finishes and queues an event. When the queue is full or the writer has stopped
    /// (shutdown), the event is counted as dropped.
    pub fn emit(&self, builder: EventBuilder) {
        let event = builder.build(&self.sensor);
        debug_assert!(
            event.id().check(event.as_json()).is_ok(),
            "{:?}",
            event.id().check(event.as_json())
        );
        let id = event.id();
        if let Err(error) = self.sender.try_send(WriterMessage::Event(event)) {
            let before = self.dropped.fetch_add(1, Ordering::Relaxed);
            if before.is_power_of_two() || before == 0 {
                let why = match error {
                    mpsc::error::TrySendError::Full(_) => "event queue full",
                    mpsc::error::TrySendError::Closed(_) => "event writer is gone",
                };
                tracing::warn!(target: "hermes::events", eventid = id.as_str(), dropped = before + 1, "{why}; event dropped");
            }
        }
    }

    /// Waits until every event emitted before this call has been written (or the
    /// writer has stopped).
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.sender.send(WriterMessage::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Events that could not be handed to the writer.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The sensor name events carry.
    pub fn sensor(&self) -> &str {
        &self.sensor
    }
}

/// What [`EventQueue::next_within`] found.
pub(crate) enum Next {
    Message(WriterMessage),
    /// Nothing came in time.
    Idle,
    /// Every bus is gone.
    Closed,
}

impl EventQueue {
    /// The next message, blocking the (writer) thread; None once every bus is gone.
    fn blocking_next(&mut self) -> Option<WriterMessage> {
        self.receiver.blocking_recv()
    }

    /// The next message if one comes within `wait`.
    pub(crate) fn next_within(&mut self, wait: std::time::Duration) -> Next {
        /// How long the writer sleeps between looks at an empty queue.
        const POLL: std::time::Duration = std::time::Duration::from_millis(20);
        let deadline = std::time::Instant::now() + wait;
        loop {
            match self.receiver.try_recv() {
                Ok(message) => return Next::Message(message),
                Err(mpsc::error::TryRecvError::Disconnected) => return Next::Closed,
                Err(mpsc::error::TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Next::Idle;
                    }
                    std::thread::sleep(left.min(POLL));
                }
            }
        }
    }

    /// The next queued event, without waiting (flush requests are answered on the
    /// way): tests read the bus in place of the writer thread.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn try_next_event(&mut self) -> Option<Event> {
        loop {
            match self.receiver.try_recv() {
                Ok(WriterMessage::Event(event)) => return Some(event),
                Ok(WriterMessage::Flush(done)) => {
                    let _ = done.send(());
                }
                Err(_) => return None,
            }
        }
    }

    /// Events dropped so far.
    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The event that reports `count` more dropped events.
    fn dropped_event(&self, count: u64) -> Event {
        EventBuilder::global(EventId::EventsDropped)
            .field("count", count)
            .message(format!("{count} events dropped: the event queue was full"))
            .build(&self.sensor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next_event(rx: &mut EventQueue) -> Event {
        match rx.receiver.try_recv() {
            Ok(WriterMessage::Event(event)) => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    fn context() -> ConnectionContext {
        ConnectionContext {
            session: SessionId::random(),
            src: "[::ffff:198.51.100.7]:51234".parse().expect("addr"),
            dst: "203.0.113.5:22".parse().expect("addr"),
        }
    }

    #[test]
    fn connection_events_carry_the_envelope() {
        let (bus, mut rx) = EventBus::new("web-01");
        let ctx = context();
        bus.emit(
            EventBuilder::connection(EventId::ClientVersion, &ctx)
                .field("version", "SSH-2.0-x")
                .message("Remote SSH version: SSH-2.0-x"),
        );
        let event = next_event(&mut rx);
        EventId::ClientVersion
            .check(event.as_json())
            .expect("matches catalogue");
        assert_eq!(event.get("src_ip"), Some(&Value::from("198.51.100.7")));
        assert_eq!(event.get("src_port"), Some(&Value::from(51234)));
        assert_eq!(event.get("sensor"), Some(&Value::from("web-01")));
        assert_eq!(event.get("protocol"), Some(&Value::from("ssh")));
        let ts = event.get("timestamp").and_then(Value::as_str).expect("ts");
        assert_eq!(ts.len(), 27);
        assert!(ts.ends_with('Z'));
    }

    #[test]
    fn catalogue_check_rejects_missing_and_extra_fields() {
        let (bus, mut rx) = EventBus::new("s");
        bus.emit(
            EventBuilder::global(EventId::ContainerRemove)
                .field("container_id", "abc")
                .field("reason", "age"),
        );
        let event = next_event(&mut rx);
        assert!(EventId::ContainerRemove.check(event.as_json()).is_ok());
        let mut extra = event.as_json().clone();
        extra.insert("bogus".into(), 1.into());
        assert!(EventId::ContainerRemove.check(&extra).is_err());
        let mut missing = event.as_json().clone();
        missing.remove("reason");
        assert!(EventId::ContainerRemove.check(&missing).is_err());
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let (bus, mut rx) = EventBus::with_capacity("s", 3);
        for _ in 0..10 {
            bus.emit(
                EventBuilder::global(EventId::ContainerRemove)
                    .field("container_id", "a")
                    .field("reason", "r"),
            );
        }
        assert_eq!(bus.dropped(), 7);
        let report = rx.dropped_event(7);
        EventId::EventsDropped
            .check(report.as_json())
            .expect("catalogue");
        for _ in 0..3 {
            next_event(&mut rx);
        }
    }

    #[test]
    fn emitting_after_the_writer_stopped_counts_a_drop() {
        let (bus, rx) = EventBus::new("s");
        drop(rx);
        bus.emit(
            EventBuilder::global(EventId::ContainerRemove)
                .field("container_id", "a")
                .field("reason", "r"),
        );
        assert_eq!(bus.dropped(), 1);
    }

    #[test]
    fn long_values_are_cut_with_their_full_length_and_lines_stay_bounded() {
        let (bus, mut rx) = EventBus::new("s");
        let value = "é".repeat(100_000);
        bus.emit(
            EventBuilder::connection(EventId::ClientVar, &context())
                .field("name", "LC_X")
                .field("value", value.clone())
                .field("accepted", true)
                .message(format!("request_env: LC_X={value}")),
        );
        let event = next_event(&mut rx);
        EventId::ClientVar
            .check(event.as_json())
            .expect("catalogue");
        let cut = event.get("value").and_then(Value::as_str).expect("value");
        assert!(cut.len() <= MAX_FIELD_BYTES, "{}", cut.len());
        assert!(cut.starts_with("éé"));
        assert!(cut.ends_with("...[truncated, 200000 bytes]"), "{cut}");
        let message = event
            .get("message")
            .and_then(Value::as_str)
            .expect("message");
        assert!(message.len() <= MAX_FIELD_BYTES);
        assert!(event.to_line().len() < 3 * MAX_FIELD_BYTES);
        // Short values pass untouched.
        assert_eq!(bounded_text("LC_ALL".to_owned()), "LC_ALL");
    }

    #[test]
    fn long_lists_keep_their_start_and_say_how_many_were_left_out() {
        let (bus, mut rx) = EventBus::new("s");
        let algorithms: Vec<String> = (0..5000).map(|i| format!("alg-{i}")).collect();
        bus.emit(
            EventBuilder::connection(EventId::ClientKex, &context())
                .field("hassh", "h")
                .field("hasshAlgorithms", "a")
                .field("kexAlgs", algorithms.clone())
                .field("keyAlgs", Vec::<String>::new())
                .field("encCS", vec!["x".repeat(50_000)])
                .field("macCS", Vec::<String>::new())
                .field("compCS", Vec::<String>::new())
                .field("langCS", Vec::<String>::new()),
        );
        let event = next_event(&mut rx);
        let kex = event
            .get("kexAlgs")
            .and_then(Value::as_array)
            .expect("list");
        assert_eq!(kex.len(), MAX_LIST_ITEMS);
        assert_eq!(kex[0], "alg-0");
        assert_eq!(kex[MAX_LIST_ITEMS - 1], format!("...[{} more]", 5000 - 63));
        let enc = event.get("encCS").and_then(Value::as_array).expect("list");
        assert!(enc[0].as_str().is_some_and(|s| s.len() <= MAX_FIELD_BYTES));
    }
}
