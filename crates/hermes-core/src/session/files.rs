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
/// Longest the start-of-session listing may hold the first pass up.
const BASELINE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most changed paths looked at per pass.
const MAX_CHANGED_PATHS: usize = 10_000;

/// `YYYY-MM-DDTHH:MM:SS.ffffff` of an RFC 3339 UTC time (`...Z`, any number of
/// fraction digits), comparable as text with [`crate::time::iso8601_micros`]; None for
/// other offsets.
fn mtime_key(rfc3339: &str) -> Option<String> {
    let body = rfc3339.strip_suffix('Z')?;
    let (seconds, fraction) = body.split_once('.').unwrap_or((body, ""));
    if seconds.len() != 19 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut micros: String = fraction.chars().take(6).collect();
    while micros.len() < 6 {
        micros.push('0');
    }
    Some(format!("{seconds}.{micros}"))
}

/// How thorough a capture pass is: the sandbox's own levels (while the session runs,
/// nothing started in the box and only new paths read; once it ended and the box
/// lingers, files seen before looked at again; before the box stops, `/dev/shm` too).
pub(super) use crate::sandbox::VolatileScan as Pass;

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
            // Its walk of the box stays out of the way of the keystrokes' echo.
            conn.until_typing_pauses().await;
            conn.capture_scheduled
                .store(false, std::sync::atomic::Ordering::Release);
            let lease = match &*conn.lease.borrow() {
                LeaseState::Ready(lease) => Some(lease.clone()),
                _ => None,
            };
            if let Some(lease) = lease {
                conn.capture_pass(&lease, Pass::Running).await;
            }
        });
    }

    /// Notes what the container's filesystem already held when the session got it
    /// (its own start-up, an earlier session of a returning source), so that only
    /// what this session changes is captured. Runs in the background while the shell
    /// starts (the engine's diff takes a while), holding the capture lock that every
    /// pass waits for; files modified after the session began are never counted as
    /// already there.
    pub(super) async fn start_baseline(self: &Arc<Self>, lease: &Lease) {
        if self.services.capture.is_none() {
            return;
        }
        let guard = Arc::clone(&self.capture_lock).lock_owned().await;
        let conn = Arc::clone(self);
        let lease = lease.clone();
        tokio::spawn(async move {
            let _pass = guard;
            // The engine's diff holds the container while it runs: not before the
            // session's first process is up, so it never delays the shell.
            let mut started = conn.process_started.subscribe();
            let mut terminated = conn.terminated.subscribe();
            tokio::select! {
                _ = started.wait_for(|s| *s) => {}
                _ = terminated.wait_for(|t| t.is_some()) => {}
            }
            let began = {
                let state = conn.state();
                let start = state.metadata.start_time;
                crate::time::iso8601_micros(
                    state.files_since.map_or(start, |since| since.min(start)),
                )
            };
            let sandbox = &conn.services.sandbox;
            let listed = tokio::time::timeout(BASELINE_TIMEOUT, async {
                let paths = sandbox.changed_paths(&lease, MAX_CHANGED_PATHS).await?;
                sandbox.stat_files(&lease, paths).await
            })
            .await;
            match listed {
                Ok(Ok(files)) => {
                    let mut seen = conn.files();
                    for file in files {
                        // Whole seconds: a file of the session's first second is the
                        // session's.
                        let older =
                            mtime_key(&file.modified).is_some_and(|key| key[..19] < began[..19]);
                        if older {
                            seen.changed(&file.path, file.size, &file.modified);
                        }
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(target: "hermes::capture", session_id = %conn.context.session, %error, "cannot list the container's files at the start");
                }
                Err(_) => {
                    tracing::warn!(target: "hermes::capture", session_id = %conn.context.session, "listing the container's files at the start timed out");
                }
            }
        });
    }

    /// The last pass, before the container is stopped: also `/dev/shm` (read by a
    /// process in the container, which no one is left to see).
    pub(super) async fn final_capture(&self, lease: &Lease, pass: Pass) {
        if self.services.capture.is_none() {
            return;
        }
        if tokio::time::timeout(FINAL_PASS_TIMEOUT, self.capture_pass(lease, pass))
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
    pub(super) async fn capture_pass(&self, lease: &Lease, pass: Pass) {
        let last = pass != Pass::Running;
        let Some(capture) = &self.services.capture else {
            return;
        };
        let limits = &capture.limits;
        // One pass at a time per session.
        let _pass = self.capture_lock.lock().await;
        let started = std::time::Instant::now();
        let captured_before = self.files().captured.len();
        let sandbox = &self.services.sandbox;
        let listed = async {
            let paths: Vec<String> = sandbox
                .changed_paths(lease, MAX_CHANGED_PATHS)
                .await?
                .into_iter()
                .filter(|path| !limits.ignores(path))
                .collect();
            let (known, new): (Vec<String>, Vec<String>) = {
                let files = self.files();
                paths.into_iter().partition(|p| files.seen(p))
            };
            // Files seen before are looked at again only at the end (they may have
            // changed since); while the session runs, only new paths are read.
            let mut wanted = new;
            if last {
                let stats = sandbox.stat_files(lease, known).await?;
                let files = self.files();
                wanted.extend(
                    stats
                        .into_iter()
                        .filter(|f| files.differs(&f.path, f.size, &f.modified))
                        .map(|f| f.path),
                );
            }
            let found = sandbox
                .read_files(lease, wanted.clone(), limits.max_file_size, true)
                .await?;
            Ok::<_, crate::sandbox::SandboxError>((wanted, found))
        };
        match listed.await {
            Ok((wanted, found)) => {
                // What is not a regular file (a symlink, an empty directory, a socket)
                // is not looked up again at every pass: the last pass compares it.
                {
                    let read: std::collections::HashSet<&str> =
                        found.iter().map(|(file, _)| file.path.as_str()).collect();
                    let mut files = self.files();
                    for path in wanted.iter().filter(|p| !read.contains(p.as_str())) {
                        files.not_a_file(path);
                    }
                }
                for (file, content) in found {
                    if !self.files().changed(&file.path, file.size, &file.modified) {
                        continue;
                    }
                    match content {
                        FileRead::TooLarge(size) => {
                            self.skip(&file.path, SkipReason::TooLarge, Some(size));
                        }
                        _ if !self.files().has_room(limits) => {
                            self.skip(&file.path, SkipReason::TooMany, Some(file.size));
                        }
                        FileRead::Content(data) => self.keep(&file.path, data).await,
                        FileRead::Unavailable => {}
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
            .volatile_files(lease, pass, room.max(1), limits.max_file_size)
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
        let captured = self.files().captured.len() - captured_before;
        tracing::info!(target: "hermes::capture", session_id = %self.context.session, last, captured, elapsed_ms = started.elapsed().as_millis() as u64, "capture pass done");
    }

    /// The fetches the session's commands asked for (shared, for its box's gateway).
    pub(super) fn fetch_hints(&self) -> crate::capture::FetchHints {
        self.files().fetches.clone()
    }

    pub(super) fn files(&self) -> std::sync::MutexGuard<'_, crate::capture::SessionFiles> {
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
            (files.upload_name(path).map(str::to_owned), files.url(path))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_times_compare_with_session_times() {
        assert_eq!(
            mtime_key("2026-11-23T14:59:18.937206722Z").as_deref(),
            Some("2026-11-23T14:59:18.937206")
        );
        assert_eq!(
            mtime_key("2026-11-23T14:59:18.9Z").as_deref(),
            Some("2026-11-23T14:59:18.900000")
        );
        assert_eq!(
            mtime_key("2026-11-23T14:59:18Z").as_deref(),
            Some("2026-11-23T14:59:18.000000")
        );
        assert_eq!(mtime_key("2026-11-23T14:59:18+01:00"), None);
        assert_eq!(mtime_key("junk"), None);
        let session = "2026-11-23T14:59:19.000001Z";
        assert!(mtime_key("2026-11-23T14:59:18.999Z").is_some_and(|k| k.as_str() < &session[..26]));
    }
}
