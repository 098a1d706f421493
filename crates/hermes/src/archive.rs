//! The recordings directory (`recording.output_dir`): finding sessions' metadata files
//! and casts, and reading the metadata leniently.
//!
//! Layout: `YYYY/MM/DD/<session>.json` (the UTC date the session started) with the casts
//! beside it, `<session>.cast` for the first channel and `<session>-<n>.cast` for
//! channel `n`; older recordings sit flat in the directory itself. Every field of a
//! metadata file may be missing or null.

use std::fs;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use crate::source::parse_addr;
use crate::when::UtcTime;

/// Largest metadata file read; bigger ones are skipped.
pub const MAX_METADATA_BYTES: u64 = 16 << 20;

/// Whether `text` is a session id: 12 lowercase hex digits.
pub fn is_session_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The file name of a session's recording of `channel`.
pub fn cast_name(session: &str, channel: u32) -> String {
    match channel {
        0 => format!("{session}.cast"),
        n => format!("{session}-{n}.cast"),
    }
}

/// A recordings directory.
#[derive(Debug, Clone)]
pub struct Archive {
    root: PathBuf,
}

/// A directory holding a session's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The directory.
    pub dir: PathBuf,
    /// The session id.
    pub session: String,
}

impl Located {
    /// Where the session's metadata file is (or would be).
    pub fn metadata_path(&self) -> PathBuf {
        self.dir.join(format!("{}.json", self.session))
    }

    /// The channels that have a cast file beside the metadata, in order.
    pub fn channels(&self) -> Vec<u32> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut channels: Vec<u32> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name();
                let stem = name
                    .to_str()?
                    .strip_suffix(".cast")?
                    .strip_prefix(&self.session)?;
                match stem {
                    "" => Some(0),
                    n => n.strip_prefix('-')?.parse::<u32>().ok().filter(|n| *n > 0),
                }
            })
            .collect();
        channels.sort_unstable();
        channels
    }
}

/// A day directory (`YYYY/MM/DD`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct DayDir {
    /// Days since the epoch.
    day: i64,
    path: PathBuf,
}

