//! Metadata files that could not be written (a full disk) are kept, newest version per
//! file, and written again on a timer until they land, so a session that ended while
//! the disk was full still gets its final metadata once space returns.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::metadata::write_atomically;
use super::replace::{Replace, replace_file};

/// How often refused files are tried again.
pub const METADATA_RETRY: Duration = Duration::from_secs(1);

/// Most bytes of refused files kept; past it a file is given up (and logged).
pub const MAX_PENDING_BYTES: usize = 64 << 20;

/// Writes metadata files, keeping refused ones to write later.
#[derive(Debug, Default)]
pub struct MetadataWriter {
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    files: HashMap<PathBuf, Vec<u8>>,
    bytes: usize,
    /// A retry task runs.
    retrying: bool,
}

impl Pending {
    fn remove(&mut self, path: &Path) {
        if let Some(old) = self.files.remove(path) {
            self.bytes -= old.len();
        }
    }
}

impl MetadataWriter {
    /// Writes `text` to `path` (atomically, as `how` says). On failure the text is
    /// kept, replacing an older version for the same path, and retried every
    /// [`METADATA_RETRY`] (when called inside a tokio runtime) to last.
    pub fn write(self: &Arc<Self>, path: &Path, text: Vec<u8>, how: Replace) -> io::Result<()> {
        let mut pending = self.lock();
        // A newer version replaces whatever waited; the lock keeps versions in order.
        pending.remove(path);
        let result = replace_file(path, &text, how);
        if result.is_err() {
            if pending.bytes + text.len() > MAX_PENDING_BYTES {
                tracing::error!(target: "hermes::record", path = %path.display(), "metadata write failed and the retry backlog is full; this version is lost");
            } else {
                pending.bytes += text.len();
                pending.files.insert(path.to_owned(), text);
                if !pending.retrying
                    && let Ok(runtime) = tokio::runtime::Handle::try_current()
                {
                    pending.retrying = true;
                    let writer = Arc::clone(self);
                    runtime.spawn(async move {
                        loop {
                            tokio::time::sleep(METADATA_RETRY).await;
                            if !writer.retry() {
                                return;
                            }
                        }
                    });
                }
            }
        }
        result
    }

    /// Tries every kept file once. Returns whether some are still kept (the retry
    /// task ends when none are).
    pub fn retry(&self) -> bool {
        let mut pending = self.lock();
        let mut written = Vec::new();
        for (path, text) in &pending.files {
            if write_atomically(path, text).is_ok() {
                written.push(path.clone());
            }
        }
        for path in &written {
            pending.remove(path);
            tracing::info!(target: "hermes::record", path = %path.display(), "metadata written after an earlier failure");
        }
        let left = !pending.files.is_empty();
        if !left {
            pending.retrying = false;
        }
        left
    }

    /// Files waiting to be written.
    pub fn pending(&self) -> usize {
        self.lock().files.len()
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // The map stays valid whatever panicked while holding it.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_file_lands_once_writing_works_with_its_newest_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A file where the directory should be: every write fails until it goes.
        let blocker = dir.path().join("2026");
        std::fs::write(&blocker, "x").expect("blocker");
        let path = blocker.join("s.json");
        let writer = Arc::new(MetadataWriter::default());
        assert!(
            writer
                .write(&path, b"{\"v\":1}\n".to_vec(), Replace::Durable)
                .is_err()
        );
        assert!(
            writer
                .write(&path, b"{\"v\":2}\n".to_vec(), Replace::Interim)
                .is_err()
        );
        assert_eq!(writer.pending(), 1);
        tokio::time::sleep(METADATA_RETRY * 2).await;
        assert_eq!(writer.pending(), 1, "still refused");
        std::fs::remove_file(&blocker).expect("unblock");
        // Only the retry task can write it now.
        let started = std::time::Instant::now();
        while writer.pending() > 0 {
            assert!(
                started.elapsed() < METADATA_RETRY * 5,
                "not retried in time"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            std::fs::read_to_string(&path).expect("written"),
            "{\"v\":2}\n"
        );
        assert!(!blocker.join("s.json.tmp").exists());
    }

    #[test]
    fn a_later_successful_write_replaces_the_kept_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("d");
        std::fs::write(&blocker, "x").expect("blocker");
        let path = blocker.join("s.json");
        let writer = Arc::new(MetadataWriter::default());
        assert!(
            writer
                .write(&path, b"old".to_vec(), Replace::Durable)
                .is_err()
        );
        std::fs::remove_file(&blocker).expect("unblock");
        writer
            .write(&path, b"new".to_vec(), Replace::Interim)
            .expect("written");
        assert_eq!(writer.pending(), 0);
        assert!(!writer.retry());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new");
    }
}
