//! `hermes replay --commands`: a session's commands and file transfers from its
//! metadata, in time order, every attacker string escaped.

use hermes_core::escape::escape_untrusted;
use serde_json::Value;

use crate::archive::SessionRecord;
use crate::source::format_endpoint;
use crate::when::UtcTime;

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    /// Seconds from the session start, when known.
    offset: Option<f64>,
    text: String,
}

/// The timeline: a header line, then one line per command and file, in time order
/// (entries without a usable time last, in file order).
pub fn render(record: &SessionRecord) -> String {
    let start = record.start();
    let mut entries: Vec<Entry> = record
        .list("commands")
        .iter()
        .map(|command| Entry {
            offset: offset(start, command),
            text: command_text(command),
        })
        .chain(record.list("files").iter().map(|file| Entry {
            offset: offset(start, file),
            text: file_text(file),
        }))
        .collect();
    // Stable: commands before files at the same instant, file order otherwise.
    entries.sort_by(|a, b| match (a.offset, b.offset) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let stamps: Vec<String> = entries
        .iter()
        .map(|e| {
            e.offset
                .map_or_else(|| "+?".to_owned(), |s| format!("{s:+.3}s"))
        })
        .collect();
    let width = stamps.iter().map(String::len).max().unwrap_or(0);
    let mut out = header(record);
    out.push('\n');
    if entries.is_empty() {
        out.push_str("(no commands or file transfers recorded)\n");
    }
    for (stamp, entry) in stamps.iter().zip(&entries) {
        out.push_str(&format!("{stamp:>width$}  {}\n", entry.text));
    }
    out
}

/// `session ID  from IP:PORT  user U  start T  end REASON`.
fn header(record: &SessionRecord) -> String {
    let source = match record.src_ip() {
        Some(ip) => format_endpoint(ip, record.src_port()),
        None => untrusted(record.text("src_ip")),
    };
    let start = record
        .start()
        .map_or_else(|| "?".to_owned(), |t| format!("{} UTC", t.table_format()));
    format!(
        "session {}  from {source}  user {}  start {start}  end {}",
        escape_untrusted(&record.id()),
        untrusted(record.text("username")),
        untrusted(record.text("end_reason")),
    )
}

fn offset(start: Option<UtcTime>, entry: &Value) -> Option<f64> {
    let time = entry
        .get("time")
        .and_then(Value::as_str)
        .and_then(UtcTime::parse_rfc3339)?;
    Some(time.seconds_since(start?))
}

/// `[ch0] uname -a (realm: python3) (approximate)`; older metadata has bare strings.
fn command_text(command: &Value) -> String {
    if let Some(input) = command.as_str() {
        return format!("[ch?] {}", escape_untrusted(input));
    }
    let channel = command
        .get("channel")
        .and_then(Value::as_u64)
        .map_or_else(|| "?".to_owned(), |n| n.to_string());
    let mut text = format!(
        "[ch{channel}] {}",
        untrusted(command.get("input").and_then(Value::as_str))
    );
    if let Some(realm) = command.get("realm").and_then(Value::as_str) {
        text.push_str(&format!(" (realm: {})", escape_untrusted(realm)));
    }
    if command.get("approximate").and_then(Value::as_bool) == Some(true) {
        text.push_str(" (approximate)");
    }
    text
}

/// `file download /tmp/x.sh sha256=… 123 B from http://… (duplicate)`.
fn file_text(file: &Value) -> String {
    let field = |key: &str| file.get(key).and_then(Value::as_str);
    let mut text = format!(
        "file {} {}",
        untrusted(field("kind")),
        untrusted(field("destfile"))
    );
    if let Some(sum) = field("shasum") {
        text.push_str(&format!(" sha256={}", escape_untrusted(sum)));
    }
    if let Some(size) = file.get("size").and_then(Value::as_u64) {
        text.push_str(&format!(" {size} B"));
    }
    if let Some(url) = field("url") {
        text.push_str(&format!(" from {}", escape_untrusted(url)));
    }
    if file.get("duplicate").and_then(Value::as_bool) == Some(true) {
        text.push_str(" (duplicate)");
    }
    text
}

/// An optional attacker string, escaped; `?` when missing.
fn untrusted(text: Option<&str>) -> String {
    text.map_or_else(|| "?".to_owned(), |t| escape_untrusted(t).into_owned())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn record(json: &str) -> SessionRecord {
        SessionRecord::parse(Path::new("/r/0123456789ab.json"), json.as_bytes()).expect("parse")
    }

    #[test]
    fn commands_and_files_in_time_order() {
        let text = render(&record(
            r#"{"session":"0123456789ab","username":"root","end_reason":"exited",
            "src_ip":"198.51.100.7","src_port":51234,"start_time":"2026-11-23T15:04:05.000000Z",
            "commands":[
              {"time":"2026-11-23T15:04:07.000000Z","channel":0,"input":"uname -a"},
              {"time":"2026-11-23T15:04:20.500000Z","channel":1,"input":"print(1)","realm":"python3"},
              {"time":"2026-11-23T15:04:30.000000Z","channel":0,"input":"ls /tm","approximate":true}],
            "files":[
              {"time":"2026-11-23T15:04:10.000000Z","kind":"download","destfile":"/tmp/x.sh",
               "shasum":"ab12","size":123,"url":"http://192.0.2.9/x.sh","duplicate":false},
              {"time":"2026-11-23T15:04:40.250000Z","kind":"upload","destfile":"/root/a.bin",
               "shasum":"cd34","size":9,"duplicate":true}]}"#,
        ));
        assert_eq!(
            text,
            "session 0123456789ab  from 198.51.100.7:51234  user root  start 2026-11-23 15:04:05 UTC  end exited\n\
             \x20+2.000s  [ch0] uname -a\n\
             \x20+5.000s  file download /tmp/x.sh sha256=ab12 123 B from http://192.0.2.9/x.sh\n\
             +15.500s  [ch1] print(1) (realm: python3)\n\
             +25.000s  [ch0] ls /tm (approximate)\n\
             +35.250s  file upload /root/a.bin sha256=cd34 9 B (duplicate)\n"
        );
    }

    #[test]
    fn attacker_strings_are_escaped() {
        let text = render(&record(
            r#"{"username":"r\u001b[2Jt","end_reason":null,"start_time":"2026-11-23T15:04:05Z",
            "commands":[{"time":"2026-11-23T15:04:06Z","channel":0,"input":"echo \u001b]52;c;eA==\u0007\nrm -rf /","realm":"\u009b6n"}],
            "files":[{"time":"2026-11-23T15:04:07Z","kind":"download","destfile":"/tmp/\u202ex","url":"http://x/\r"}]}"#,
        ));
        assert!(!text.contains('\x1b') && !text.contains('\u{9b}') && !text.contains('\r'));
        assert!(text.contains("user r\\x1b[2Jt"));
        assert!(text.contains("[ch0] echo \\x1b]52;c;eA==\\x07\\nrm -rf / (realm: \\u{9b}6n)"));
        assert!(text.contains("file download /tmp/\\u{202e}x from http://x/\\r"));
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn sparse_and_old_metadata() {
        let text = render(&record(
            r#"{"session":"0123456789ab","commands":["id","whoami",{"input":"w"}],"files":null}"#,
        ));
        assert_eq!(
            text,
            "session 0123456789ab  from ?  user ?  start ?  end ?\n\
             +?  [ch?] id\n\
             +?  [ch?] whoami\n\
             +?  [ch?] w\n"
        );
        let empty = render(&record(r#"{"session":"0123456789ab"}"#));
        assert!(empty.ends_with("(no commands or file transfers recorded)\n"));
    }
}