impl Archive {
    /// The recordings directory at `root`, which must exist.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        let meta = fs::metadata(root)?;
        if !meta.is_dir() {
            return Err(std::io::Error::other("not a directory"));
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The metadata files of sessions whose directory date passes `keep_day` (days since
    /// the epoch), plus every flat one; unreadable subdirectories are reported to `warn`.
    pub fn metadata_files(
        &self,
        keep_day: impl Fn(i64) -> bool,
        warn: &mut dyn FnMut(String),
    ) -> std::io::Result<Vec<PathBuf>> {
        let mut files = session_files(&self.root, "json")?;
        for day in self.day_dirs(warn)? {
            if !keep_day(day.day) {
                continue;
            }
            match session_files(&day.path, "json") {
                Ok(found) => files.extend(found),
                Err(error) => warn(format!("{}: {error}; skipped", day.path.display())),
            }
        }
        Ok(files)
    }

    /// Reads every metadata file [`Archive::metadata_files`] finds; those that cannot be
    /// read or are not JSON objects are reported to `warn` and skipped.
    pub fn load_all(
        &self,
        keep_day: impl Fn(i64) -> bool,
        warn: &mut dyn FnMut(String),
    ) -> std::io::Result<Vec<SessionRecord>> {
        let files = self.metadata_files(keep_day, warn)?;
        Ok(files
            .into_iter()
            .filter_map(|path| match SessionRecord::read(&path) {
                Ok(record) => Some(record),
                Err(reason) => {
                    warn(format!("{}: {reason}; skipped", path.display()));
                    None
                }
            })
            .collect())
    }

    /// The directory holding `session`'s metadata or first cast: the flat directory
    /// first, then the day directories, newest first.
    pub fn locate(
        &self,
        session: &str,
        warn: &mut dyn FnMut(String),
    ) -> std::io::Result<Option<Located>> {
        let candidates = std::iter::once(self.root.clone())
            .chain(self.day_dirs(warn)?.into_iter().map(|day| day.path));
        for dir in candidates {
            let json = dir.join(format!("{session}.json"));
            let cast = dir.join(cast_name(session, 0));
            if json.is_file() || cast.is_file() {
                return Ok(Some(Located {
                    dir,
                    session: session.to_owned(),
                }));
            }
        }
        Ok(None)
    }

    /// The cast of `channel` for a located session: the file beside the metadata, else
    /// the entry of the metadata's `recordings` (or `recording`) with that name.
    pub fn cast_for(
        &self,
        located: &Located,
        record: Option<&SessionRecord>,
        channel: u32,
    ) -> Option<PathBuf> {
        let name = cast_name(&located.session, channel);
        let beside = located.dir.join(&name);
        if beside.is_file() {
            return Some(beside);
        }
        record?
            .recordings()
            .into_iter()
            .filter(|relative| relative.file_name().is_some_and(|n| n == name.as_str()))
            .map(|relative| self.root.join(relative))
            .find(|path| path.is_file())
    }

    /// `YYYY/MM/DD` directories, newest first.
    fn day_dirs(&self, warn: &mut dyn FnMut(String)) -> std::io::Result<Vec<DayDir>> {
        let mut days = Vec::new();
        for (year, year_path) in numbered_dirs(&self.root, 4)? {
            let months = match numbered_dirs(&year_path, 2) {
                Ok(months) => months,
                Err(error) => {
                    warn(format!("{}: {error}; skipped", year_path.display()));
                    continue;
                }
            };
            for (month, month_path) in months {
                let month_days = match numbered_dirs(&month_path, 2) {
                    Ok(month_days) => month_days,
                    Err(error) => {
                        warn(format!("{}: {error}; skipped", month_path.display()));
                        continue;
                    }
                };
                for (day, path) in month_days {
                    if (1..=12).contains(&month) && (1..=31).contains(&day) {
                        days.push(DayDir {
                            day: crate::when::days_from_civil(year, month, day),
                            path,
                        });
                    }
                }
            }
        }
        days.sort_by(|a, b| b.day.cmp(&a.day).then_with(|| b.path.cmp(&a.path)));
        Ok(days)
    }
}

/// Subdirectories of `dir` named with exactly `digits` digits, with their number.
fn numbered_dirs(dir: &Path, digits: usize) -> std::io::Result<Vec<(i64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() != digits || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let path = entry.path();
        if let (Ok(number), true) = (name.parse::<i64>(), path.is_dir()) {
            found.push((number, path));
        }
    }
    Ok(found)
}

/// Files `<session>.<extension>` directly in `dir`.
fn session_files(dir: &Path, extension: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_session = name
            .strip_suffix(extension)
            .and_then(|stem| stem.strip_suffix('.'))
            .is_some_and(is_session_id);
        if is_session && entry.path().is_file() {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// One session's metadata document, read leniently.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    /// The metadata file.
    pub path: PathBuf,
    /// The document as read.
    pub doc: Map<String, Value>,
}

impl SessionRecord {
    /// Reads a metadata file; the error says why it is unusable.
    pub fn read(path: &Path) -> Result<Self, String> {
        let file = fs::File::open(path).map_err(|error| format!("cannot open ({error})"))?;
        let mut bytes = Vec::new();
        file.take(MAX_METADATA_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|error| format!("cannot read ({error})"))?;
        if bytes.len() as u64 > MAX_METADATA_BYTES {
            return Err(format!("larger than {MAX_METADATA_BYTES} bytes"));
        }
        Self::parse(path, &bytes)
    }

    /// Parses a metadata document read from `path`.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, String> {
        match serde_json::from_slice(bytes) {
            Ok(Value::Object(doc)) => Ok(Self {
                path: path.to_path_buf(),
                doc,
            }),
            Ok(_) => Err("not a JSON object".to_owned()),
            Err(error) => Err(format!("not valid JSON ({error})")),
        }
    }

    /// The session id: the `session` field, else the file name.
    pub fn id(&self) -> String {
        self.text("session").map(str::to_owned).unwrap_or_else(|| {
            self.path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
    }

    /// A string field.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.doc.get(key).and_then(Value::as_str)
    }

    /// An array field; empty when missing or not an array.
    pub fn list(&self, key: &str) -> &[Value] {
        self.doc
            .get(key)
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// `start_time`.
    pub fn start(&self) -> Option<UtcTime> {
        self.text("start_time").and_then(UtcTime::parse_rfc3339)
    }

    /// `end_time`.
    pub fn end(&self) -> Option<UtcTime> {
        self.text("end_time").and_then(UtcTime::parse_rfc3339)
    }

    /// `src_ip`, IPv4-mapped addresses as IPv4.
    pub fn src_ip(&self) -> Option<IpAddr> {
        self.text("src_ip").and_then(parse_addr)
    }

    /// `src_port`.
    pub fn src_port(&self) -> Option<u64> {
        self.doc.get("src_port").and_then(Value::as_u64)
    }

    /// Whether the session is still open (or Hermes died before closing it).
    pub fn is_running(&self) -> bool {
        self.text("end_reason") == Some("running")
    }

    /// `duration` in seconds, else the time from `start_time` to `end_time`.
    pub fn duration(&self) -> Option<f64> {
        self.doc
            .get("duration")
            .and_then(Value::as_f64)
            .or_else(|| Some(self.end()?.seconds_since(self.start()?)))
            .filter(|d| d.is_finite() && *d >= 0.0)
    }

    /// `recordings` (else `recording`) as paths relative to the recordings directory;
    /// absolute paths and `..` are left out.
    pub fn recordings(&self) -> Vec<PathBuf> {
        let listed: Vec<&str> = self
            .list("recordings")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let names = if listed.is_empty() {
            self.text("recording").into_iter().collect()
        } else {
            listed
        };
        names
            .into_iter()
            .map(PathBuf::from)
            .filter(|path| path.components().all(|c| matches!(c, Component::Normal(_))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }

    fn record(json: &str) -> SessionRecord {
        SessionRecord::parse(Path::new("/r/0123456789ab.json"), json.as_bytes()).expect("parse")
    }

    #[test]
    fn session_ids() {
        assert!(is_session_id("0123456789ab"));
        assert!(!is_session_id("0123456789AB"));
        assert!(!is_session_id("0123456789a"));
        assert!(!is_session_id("0123456789abc"));
        assert!(!is_session_id("../../etc/pa"));
        assert_eq!(cast_name("0123456789ab", 0), "0123456789ab.cast");
        assert_eq!(cast_name("0123456789ab", 2), "0123456789ab-2.cast");
    }

    #[test]
    fn finds_flat_and_dated_metadata() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(&root.join("aaaaaaaaaaaa.json"), "{}");
        write(&root.join("2026/11/23/bbbbbbbbbbbb.json"), "{}");
        write(&root.join("2026/11/22/cccccccccccc.json"), "{}");
        write(&root.join("2026/11/22/cccccccccccc.json.tmp"), "{}");
        write(&root.join("2026/11/22/cccccccccccc.cast"), "");
        write(&root.join("2026/11/22/hermes.json"), "{}");
        write(&root.join("2026/notes/01/dddddddddddd.json"), "{}");
        write(&root.join("2026/13/01/eeeeeeeeeeee.json"), "{}");
        let archive = Archive::open(root).expect("open");
        let mut warnings = Vec::new();
        let all = archive
            .metadata_files(|_| true, &mut |w| warnings.push(w))
            .expect("list");
        let names: Vec<_> = all
            .iter()
            .map(|p| p.strip_prefix(root).expect("under root").to_path_buf())
            .collect();
        assert_eq!(
            names,
            [
                PathBuf::from("aaaaaaaaaaaa.json"),
                PathBuf::from("2026/11/23/bbbbbbbbbbbb.json"),
                PathBuf::from("2026/11/22/cccccccccccc.json"),
            ]
        );
        let day = crate::when::days_from_civil(2026, 11, 23);
        let recent = archive
            .metadata_files(|d| d >= day, &mut |w| warnings.push(w))
            .expect("list");
        assert_eq!(recent.len(), 2);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn locates_sessions_and_their_casts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(&root.join("2026/11/23/0123456789ab.json"), "{}");
        write(&root.join("2026/11/23/0123456789ab.cast"), "");
        write(&root.join("2026/11/23/0123456789ab-2.cast"), "");
        write(&root.join("2026/11/23/0123456789ab-x.cast"), "");
        write(&root.join("moved/elsewhere-3.cast"), "");
        write(&root.join("aaaaaaaaaaaa.cast"), "");
        let archive = Archive::open(root).expect("open");
        let mut warnings = Vec::new();
        let mut warn = |w: String| warnings.push(w);
        let located = archive
            .locate("0123456789ab", &mut warn)
            .expect("search")
            .expect("found");
        assert_eq!(located.dir, root.join("2026/11/23"));
        assert_eq!(located.channels(), [0, 2]);
        assert_eq!(
            archive.cast_for(&located, None, 2),
            Some(root.join("2026/11/23/0123456789ab-2.cast"))
        );
        assert_eq!(archive.cast_for(&located, None, 1), None);
        let flat = archive
            .locate("aaaaaaaaaaaa", &mut warn)
            .expect("search")
            .expect("found");
        assert_eq!(flat.dir, root);
        assert_eq!(
            archive.locate("ffffffffffff", &mut warn).expect("search"),
            None
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(Archive::open(&root.join("missing")).is_err());
        assert!(Archive::open(&root.join("aaaaaaaaaaaa.cast")).is_err());
    }

    #[test]
    fn cast_from_the_recordings_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(&root.join("old/0123456789ab-1.cast"), "");
        let archive = Archive::open(root).expect("open");
        let located = Located {
            dir: root.join("2026/11/23"),
            session: "0123456789ab".into(),
        };
        let meta = record(
            r#"{"recordings":["/etc/0123456789ab-1.cast","../0123456789ab-1.cast","old/0123456789ab-1.cast"]}"#,
        );
        assert_eq!(
            archive.cast_for(&located, Some(&meta), 1),
            Some(root.join("old/0123456789ab-1.cast"))
        );
    }

    #[test]
    fn lenient_fields() {
        let full = record(
            r#"{"session":"0123456789ab","src_ip":"::ffff:198.51.100.7","src_port":51234,
                "start_time":"2026-11-23T15:04:05.000000Z","end_time":"2026-11-23T15:05:00.000000Z",
                "end_reason":"exited","commands":[1,2],"recording":"a/b.cast"}"#,
        );
        assert_eq!(full.id(), "0123456789ab");
        assert_eq!(full.src_ip(), Some("198.51.100.7".parse().expect("ip")));
        assert_eq!(full.src_port(), Some(51234));
        assert_eq!(full.duration(), Some(55.0));
        assert_eq!(full.list("commands").len(), 2);
        assert_eq!(full.recordings(), [PathBuf::from("a/b.cast")]);
        assert!(!full.is_running());

        let sparse = record(
            r#"{"session":null,"src_ip":null,"src_port":"x","start_time":7,"duration":null,
                "commands":null,"end_reason":"running"}"#,
        );
        assert_eq!(sparse.id(), "0123456789ab");
        assert_eq!(sparse.src_ip(), None);
        assert_eq!(sparse.src_port(), None);
        assert_eq!(sparse.start(), None);
        assert_eq!(sparse.duration(), None);
        assert!(sparse.list("commands").is_empty());
        assert!(sparse.is_running());

        assert!(SessionRecord::parse(Path::new("x.json"), b"[1]").is_err());
        assert!(SessionRecord::parse(Path::new("x.json"), b"{\"session\":").is_err());
    }
}
