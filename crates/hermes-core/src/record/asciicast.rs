//! asciicast v2 writer (<https://docs.asciinema.org/manual/asciicast/v2/>).
//!
//! A header line, then one `[elapsed, code, data]` line per event: `o` output, `i` input,
//! `r` resize (`"COLSxROWS"`). Each line reaches the file with one `write(2)` as it
//! happens, so a crash loses at most the line being written.
//!
//! Two ways a recording loses output, told apart: the size limit (`max_recording_size`:
//! nothing more is recorded) and failed writes (a full disk: the failed line is cut
//! back off, later lines are skipped and a write is tried again every
//! [`WRITE_RETRY`], so recording goes on once space returns).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::utf8::Utf8Stream;

/// What the header says about the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CastHeader {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// The client's `TERM`.
    pub term: String,
    /// The login shell.
    pub shell: String,
    /// Free text, e.g. `root@web-prod-01 from 198.51.100.7`.
    pub title: String,
}

/// Where a finished recording is and how big it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSummary {
    /// The `.cast` file.
    pub path: PathBuf,
    /// Bytes written.
    pub size: u64,
    /// Time from the header to the end.
    pub duration: Duration,
    /// Events were left out because the size limit was reached.
    pub truncated: bool,
    /// The first write error, when writes failed (a full disk) and lines were lost.
    pub write_error: Option<String>,
    /// Lines lost to failed writes.
    pub lines_lost: u64,
}

/// After a failed write, how long lines are skipped before a write is tried again.
pub const WRITE_RETRY: Duration = Duration::from_secs(1);

#[derive(Serialize)]
struct HeaderLine<'a> {
    version: u8,
    width: u32,
    height: u32,
    timestamp: u64,
    title: &'a str,
    env: HeaderEnv<'a>,
}

#[derive(Serialize)]
struct HeaderEnv<'a> {
    #[serde(rename = "TERM")]
    term: &'a str,
    #[serde(rename = "SHELL")]
    shell: &'a str,
}

/// Records one terminal session.
#[derive(Debug)]
pub struct AsciicastRecorder {
    path: PathBuf,
    file: File,
    started: Instant,
    output: Utf8Stream,
    input: Utf8Stream,
    size: u64,
    max_size: u64,
    truncated: bool,
    /// The first write error.
    write_error: Option<String>,
    lines_lost: u64,
    /// While writes fail: when the next may be tried.
    retry_at: Option<Instant>,
    line: Vec<u8>,
}

