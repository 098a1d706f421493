//! The box's past (`hermes_core::past`: weeks of logs, login records) put into each
//! container between its create and its start, told up to that moment.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use hermes_core::past::{self, PastFile, Persona};

use super::*;
use crate::tar_write::TarWriter;

/// The image label that says when its server was installed (seconds since the
/// epoch; `images/target/build.sh` dates the image's files back to it).
pub const INSTALLED_LABEL: &str = "hermes.persona.installed";

/// Boxes created within this many seconds share one telling of the past (up to the
/// start of the period; each adds its own boot): telling it costs milliseconds of
/// CPU, and nothing happens on a quiet server's logs in ten minutes that anyone
/// would miss.
const TOLD_FOR: u64 = 600;

/// What every box's past is told from.
#[derive(Debug)]
pub(super) struct PastSettings {
    seed: u64,
    installed: u64,
    kernel_release: String,
    /// The last telling: its period's start, and the files.
    told: Mutex<Option<(u64, Arc<Vec<PastFile>>)>>,
}

impl DockerSandbox {
    /// When the boxes' server was installed, when the past is told.
    pub(super) fn installed_at(&self) -> Option<u64> {
        self.past.get().map(|settings| settings.installed)
    }

    /// The date of a file Hermes writes into a box as part of its server: `known`
    /// (the installation, the image's own file), else a day ago. Never the box's
    /// first second, which would count as its first session's own file.
    pub(super) fn server_file_time(known: Option<u64>) -> u64 {
        known.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|since| since.as_secs().saturating_sub(86_400))
                .unwrap_or(0)
        })
    }

    /// Gives every box created from now on the past of one server: `seed` is the
    /// sensor's (its boxes share one past), `installed` when that server was set up.
    pub fn set_past(&self, seed: u64, installed: u64) {
        // The boxes run on this kernel (the engine is local, or the boxes' kernel
        // is unknown and this one is as good a guess).
        let kernel_release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|release| release.trim().to_owned())
            .unwrap_or_else(|_| "6.1.0-28-amd64".to_owned());
        let settings = PastSettings {
            seed,
            installed,
            kernel_release,
            told: Mutex::new(None),
        };
        if self.past.set(settings).is_err() {
            tracing::warn!(target: "hermes::sandbox", "the boxes' past was set twice; keeping the first");
        }
    }

    /// When the image's server was installed (its [`INSTALLED_LABEL`]), if it says.
    pub async fn image_installed(&self) -> Result<Option<u64>, SandboxError> {
        let image = self
            .docker
            .inspect_image(&self.profile.image)
            .await
            .map_err(engine)?;
        Ok(image
            .config
            .and_then(|c| c.labels)
            .and_then(|labels| labels.get(INSTALLED_LABEL).cloned())
            .and_then(|value| value.trim().parse().ok()))
    }

    /// Adds the past to what goes into a created, not yet started, container.
    pub(super) async fn add_past(&self, tar: &mut TarWriter) -> Result<(), SandboxError> {
        let Some(settings) = self.past.get() else {
            return Ok(());
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_secs())
            .unwrap_or(0);
        let files = told(settings, &self.profile.hostname, now).await?;
        // Only wtmp differs from box to box (the shutdown before this boot).
        let wtmp = files
            .iter()
            .find(|f| f.path == past::WTMP)
            .map(|wtmp| past::wtmp_before_boot(wtmp, &settings.kernel_release, now));
        let files = files.iter().filter(|f| f.path != past::WTMP).chain(&wtmp);
        add_files(files, tar).map_err(|error| SandboxError::Engine(error.to_string()))
    }
}

/// The past up to the start of `now`'s period, told once a period.
async fn told(
    settings: &PastSettings,
    hostname: &str,
    now: u64,
) -> Result<Arc<Vec<PastFile>>, SandboxError> {
    let period = now / TOLD_FOR * TOLD_FOR;
    if let Some((at, files)) = settings
        .told
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        && *at == period
    {
        return Ok(Arc::clone(files));
    }
    let persona = (
        hostname.to_owned(),
        settings.kernel_release.clone(),
        settings.installed,
        settings.seed,
    );
    let files = tokio::task::spawn_blocking(move || {
        let (hostname, kernel_release, installed, seed) = persona;
        past::generate(
            &Persona {
                hostname: &hostname,
                kernel_release: &kernel_release,
                now: period,
                installed,
            },
            seed,
        )
    })
    .await
    .map_err(|error| SandboxError::Engine(format!("telling the box's past failed: {error}")))?;
    let files = Arc::new(files);
    *settings.told.lock().unwrap_or_else(|p| p.into_inner()) = Some((period, Arc::clone(&files)));
    Ok(files)
}

fn add_files<'a>(
    files: impl Iterator<Item = &'a PastFile>,
    tar: &mut TarWriter,
) -> Result<(), crate::tar_write::NameTooLong> {
    for file in files {
        tar.file_owned(
            &file.path,
            &file.data,
            file.mode,
            (file.uid, file.gid),
            file.mtime,
        )?;
    }
    Ok(())
}
