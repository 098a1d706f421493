//! What a session leaves on disk: its asciicast v2 recording and its metadata file.

mod asciicast;
mod journal;
mod metadata;
mod replace;
mod retry;
mod utf8;

pub use asciicast::{AsciicastRecorder, CastHeader, RecordingSummary};
pub use journal::{JOURNAL_DIR, Journal, JournalEntry, JournalError, OpenSession};
pub use metadata::{
    AuthAttempt, CommandRecord, EndReason, MAX_COMMANDS, SessionMetadata, dated_dir,
    write_atomically,
};
pub use replace::Replace;
pub use retry::{METADATA_RETRY, MetadataWriter};
pub use utf8::Utf8Stream;
