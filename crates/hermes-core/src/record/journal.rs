//! The open-session journal: one small file per logged-in session, written at login
//! and removed once the session is closed (final metadata and `cowrie.session.closed`
//! written). What a killed Hermes leaves in it is exactly the sessions it never
//! closed, so the next start finds them without scanning the recordings. Entries are
//! not fsynced: they are for a killed process, whose writes the kernel keeps.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::ids::SessionId;

/// The journal's directory inside the recordings directory (not a `YYYY` directory, so
/// `hermes sessions` and `replay` never look into it).
pub const JOURNAL_DIR: &str = ".open";

/// At most this many entries are read at one start; any more wait for the next one.
const MAX_ENTRIES: usize = 65_536;

/// An entry is at most this long (it holds two addresses and a path).
const MAX_ENTRY_BYTES: u64 = 4096;

/// What the journal keeps of an open session: enough to close it without its process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenSession {
    /// Client address.
    pub src_ip: String,
    /// Client port.
    pub src_port: u16,
    /// Our address.
    pub dst_ip: String,
    /// Our port.
    pub dst_port: u16,
    /// Connection start, Unix microseconds.
    pub start_us: u64,
    /// The metadata file, relative to the recordings directory.
    pub metadata: PathBuf,
}

/// A journal entry found at startup.
#[derive(Debug)]
pub struct JournalEntry {
    /// The session (the entry's file name).
    pub session: SessionId,
    /// What the entry says; None when it cannot be read.
    pub open: Option<OpenSession>,
    /// When the entry was written.
    pub written: Option<SystemTime>,
}

/// A journal operation that failed, with the file it was about.
#[derive(Debug, thiserror::Error)]
#[error("open-session journal {path}: {source}")]
pub struct JournalError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

fn context(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError {
        path: path.to_path_buf(),
        source,
    }
}

/// The journal under a recordings directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// The journal of the recordings directory `recordings`.
    pub fn new(recordings: &Path) -> Self {
        Journal {
            dir: recordings.join(JOURNAL_DIR),
        }
    }

    fn entry_path(&self, session: SessionId) -> PathBuf {
        self.dir.join(format!("{session}.open"))
    }

    /// Records `session` as open (temp file, then rename: an entry is whole or absent,
    /// and a failed write leaves no temp file).
    pub fn opened(&self, session: SessionId, open: &OpenSession) -> Result<(), JournalError> {
        std::fs::create_dir_all(&self.dir).map_err(context(&self.dir))?;
        let path = self.entry_path(session);
        let tmp = self.dir.join(format!("{session}.tmp"));
        let bytes = serde_json::to_vec(open).map_err(|e| context(&tmp)(io::Error::other(e)))?;
        let written = std::fs::File::create(&tmp)
            .and_then(|mut file| file.write_all(&bytes))
            .map_err(context(&tmp))
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(context(&path)));
        if written.is_err() {
            // A full disk leaves no empty or half entry behind.
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// `session` is closed: its entry goes (absent already is fine).
    pub fn closed(&self, session: SessionId) -> Result<(), JournalError> {
        let path = self.entry_path(session);
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(context(&path)(error)),
            _ => Ok(()),
        }
    }

    /// The sessions still recorded as open (at most [`MAX_ENTRIES`]). Temp files a
    /// killed process left half-written are removed.
    pub fn entries(&self) -> Result<Vec<JournalEntry>, JournalError> {
        let listing = match std::fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(context(&self.dir)(error)),
        };
        let mut entries = Vec::new();
        for item in listing {
            if entries.len() >= MAX_ENTRIES {
                break;
            }
            let item = item.map_err(context(&self.dir))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(stem) = name.strip_suffix(".tmp")
                && SessionId::parse(stem).is_some()
            {
                let _ = std::fs::remove_file(item.path());
                continue;
            }
            let Some(session) = name.strip_suffix(".open").and_then(SessionId::parse) else {
                continue;
            };
            let path = item.path();
            entries.push(JournalEntry {
                session,
                open: read_entry(&path),
                written: std::fs::metadata(&path).and_then(|m| m.modified()).ok(),
            });
        }
        Ok(entries)
    }
}

fn read_entry(path: &Path) -> Option<OpenSession> {
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(file, MAX_ENTRY_BYTES), &mut bytes).ok()?;
    let open: OpenSession = serde_json::from_slice(&bytes).ok()?;
    // Only a path below the recordings directory is followed.
    open.metadata
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
        .then_some(open)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> OpenSession {
        OpenSession {
            src_ip: "198.51.100.7".into(),
            src_port: 50000,
            dst_ip: "203.0.113.5".into(),
            dst_port: 22,
            start_us: 1_795_000_000_000_000,
            metadata: PathBuf::from("2026/11/18/0123456789ab.json"),
        }
    }

    fn id(text: &str) -> SessionId {
        SessionId::parse(text).expect("session id")
    }

    #[test]
    fn entries_are_the_sessions_opened_and_not_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::new(dir.path());
        assert!(journal.entries().expect("empty").is_empty());
        journal
            .opened(id("0123456789ab"), &sample())
            .expect("opened");
        journal
            .opened(id("ba9876543210"), &sample())
            .expect("opened");
        journal.closed(id("ba9876543210")).expect("closed");
        journal
            .closed(id("ffffffffffff"))
            .expect("never opened is fine");
        let entries = journal.entries().expect("entries");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].session, id("0123456789ab"));
        assert_eq!(entries[0].open.as_ref(), Some(&sample()));
        assert!(entries[0].written.is_some());
    }

    #[test]
    fn half_written_and_foreign_files_are_not_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::new(dir.path());
        let journal_dir = dir.path().join(JOURNAL_DIR);
        std::fs::create_dir_all(&journal_dir).expect("dir");
        std::fs::write(journal_dir.join("0123456789ab.tmp"), b"{\"src_").expect("tmp");
        std::fs::write(journal_dir.join("notes.open"), b"{}").expect("foreign");
        std::fs::write(journal_dir.join("0123456789ab.open"), b"garbage").expect("bad");
        let mut escaping = sample();
        escaping.metadata = PathBuf::from("../../etc/passwd");
        journal
            .opened(id("ba9876543210"), &escaping)
            .expect("opened");
        let mut entries = journal.entries().expect("entries");
        entries.sort_by_key(|e| e.session);
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(|e| e.open.is_none()), "{entries:?}");
        assert!(!journal_dir.join("0123456789ab.tmp").exists());
    }
}
