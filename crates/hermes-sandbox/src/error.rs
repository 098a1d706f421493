//! Turning bollard errors into the core's [`SandboxError`].

use std::sync::atomic::{AtomicU64, Ordering};

use hermes_core::sandbox::SandboxError;

/// Failed engine calls since start: errors the engine answered or the connection to it
/// gave (a 404 or 304 the caller expects is an answer, not a failure, so not counted).
static ENGINE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Counts one failed engine call (for callers without a bollard error, e.g. the
/// hijacked exec start).
pub(crate) fn count_error() {
    ENGINE_ERRORS.fetch_add(1, Ordering::Relaxed);
}

/// Engine errors so far.
pub(crate) fn engine_errors() -> u64 {
    ENGINE_ERRORS.load(Ordering::Relaxed)
}

/// An engine call failed: counts it and says why in one line. It takes the error, so
/// a failure is counted once however often its description is then formatted.
pub(crate) fn failure(error: bollard::errors::Error) -> String {
    count_error();
    describe(&error)
}

/// An engine call failed, as the core's error (counted, see [`failure`]).
pub(crate) fn engine(error: bollard::errors::Error) -> SandboxError {
    SandboxError::Engine(failure(error))
}

/// A bollard error in one line, with the daemon's message when it sent one.
fn describe(error: &bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("HTTP {status_code}: {}", message.trim()),
        other => other.to_string(),
    }
}

/// True when the daemon answered 404 (no such container, exec or image).
pub(crate) fn is_not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// True when the daemon answered 304 (already started or stopped).
pub(crate) fn is_not_modified(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error() -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: "boom\n".into(),
        }
    }

    #[test]
    fn each_failure_is_counted_once_and_describing_counts_nothing() {
        let before = engine_errors();
        let error = server_error();
        assert_eq!(describe(&error), "HTTP 500: boom");
        assert_eq!(describe(&error), "HTTP 500: boom");
        assert_eq!(engine_errors(), before, "formatting is not a failure");
        assert_eq!(failure(error), "HTTP 500: boom");
        assert_eq!(engine_errors(), before + 1);
        let SandboxError::Engine(message) = engine(server_error()) else {
            panic!("an engine error");
        };
        assert_eq!(message, "HTTP 500: boom");
        assert_eq!(engine_errors(), before + 2);
    }
}
