//! What `hermes sessions` and `hermes replay` share: where the recordings are
//! (`--config`/`--dir`), warnings, and how failures become exit statuses.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use hermes_core::config;

use crate::archive::Archive;

/// Exit status for bad arguments (an unparsable time, a missing directory, a bad config).
pub const EXIT_USAGE: u8 = 2;

/// Where the recordings directory comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct ArchiveArgs {
    /// Configuration file whose `recording.output_dir` holds the recordings.
    #[arg(short, long, value_name = "FILE", default_value = "config/hermes.yaml")]
    pub config: PathBuf,
    /// Recordings directory, overriding the configuration's `recording.output_dir`
    /// (the configuration is then not read).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl ArchiveArgs {
    /// Opens the recordings directory; a missing directory or a bad configuration is a
    /// [`UsageError`].
    pub fn open(&self) -> anyhow::Result<Archive> {
        let (dir, named) = match &self.dir {
            Some(dir) => (dir.clone(), "--dir".to_owned()),
            None => {
                let config = config::load_file(&self.config)
                    .map_err(|error| UsageError(error.to_string()))?;
                (
                    config.recording.output_dir,
                    format!("recording.output_dir (in {})", self.config.display()),
                )
            }
        };
        Archive::open(&dir).map_err(|error| {
            let reason = match error.kind() {
                io::ErrorKind::NotFound => "no such directory".to_owned(),
                _ => error.to_string(),
            };
            UsageError(format!("{named} {}: {reason}", dir.display())).into()
        })
    }
}

/// A failure caused by the arguments: exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Prints a warning to stderr.
pub fn warn(message: String) {
    eprintln!("hermes: warning: {message}");
}

/// The exit status for a subcommand's result, after printing the error: 2 for a
/// [`UsageError`], 0 when stdout was closed early (`hermes sessions | head`), else 1.
pub fn finish(result: anyhow::Result<()>) -> ExitCode {
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    let broken_pipe = error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    eprintln!("hermes: {error:#}");
    if error.downcast_ref::<UsageError>().is_some() {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::FAILURE
    }
}
