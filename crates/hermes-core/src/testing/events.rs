//! Events kept in memory in place of the writer thread, for tests to assert on.

use std::sync::Mutex;

use crate::events::{Event, EventBus, EventId, EventQueue};

/// The events a bus carried, read without a writer thread.
pub struct RecordedEvents {
    inner: Mutex<(EventQueue, Vec<Event>)>,
}

impl RecordedEvents {
    /// A bus for sensor `test` and its recorder.
    pub fn new() -> (EventBus, RecordedEvents) {
        let (bus, queue) = EventBus::new("test");
        (
            bus,
            RecordedEvents {
                inner: Mutex::new((queue, Vec::new())),
            },
        )
    }

    /// Every event emitted so far, in order.
    pub fn all(&self) -> Vec<Event> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (queue, seen) = &mut *inner;
        while let Some(event) = queue.try_next_event() {
            seen.push(event);
        }
        seen.clone()
    }

    /// The events with id `id`, in order.
    pub fn of(&self, id: EventId) -> Vec<Event> {
        self.all().into_iter().filter(|e| e.id() == id).collect()
    }

    /// How many events with id `id` were emitted.
    pub fn count(&self, id: EventId) -> usize {
        self.of(id).len()
    }

    /// The string field `field` of every event with id `id`.
    pub fn fields(&self, id: EventId, field: &str) -> Vec<String> {
        self.of(id)
            .iter()
            .map(|e| {
                e.get(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    /// Waits until `count` events with id `id` were emitted (a writer may finish its
    /// event after its client saw the end), at most ten seconds of the test's clock.
    pub async fn wait_for_count(&self, id: EventId, count: usize) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let events = self.of(id);
            if events.len() >= count || tokio::time::Instant::now() >= deadline {
                return events;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
