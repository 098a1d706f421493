//! `hermes sessions`: the recorded sessions, newest first, as a table or JSON lines.

use std::fmt::Write as _;
use std::io::Write;

use anyhow::Context;
use hermes_core::escape::escape_untrusted;
use serde_json::Value;

use crate::archive::SessionRecord;
use crate::cmd::{self, ArchiveArgs};
use crate::source::{SourceFilter, format_endpoint};
use crate::when::{self, UtcTime};

/// Widest attacker-controlled cell (after escaping) in the table; longer ones are cut
/// with `…` (`--json` has them whole).
const MAX_CELL: usize = 40;

/// `hermes sessions` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    pub archive: ArchiveArgs,
    /// Only sessions from this address or CIDR block (IPv4 or IPv6).
    #[arg(long, value_name = "IP|CIDR", value_parser = SourceFilter::parse)]
    pub source: Option<SourceFilter>,
    /// Only sessions that started at or after T: RFC 3339 (2026-11-23T15:00:00Z), a date
    /// (2026-11-23, midnight UTC) or an age (30m, 2h, 7d).
    #[arg(long, value_name = "T", value_parser = when::parse_time_arg)]
    pub since: Option<UtcTime>,
    /// Only sessions that started at or before T (same forms as --since).
    #[arg(long, value_name = "T", value_parser = when::parse_time_arg)]
    pub until: Option<UtcTime>,
    /// At most N sessions (the newest).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// One metadata JSON object per line instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Which sessions to list.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Source address block.
    pub source: Option<SourceFilter>,
    /// Earliest start.
    pub since: Option<UtcTime>,
    /// Latest start.
    pub until: Option<UtcTime>,
    /// Most sessions shown.
    pub limit: Option<usize>,
}

impl Selection {
    /// Whether a day directory (days since the epoch) can hold a selected session; one
    /// day of slack either side, in case a session's date and its directory disagree.
    pub fn may_hold(&self, day: i64) -> bool {
        self.since.is_none_or(|since| day >= since.day() - 1)
            && self.until.is_none_or(|until| day <= until.day() + 1)
    }

