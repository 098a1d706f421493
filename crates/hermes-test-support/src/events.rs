//! Queries on the event log the tests read back: the events of one id, how many.

use serde_json::Value;

/// The event id of `event` (`eventid`), if it has one.
pub fn id_of(event: &Value) -> Option<&str> {
    event.get("eventid").and_then(Value::as_str)
}

/// Queries on a list of events, in log order.
pub trait Events {
    /// The events with this id.
    fn of(&self, id: &str) -> Vec<&Value>;
    /// How many events have this id.
    fn count_of(&self, id: &str) -> usize;
    /// Whether an event with this id is there.
    fn has(&self, id: &str) -> bool;
    /// The first event with this id.
    fn first_of(&self, id: &str) -> Option<&Value>;
}

impl Events for [Value] {
    fn of(&self, id: &str) -> Vec<&Value> {
        self.iter().filter(|e| id_of(e) == Some(id)).collect()
    }

    fn count_of(&self, id: &str) -> usize {
        self.iter().filter(|e| id_of(e) == Some(id)).count()
    }

    fn has(&self, id: &str) -> bool {
        self.iter().any(|e| id_of(e) == Some(id))
    }

    fn first_of(&self, id: &str) -> Option<&Value> {
        self.iter().find(|e| id_of(e) == Some(id))
    }
}
