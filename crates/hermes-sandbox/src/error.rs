//! Turning bollard errors into the core's [`SandboxError`].

use hermes_core::sandbox::SandboxError;

/// Describes a bollard error in one line, with the daemon's message when it sent one.
pub(crate) fn describe(error: &bollard::errors::Error) -> String {
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