impl AsciicastRecorder {
    /// Creates the file (and its directory) and writes the header. Once the file
    /// reaches `max_size` bytes, further events are left out.
    pub fn create(path: &Path, header: &CastHeader, max_size: u64) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        let mut recorder = AsciicastRecorder {
            path: path.to_owned(),
            file,
            started: Instant::now(),
            output: Utf8Stream::default(),
            input: Utf8Stream::default(),
            size: 0,
            max_size,
            truncated: false,
            write_error: None,
            lines_lost: 0,
            retry_at: None,
            line: Vec::with_capacity(4096),
        };
        let timestamp = crate::time::unix_seconds(SystemTime::now()) as u64;
        let header_line = HeaderLine {
            version: 2,
            width: header.width.max(1),
            height: header.height.max(1),
            timestamp,
            title: &header.title,
            env: HeaderEnv {
                term: &header.term,
                shell: &header.shell,
            },
        };
        recorder.line.clear();
        serde_json::to_writer(&mut recorder.line, &header_line).map_err(io::Error::other)?;
        if let Err(error) = recorder.write_line() {
            // No recording without its header: leave no empty file behind.
            drop(recorder);
            let _ = std::fs::remove_file(path);
            return Err(error);
        }
        Ok(recorder)
    }

    /// Records bytes the client was sent.
    pub fn output(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.truncated {
            // Past the size limit nothing more is written: do not decode either.
            return Ok(());
        }
        let text = self.output.decode(bytes);
        self.event("o", &text)
    }

    /// Records bytes the client typed.
    pub fn input(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.truncated {
            return Ok(());
        }
        let text = self.input.decode(bytes);
        self.event("i", &text)
    }

    /// Records a terminal resize.
    pub fn resize(&mut self, width: u32, height: u32) -> io::Result<()> {
        self.event("r", &format!("{width}x{height}"))
    }

    /// Ends the recording, writing out any incomplete character left.
    pub fn finish(mut self) -> RecordingSummary {
        let tail = self.output.finish();
        let _ = self.event("o", &tail);
        let tail = self.input.finish();
        let _ = self.event("i", &tail);
        RecordingSummary {
            path: self.path,
            size: self.size,
            duration: self.started.elapsed(),
            truncated: self.truncated,
            write_error: self.write_error,
            lines_lost: self.lines_lost,
        }
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True once events were left out for the size limit.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Whether writes are failing now (lines are being skipped).
    pub fn failing(&self) -> bool {
        self.retry_at.is_some()
    }

    fn event(&mut self, code: &str, data: &str) -> io::Result<()> {
        if data.is_empty() || self.truncated {
            return Ok(());
        }
        let elapsed = self.started.elapsed().as_micros() as f64 / 1e6;
        self.line.clear();
        serde_json::to_writer(&mut self.line, &(elapsed, code, data)).map_err(io::Error::other)?;
        self.write_line()
    }

    /// Writes the line in `self.line`. An error is returned only the first time writes
    /// fail in this recording (one report per recording, as its metadata keeps the
    /// first error; a disk that fills again after a line fitted does not report
    /// again); while they fail, lines are skipped (counted) and a write is tried
    /// again every [`WRITE_RETRY`].
    fn write_line(&mut self) -> io::Result<()> {
        self.line.push(b'\n');
        if self.size > 0 && self.size + self.line.len() as u64 > self.max_size {
            self.truncated = true;
            return Ok(());
        }
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            self.lines_lost += 1;
            return Ok(());
        }
        if let Err(error) = self.file.write_all(&self.line) {
            // Cut a partly written line back off (disk full): the file stays whole
            // lines, and the next line goes where this one started.
            let _ = self.file.set_len(self.size);
            let _ = self.file.seek(SeekFrom::Start(self.size));
            self.lines_lost += 1;
            self.retry_at = Some(Instant::now() + WRITE_RETRY);
            if self.write_error.is_some() {
                return Ok(());
            }
            self.write_error = Some(error.to_string());
            return Err(error);
        }
        self.retry_at = None;
        self.size += self.line.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn header() -> CastHeader {
        CastHeader {
            width: 120,
            height: 40,
            term: "xterm-256color".into(),
            shell: "/bin/bash".into(),
            title: "t".into(),
        }
    }

    #[test]
    fn writes_a_parseable_v2_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rec/a.cast");
        let mut rec = AsciicastRecorder::create(&path, &header(), 1 << 20).expect("create");
        rec.output(b"root@web:~# ").expect("o");
        rec.input(b"ls\r").expect("i");
        rec.output(b"\xe2\x98").expect("o");
        rec.output(b"\x83\r\n").expect("o");
        rec.resize(80, 24).expect("r");
        let summary = rec.finish();
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(summary.size, text.len() as u64);
        let mut lines = text.lines();
        let head: Value = serde_json::from_str(lines.next().expect("header")).expect("json");
        assert_eq!(head["version"], 2);
        assert_eq!(head["width"], 120);
        assert_eq!(head["height"], 40);
        assert_eq!(head["env"]["TERM"], "xterm-256color");
        assert_eq!(head["env"]["SHELL"], "/bin/bash");
        let events: Vec<Value> = lines
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        let codes: Vec<_> = events
            .iter()
            .map(|e| e[1].as_str().expect("code"))
            .collect();
        assert_eq!(codes, ["o", "i", "o", "r"]);
        assert_eq!(events[2][2], "☃\r\n", "split character joined");
        assert_eq!(events[3][2], "80x24");
        let times: Vec<f64> = events
            .iter()
            .map(|e| e[0].as_f64().expect("time"))
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn the_size_limit_stops_recording_not_the_session() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.cast");
        let mut rec = AsciicastRecorder::create(&path, &header(), 4096).expect("create");
        for _ in 0..1000 {
            rec.output(&[b'x'; 100]).expect("o");
        }
        assert!(rec.truncated());
        let summary = rec.finish();
        assert!(summary.truncated);
        let written = std::fs::metadata(&path).expect("stat").len();
        assert!(written <= 4096, "{written}");
        assert_eq!(written, summary.size);
        for line in std::fs::read_to_string(&path).expect("read").lines() {
            serde_json::from_str::<Value>(line).expect("every kept line is whole");
        }
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.cast");
        std::fs::write(&path, "keep").expect("write");
        assert!(AsciicastRecorder::create(&path, &header(), 1 << 20).is_err());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "keep");
    }

    /// The disk fills: every write of `rec` fails with ENOSPC until the returned
    /// file is put back.
    fn fill_disk(rec: &mut AsciicastRecorder) -> File {
        let full = File::options()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        std::mem::replace(&mut rec.file, full)
    }

    #[test]
    fn failed_writes_skip_output_and_recording_resumes_when_writes_work() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("full.cast");
        let mut rec = AsciicastRecorder::create(&path, &header(), 1 << 20).expect("create");
        rec.output(b"before\r\n").expect("o");
        let real = fill_disk(&mut rec);
        let error = rec
            .output(b"lost 1")
            .expect_err("the first failure is reported");
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        rec.output(b"lost 2")
            .expect("later failures are not errors");
        assert!(rec.failing());
        // Space returns; the next try comes after WRITE_RETRY.
        rec.file = real;
        rec.output(b"lost 3").expect("skipped until the retry time");
        rec.retry_at = Some(Instant::now());
        rec.output(b"after\r\n").expect("o");
        assert!(!rec.failing());
        // The disk fills again: counted, not reported a second time.
        let real = fill_disk(&mut rec);
        rec.output(b"lost 4").expect("reported once per recording");
        assert!(rec.failing());
        rec.file = real;
        rec.retry_at = Some(Instant::now());
        let summary = rec.finish();
        assert!(!summary.truncated, "a full disk is not the size limit");
        assert_eq!(summary.lines_lost, 4);
        assert!(
            summary
                .write_error
                .as_deref()
                .is_some_and(|e| e.contains("No space left")),
            "{:?}",
            summary.write_error
        );
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(summary.size, text.len() as u64);
        let (_, events) = text.split_once('\n').expect("header");
        let data: Vec<Value> = events
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("whole json line")[2].clone())
            .collect();
        assert_eq!(data, ["before\r\n", "after\r\n"]);
    }
}
