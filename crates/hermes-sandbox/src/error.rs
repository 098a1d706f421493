//! Turning bollard errors into the core's [`SandboxError`].

use std::sync::atomic::{AtomicU64, Ordering};

use hermes_core::sandbox::SandboxError;

/// Errors the engine answered or the connection to it gave, since start (for the
/// metrics; a 404 or 304 that the caller expects is not described, so not counted).
static ENGINE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Counts one engine error.
pub(crate) fn count_error() {
    ENGINE_ERRORS.fetch_add(1, Ordering::Relaxed);
}

/// Engine errors so far.
pub(crate) fn engine_errors() -> u64 {
    ENGINE_ERRORS.load(Ordering::Relaxed)
}

/// Describes a bollard error in one line, with the daemon's message when it sent one.
pub(crate) fn describe(error: &bollard::errors::Error) -> String {
    count_error();
    match error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("HTTP {status_code}: {}", message.trim()),
        other => other.to_string(),
    }
}

pub(crate) fn engine(error: bollard::errors::Error) -> SandboxError {
    SandboxError::Engine(describe(&error))
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
