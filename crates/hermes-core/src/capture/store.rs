//! The content-addressed store of captured files: `<dir>/<sha256>`, written once.
//!
//! A file is written to a temporary name and renamed into place, so the store never
//! holds a partial file under a hash name, and the same content from many sessions
//! is stored once. The total size is capped: past it new content is refused (with
//! an event) rather than filling the disk.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::RngExt;
use sha2::{Digest, Sha256};

/// A file put into the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// SHA-256 of the content, lowercase hex (also the file name).
    pub sha256: String,
    /// Where it is.
    pub path: PathBuf,
    /// The store had it already.
    pub duplicate: bool,
}

/// Why content was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store reached its size limit.
    #[error("the file store is full ({used} of {max} bytes)")]
    Full {
        /// Bytes stored.
        used: u64,
        /// The limit.
        max: u64,
    },
    /// The disk said no.
    #[error("cannot write to the file store {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
}

/// The store, shared by all sessions.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    max_total: u64,
    used: Mutex<u64>,
}

/// SHA-256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn is_hash_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

impl FileStore {
    /// Opens (creating) the store at `dir`, counting what it holds already.
    pub fn open(dir: &Path, max_total: u64) -> Result<FileStore, StoreError> {
        let io_error = |source| StoreError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_error)?;
        let mut used = 0;
        for entry in std::fs::read_dir(dir).map_err(io_error)?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if is_hash_name(&name) {
                used += entry.metadata().map(|m| m.len()).unwrap_or(0);
            } else if name.starts_with(".tmp-") {
                // Left by a crash half way through a write.
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(FileStore {
            dir: dir.to_owned(),
            max_total,
            used: Mutex::new(used),
        })
    }

    /// Bytes stored.
    pub fn used(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `data` (blocking I/O: call from a blocking context).
    pub fn put(&self, data: &[u8]) -> Result<Stored, StoreError> {
        let sha256 = sha256_hex(data);
        let path = self.dir.join(&sha256);
        if path.exists() {
            return Ok(Stored {
                sha256,
                path,
                duplicate: true,
            });
        }
        let size = data.len() as u64;
        {
            let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            if used.saturating_add(size) > self.max_total {
                return Err(StoreError::Full {
                    used: *used,
                    max: self.max_total,
                });
            }
            // Reserved now, so concurrent sessions cannot overshoot together.
            *used += size;
        }
        let result = self.write_new(&path, data);
        if result.is_err() {
            let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            *used = used.saturating_sub(size);
        }
        result.map(|duplicate| Stored {
            sha256,
            path,
            duplicate,
        })
    }

    /// Writes a new hash file; Ok(true) when another session stored it meanwhile.
    fn write_new(&self, path: &Path, data: &[u8]) -> Result<bool, StoreError> {
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            rand::rng().random::<u64>()
        ));
        let io_error = |source| StoreError::Io {
            path: tmp.clone(),
            source,
        };
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut file| file.write_all(data));
        if let Err(error) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_error(error));
        }
        if path.exists() {
            let _ = std::fs::remove_file(&tmp);
            return Ok(true);
        }
        std::fs::rename(&tmp, path).map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            StoreError::Io {
                path: path.to_owned(),
                source,
            }
        })?;
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_stored_once_under_its_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path(), 1 << 20).expect("open");
        let first = store.put(b"hello\n").expect("put");
        assert_eq!(
            first.sha256,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        assert!(!first.duplicate);
        assert_eq!(std::fs::read(&first.path).expect("read"), b"hello\n");
        let second = store.put(b"hello\n").expect("put");
        assert!(second.duplicate);
        assert_eq!(store.used(), 6);
    }

    #[test]
    fn the_size_limit_refuses_new_content_and_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path(), 10).expect("open");
        store.put(b"12345678").expect("fits");
        assert!(matches!(
            store.put(b"abc"),
            Err(StoreError::Full { used: 8, max: 10 })
        ));
        // Known content is still recognised when the store is full.
        assert!(store.put(b"12345678").expect("duplicate").duplicate);
        std::fs::write(dir.path().join(".tmp-1-2"), b"half").expect("write");
        let reopened = FileStore::open(dir.path(), 10).expect("open");
        assert_eq!(reopened.used(), 8);
        assert!(
            !dir.path().join(".tmp-1-2").exists(),
            "crash leftovers removed"
        );
    }
}