    /// Whether `record` is selected (the limit aside).
    pub fn matches(&self, record: &SessionRecord) -> bool {
        if let Some(source) = &self.source
            && !record.src_ip().is_some_and(|ip| source.matches(ip))
        {
            return false;
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(start) = record.start() else {
            return false;
        };
        self.since.is_none_or(|since| start >= since)
            && self.until.is_none_or(|until| start <= until)
    }

    /// The selected records, newest first (sessions without a start time last).
    pub fn apply(&self, records: Vec<SessionRecord>) -> Vec<SessionRecord> {
        let mut keyed: Vec<(Option<UtcTime>, String, SessionRecord)> = records
            .into_iter()
            .filter(|record| self.matches(record))
            .map(|record| (record.start(), record.id(), record))
            .collect();
        keyed.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
        keyed
            .into_iter()
            .map(|(_, _, record)| record)
            .take(self.limit.unwrap_or(usize::MAX))
            .collect()
    }
}

/// Runs `hermes sessions`.
pub fn run(args: &SessionsArgs) -> anyhow::Result<()> {
    let archive = args.archive.open()?;
    let selection = Selection {
        source: args.source,
        since: args.since,
        until: args.until,
        limit: args.limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let records = archive
        .load_all(|day| selection.may_hold(day), &mut cmd::warn)
        .with_context(|| format!("cannot read {}", archive.root().display()))?;
    let selected = selection.apply(records);
    if selected.is_empty() {
        eprintln!("no sessions");
        return Ok(());
    }
    let text = if args.json {
        selected
            .iter()
            .map(|record| json_line(&record.doc) + "\n")
            .collect()
    } else {
        table(&selected)
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")
}

/// The table: a header line, then one line per session.
pub fn table(records: &[SessionRecord]) -> String {
    const HEADINGS: [&str; 8] = [
        "START", "SESSION", "SOURCE", "USER", "DURATION", "CMDS", "FILES", "END",
    ];
    let rows: Vec<[String; 8]> = records.iter().map(row).collect();
    let mut widths = HEADINGS.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for cells in std::iter::once(HEADINGS.map(str::to_owned)).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn row(record: &SessionRecord) -> [String; 8] {
    let start = record
        .start()
        .map_or_else(|| "-".to_owned(), UtcTime::table_format);
    let source = match record.src_ip() {
        Some(ip) => format_endpoint(ip, record.src_port()),
        None => record.text("src_ip").map_or_else(|| "-".to_owned(), cell),
    };
    let duration = if record.is_running() {
        "running".to_owned()
    } else {
        record
            .duration()
            .map_or_else(|| "-".to_owned(), format_duration)
    };
    let text = |key: &str| record.text(key).map_or_else(|| "-".to_owned(), cell);
    [
        start,
        cell(&record.id()),
        source,
        text("username"),
        duration,
        record.list("commands").len().to_string(),
        record.list("files").len().to_string(),
        text("end_reason"),
    ]
}

/// An attacker-controlled string as a table cell: escaped, at most [`MAX_CELL`] wide.
fn cell(text: &str) -> String {
    let escaped = escape_untrusted(text);
    if escaped.is_empty() {
        return "''".to_owned();
    }
    if escaped.chars().count() <= MAX_CELL {
        return escaped.into_owned();
    }
    let mut cut: String = escaped.chars().take(MAX_CELL - 1).collect();
    cut.push('…');
    cut
}

/// `54.9s`, `3m12s`, `2h05m`.
pub fn format_duration(seconds: f64) -> String {
    if seconds < 60.0 {
        return format!("{seconds:.1}s");
    }
    let whole = seconds as u64;
    if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{}h{:02}m", whole / 3600, (whole / 60) % 60)
    }
}

/// A metadata document as one line of JSON that is safe on a terminal: serde_json
/// escapes C0 controls, and DEL, the C1 controls and invisible formatting characters
/// (which it leaves raw) are escaped as `\uXXXX` too.
pub fn json_line(doc: &serde_json::Map<String, Value>) -> String {
    let text = Value::Object(doc.clone()).to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || is_invisible(c) {
            // Outside strings JSON has only ASCII punctuation, so c is inside a string.
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Zero-width, directional and BIDI formatting characters (as `escape_untrusted` has
/// them).
fn is_invisible(c: char) -> bool {
    matches!(c as u32, 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x2069 | 0xfeff)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn record(json: &str) -> SessionRecord {
        SessionRecord::parse(Path::new("/r/ffffffffffff.json"), json.as_bytes()).expect("parse")
    }

    fn at(text: &str) -> UtcTime {
        UtcTime::parse_rfc3339(text).expect("time")
    }

    fn ids(records: &[SessionRecord]) -> Vec<String> {
        records.iter().map(SessionRecord::id).collect()
    }

    fn sample() -> Vec<SessionRecord> {
        vec![
            record(
                r#"{"session":"aaaaaaaaaaaa","src_ip":"198.51.100.7","start_time":"2026-11-22T10:00:00Z"}"#,
            ),
            record(
                r#"{"session":"bbbbbbbbbbbb","src_ip":"2001:db8::5","start_time":"2026-11-23T15:00:00Z"}"#,
            ),
            record(
                r#"{"session":"cccccccccccc","src_ip":"::ffff:198.51.100.9","start_time":"2026-11-21T08:00:00Z"}"#,
            ),
            record(r#"{"session":"dddddddddddd","src_ip":null,"start_time":null}"#),
        ]
    }

    #[test]
    fn newest_first_undated_last() {
        let all = Selection::default().apply(sample());
        assert_eq!(
            ids(&all),
            [
                "bbbbbbbbbbbb",
                "aaaaaaaaaaaa",
                "cccccccccccc",
                "dddddddddddd"
            ]
        );
        let two = Selection {
            limit: Some(2),
            ..Selection::default()
        }
        .apply(sample());
        assert_eq!(ids(&two), ["bbbbbbbbbbbb", "aaaaaaaaaaaa"]);
    }

    #[test]
    fn filters() {
        let by_source = |text: &str| {
            ids(&Selection {
                source: Some(SourceFilter::parse(text).expect("filter")),
                ..Selection::default()
            }
            .apply(sample()))
        };
        assert_eq!(by_source("198.51.100.7"), ["aaaaaaaaaaaa"]);
        assert_eq!(
            by_source("198.51.100.0/24"),
            ["aaaaaaaaaaaa", "cccccccccccc"]
        );
        assert_eq!(by_source("2001:db8::/32"), ["bbbbbbbbbbbb"]);
        let window = Selection {
            since: Some(at("2026-11-22T00:00:00Z")),
            until: Some(at("2026-11-22T10:00:00Z")),
            ..Selection::default()
        };
        assert_eq!(ids(&window.apply(sample())), ["aaaaaaaaaaaa"]);
        let day = crate::when::days_from_civil(2026, 11, 22);
        assert!(window.may_hold(day - 1) && window.may_hold(day + 1));
        assert!(!window.may_hold(day - 2) && !window.may_hold(day + 2));
    }

    #[test]
    fn table_cells() {
        let rows = [
            record(
                r#"{"session":"0123456789ab","src_ip":"198.51.100.7","src_port":51234,
                "username":"ro\u001b]0;x\u0007ot","start_time":"2026-11-23T15:04:05.123456Z",
                "duration":54.9,"end_reason":"exited","commands":[{},{}],"files":[{}]}"#,
            ),
            record(
                r#"{"session":"ba9876543210","src_ip":"2001:db8::1","src_port":22,"username":"",
                "start_time":"2026-11-23T16:00:00Z","duration":null,"end_reason":"running"}"#,
            ),
        ];
        let table = table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "START                SESSION       SOURCE              USER              DURATION  CMDS  FILES  END"
        );
        assert_eq!(
            lines[1],
            "2026-11-23 15:04:05  0123456789ab  198.51.100.7:51234  ro\\x1b]0;x\\x07ot  54.9s     2     1      exited"
        );
        assert_eq!(
            lines[2],
            "2026-11-23 16:00:00  ba9876543210  [2001:db8::1]:22    ''                running   0     0      running"
        );
        assert!(!table.contains('\x1b'));
    }

    #[test]
    fn long_cells_are_cut() {
        let long = "x".repeat(100);
        assert_eq!(cell(&long).chars().count(), MAX_CELL);
        assert!(cell(&long).ends_with('…'));
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(0.0), "0.0s");
        assert_eq!(format_duration(54.94), "54.9s");
        assert_eq!(format_duration(192.0), "3m12s");
        assert_eq!(format_duration(7505.0), "2h05m");
    }

    #[test]
    fn json_lines_are_terminal_safe_and_still_json() {
        let doc = record(
            r#"{"session":"0123456789ab","username":"a\u001b[31m\u009b6n\u202eb\u007f\\\"c","n":1}"#,
        );
        let line = json_line(&doc.doc);
        assert!(!line.contains('\n'));
        assert!(
            line.chars().all(|c| c.is_ascii() && !c.is_ascii_control()),
            "{line}"
        );
        let back: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(Value::Object(doc.doc), back);
    }
}
