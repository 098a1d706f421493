//! Capture passes: the files a session created or changed in its container, copied
//! into the store with their events. A pass runs a moment after each command (so a
//! file deleted before logout is still caught when it lived that long) and once at the
//! end, before the container is stopped.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{Connection, LeaseState};
use crate::capture::{CapturedFile, FileKind, SkipReason, StoreError};
use crate::escape::escape_untrusted;
use crate::events::{EventBuilder, EventId};
use crate::sandbox::{FileRead, Lease};

/// How long after a command the next pass runs (commands come in bursts).
const PASS_DELAY: Duration = Duration::from_secs(2);
/// Longest the final pass may hold up the container's release.
const FINAL_PASS_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the baseline may delay a session's shell.
const BASELINE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most changed paths looked at per pass.
const MAX_CHANGED_PATHS: usize = 10_000;

impl Connection {
    /// A command ran (or an upload ended): look for new files shortly.
    pub(super) fn schedule_capture(self: &Arc<Self>) {
        if self.services.capture.is_none() {
            return;
        }
        if self
            .capture_scheduled
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let conn = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(PASS_DELAY).await;
            conn.capture_scheduled
                .store(false, std::sync::atomic::Ordering::Release);
            let lease = match &*conn.lease.borrow() {
                LeaseState::Ready(lease) => Some(lease.clone()),
                _ => None,
            };
            if let Some(lease) = lease {
                conn.capture_pass(&lease, false).await;
            }
        });
    }

    /// Notes what the container's filesystem already holds when the session gets it
    /// (its own start-up, an earlier session of a returning source), so that only
    /// what this session changes is captured. Runs before the session's first
    /// process starts.
    pub(super) async fn capture_baseline(&self, lease: &Lease) {
        if self.services.capture.is_none() {
            return;
        }
        let _pass = self.capture_lock.lock().await;
        let listed = tokio::time::timeout(
            BASELINE_TIMEOUT,
            self.services
                .sandbox
                .changed_files(lease, MAX_CHANGED_PATHS),
        )
        .await;
        match listed {
            Ok(Ok(files)) => {
                let mut seen = self.files();
                for file in files {
                    seen.changed(&file.path, file.size, &file.modified);
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(target: "hermes::capture", session_id = %self.context.session, %error, "cannot list the container's files before the session");
            }
            Err(_) => {
                tracing::warn!(target: "hermes::capture", session_id = %self.context.session, "listing the container's files before the session timed out");
            }
        }
    }

    /// The last pass, before the container is stopped: also `/dev/shm` (read by a
    /// process in the container, which no one is left to see).
    pub(super) async fn final_capture(&self, lease: &Lease) {
        if self.services.capture.is_none() {
            return;
        }
        if tokio::time::timeout(FINAL_PASS_TIMEOUT, self.capture_pass(lease, true))
            .await
            .is_err()
        {
            self.emit_session_error(
                "capture",
                &format!(
                    "the final file capture took longer than {} s and was cut short",
                    FINAL_PASS_TIMEOUT.as_secs()
                ),
            );
        }
    }

    /// One pass: changed files of the container's filesystem, then files only the
    /// host's `/proc` (or, at the end, a process in the container) can reach.
    pub(super) async fn capture_pass(&self, lease: &Lease, last: bool) {
        let Some(capture) = &self.services.capture else {
            return;
        };
        let limits = &capture.limits;
        // One pass at a time per session.
        let _pass = self.capture_lock.lock().await;
        let sandbox = &self.services.sandbox;
        match sandbox.changed_files(lease, MAX_CHANGED_PATHS).await {
            Ok(changed) => {
                for file in changed {
                    if limits.ignores(&file.path)
                        || !self.files().changed(&file.path, file.size, &file.modified)
                    {
                        continue;
                    }
                    if file.size > limits.max_file_size {
                        self.skip(&file.path, SkipReason::TooLarge, Some(file.size));
                        continue;
                    }
                    if !self.files().has_room(limits) {
                        self.skip(&file.path, SkipReason::TooMany, Some(file.size));
                        continue;
                    }
                    match sandbox
                        .read_file(lease, &file.path, limits.max_file_size)
                        .await
                    {
                        Ok(FileRead::Content(data)) => self.keep(&file.path, data).await,
                        Ok(FileRead::TooLarge(size)) => {
                            self.skip(&file.path, SkipReason::TooLarge, Some(size));
                        }
                        // Gone since the diff, or not a regular file after all.
                        Ok(FileRead::Unavailable) => {}
                        Err(error) => {
                            tracing::warn!(target: "hermes::capture", session_id = %self.context.session, path = %escape_untrusted(&file.path), %error, "cannot read a file of the container");
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(target: "hermes::capture", session_id = %self.context.session, %error, "cannot list the container's changed files");
                if last {
                    self.emit_session_error("capture", &error.to_string());
                }
            }
        }
        let room = {
            let files = self.files();
            limits
                .max_files_per_session
                .saturating_sub(files.captured.len())
        };
        match sandbox
            .volatile_files(lease, !last, room.max(1), limits.max_file_size)
            .await
        {
            Ok(found) => {
                for file in found {
                    if limits.ignores(&file.path) {
                        continue;
                    }
                    match file.content {
                        FileRead::Content(data) => {
                            if self.files().has_room(limits) {
                                self.keep(&file.path, data).await;
                            } else {
                                self.skip(&file.path, SkipReason::TooMany, Some(data.len() as u64));
                            }
                        }
                        FileRead::TooLarge(size) => {
                            if self.files().changed(&file.path, size, "volatile") {
                                self.skip(&file.path, SkipReason::TooLarge, Some(size));
                            }
                        }
                        FileRead::Unavailable => {}
                    }
                }
            }
            Err(error) => {
                tracing::debug!(target: "hermes::capture", session_id = %self.context.session, %error, "cannot look for deleted or /dev/shm files");
            }
        }
    }

    fn files(&self) -> std::sync::MutexGuard<'_, crate::capture::SessionFiles> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores one file's content and reports it.
    async fn keep(&self, path: &str, data: Bytes) {
        let Some(capture) = &self.services.capture else {
            return;
        };
        let sha = crate::capture::sha256_hex(&data);
        if !self.files().first_copy(path, &sha) {
            return;
        }
        let store = Arc::clone(&capture.store);
        let size = data.len() as u64;
        let stored = tokio::task::spawn_blocking(move || store.put(&data)).await;
        let stored = match stored {
            Ok(Ok(stored)) => stored,
            Ok(Err(StoreError::Full { .. })) => {
                self.skip(path, SkipReason::StoreFull, Some(size));
                return;
            }
            Ok(Err(error)) => {
                tracing::error!(target: "hermes::capture", session_id = %self.context.session, %error, "cannot store a captured file");
                self.skip(path, SkipReason::StoreError, Some(size));
                return;
            }
            Err(_) => return,
        };
        let outfile = stored.path.display().to_string();
        let (upload, url) = {
            let files = self.files();
            (
                files.upload_name(path).map(str::to_owned),
                files.url(path).map(str::to_owned),
            )
        };
        let kind = if upload.is_some() {
            FileKind::Upload
        } else {
            FileKind::Download
        };
        let event = match &upload {
            Some(filename) => EventBuilder::connection(EventId::FileUpload, &self.context)
                .field("filename", filename.clone())
                .message(format!(
                    "Uploaded file \"{}\" to {outfile}",
                    escape_untrusted(filename)
                )),
            None => {
                let event = EventBuilder::connection(EventId::FileDownload, &self.context);
                match &url {
                    Some(url) => event.field("url", url.clone()).message(format!(
                        "Downloaded URL ({}) with SHA-256 {} to {outfile}",
                        escape_untrusted(url),
                        stored.sha256
                    )),
                    None => event.message(format!(
                        "Saved file {} with SHA-256 {} to {outfile}",
                        escape_untrusted(path),
                        stored.sha256
                    )),
                }
            }
        };
        self.services.events.emit(
            event
                .field("destfile", path)
                .field("outfile", outfile)
                .field("shasum", stored.sha256.clone())
                .field("size", size)
                .field("duplicate", stored.duplicate),
        );
        tracing::info!(target: "hermes::capture", session_id = %self.context.session, path = %escape_untrusted(path), sha256 = %stored.sha256, size, kind = kind.as_str(), duplicate = stored.duplicate, "file captured");
        self.files().captured.push(CapturedFile {
            time: crate::time::now_iso8601(),
            kind,
            destfile: path.to_owned(),
            shasum: stored.sha256,
            size,
            url,
            filename: upload,
            duplicate: stored.duplicate,
        });
        self.metadata_changed();
    }

    fn skip(&self, path: &str, reason: SkipReason, size: Option<u64>) {
        if !self.files().report_skip() {
            return;
        }
        let mut event = EventBuilder::connection(EventId::FileSkipped, &self.context)
            .field("destfile", path)
            .field("reason", reason.as_str())
            .message(format!(
                "File {} not captured: {}",
                escape_untrusted(path),
                reason.as_str()
            ));
        if let Some(size) = size {
            event = event.field("size", size);
        }
        self.services.events.emit(event);
    }
}
