//! A channel's recording as the channel and its output pump share it: writes that
//! fail on a full disk are reported and the session goes on, and the recording's end
//! is reported once.

use std::sync::{Arc, Mutex};

use super::Connection;
use crate::events::EventId;
use crate::record::AsciicastRecorder;

/// The channel's recording, once started; taken when it is finished.
pub(super) type SharedRecorder = Arc<Mutex<Option<AsciicastRecorder>>>;

/// Runs `write` on the recording, if there is one; a failed write is reported.
pub(super) fn with_recorder(
    conn: &Connection,
    recorder: &SharedRecorder,
    write: impl FnOnce(&mut AsciicastRecorder) -> std::io::Result<()>,
) {
    let Ok(mut slot) = recorder.lock() else {
        return;
    };
    let Some(rec) = slot.as_mut() else {
        return;
    };
    if let Err(error) = write(rec) {
        // A full or failing disk: what was written stays whole (the recorder cut off
        // the partial line); output is skipped until writes succeed again, and the
        // session goes on.
        let path = rec.path().display().to_string();
        drop(slot);
        tracing::error!(target: "hermes::record", session_id = %conn.session_id(), path = %path, %error, "recording write failed ({}); output is not recorded until writes succeed again", write_failure(&error));
        recording_failed(conn, &path, &error, "incomplete");
    }
}

/// What a failed recording write means, in words an operator acts on (a full disk is
/// not the size limit).
pub(super) fn write_failure(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::StorageFull => "no space left on the recordings disk",
        std::io::ErrorKind::QuotaExceeded => "disk quota exceeded",
        _ => "I/O error",
    }
}

/// `hermes.record.error`, and the metadata's `recording_error`, for a recording that
/// could not be written (`what`: `not recorded` or `incomplete`).
pub(super) fn recording_failed(conn: &Connection, path: &str, error: &std::io::Error, what: &str) {
    let text = format!("{}: {error}", write_failure(error));
    conn.update_metadata(|m| {
        m.recording_error.get_or_insert_with(|| text.clone());
    });
    conn.emit(EventId::RecordError, |event| {
        event
            .field("ttylog", path.to_owned())
            .field("error", error.to_string())
            .message(format!("Recording {path} {what}: {text}"))
    });
}

pub(super) fn finish_recording(conn: &Connection, recorder: &SharedRecorder) {
    let taken = recorder.lock().ok().and_then(|mut slot| slot.take());
    let Some(rec) = taken else {
        return;
    };
    report_closed(conn, rec.finish());
}

/// `cowrie.log.closed` for a finished recording.
fn report_closed(conn: &Connection, summary: crate::record::RecordingSummary) {
    if summary.truncated {
        conn.update_metadata(|m| m.recording_truncated = true);
        tracing::warn!(target: "hermes::record", session_id = %conn.session_id(), path = %summary.path.display(), "recording reached max_recording_size; the rest of the output was not recorded");
    }
    if let Some(error) = &summary.write_error {
        tracing::warn!(target: "hermes::record", session_id = %conn.session_id(), path = %summary.path.display(), %error, lines_lost = summary.lines_lost, "recording is incomplete: writes failed and output was left out");
    }
    let duration_ms = summary.duration.as_millis() as u64;
    let ttylog = summary.path.display().to_string();
    conn.emit(EventId::LogClosed, |event| {
        event
            .field("ttylog", ttylog.clone())
            .field("size", summary.size)
            .field("duration_ms", duration_ms)
            .field(
                "duration",
                (summary.duration.as_secs_f64() * 1000.0).round() / 1000.0,
            )
            .message(format!(
                "Closing TTY Log: {ttylog} after {duration_ms} milliseconds"
            ))
    });
}
