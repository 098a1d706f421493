//! What a session leaves on disk: its asciicast v2 recording and its metadata file.

mod asciicast;
mod journal;
mod metadata;
mod utf8;

pub use asciicast::{AsciicastRecorder, CastHeader, RecordingSummary};
pub use journal::{JOURNAL_DIR, Journal, JournalEntry, JournalError, OpenSession};
pub use metadata::{AuthAttempt, CommandRecord, EndReason, SessionMetadata, dated_dir};
pub use utf8::Utf8Stream;
