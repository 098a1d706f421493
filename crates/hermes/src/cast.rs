//! Reading asciicast v2 recordings as a stream of events.
//!
//! The file is read line by line (a recording can be tens of megabytes) and leniently:
//! a line that is not an event is reported and skipped, and the last line, which a
//! killed Hermes may have cut short, is reported as such.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

/// Longest line read; longer ones are skipped (reported) without being held in memory.
pub const MAX_LINE: usize = 16 << 20;

/// What the header says.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Terminal columns.
    pub width: Option<u64>,
    /// Terminal rows.
    pub height: Option<u64>,
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the start of the recording.
    pub time: f64,
    /// `o` output, `i` input, `r` resize, `m` marker.
    pub code: String,
    /// The event's data.
    pub data: String,
}

/// A line of the recording after the header.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A well-formed event.
    Event(Event),
    /// A line that is not an event.
    Bad {
        /// 1-based line number.
        number: usize,
        /// No event follows it: the file was most likely cut short while writing it.
        last: bool,
        /// What is wrong with it.
        reason: String,
    },
}

struct RawLine {
    number: usize,
    bytes: Vec<u8>,
    too_long: bool,
}

impl RawLine {
    fn is_blank(&self) -> bool {
        !self.too_long && self.bytes.iter().all(u8::is_ascii_whitespace)
    }
}

/// Reads events from an asciicast v2 stream.
pub struct CastReader<R> {
    reader: R,
    lines_read: usize,
    peeked: Option<RawLine>,
}

/// Opens `path` and reads its header.
pub fn open(path: &Path) -> anyhow::Result<(Header, CastReader<BufReader<File>>)> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    CastReader::new(BufReader::new(file)).with_context(|| format!("{}", path.display()))
}

impl<R: BufRead> CastReader<R> {
    /// Reads the header line; fails unless it is an asciicast v2 header.
    pub fn new(reader: R) -> anyhow::Result<(Header, Self)> {
        let mut cast = Self {
            reader,
            lines_read: 0,
            peeked: None,
        };
        let Some(first) = cast.read_raw().context("cannot read the header")? else {
            bail!("empty file: no asciicast header");
        };
        if first.too_long {
            bail!("not an asciicast v2 file: the first line is not a header");
        }
        let header: Value = serde_json::from_slice(&first.bytes)
            .map_err(|_| anyhow::anyhow!("not an asciicast v2 file: the header is not JSON"))?;
        let Value::Object(header) = header else {
            bail!("not an asciicast v2 file: the header is not a JSON object");
        };
        match header.get("version") {
            None => {}
            Some(version) if version.as_u64() == Some(2) => {}
            Some(version) => bail!("asciicast version {version} is not supported (only 2)"),
        }
        let header = Header {
            width: header.get("width").and_then(Value::as_u64),
            height: header.get("height").and_then(Value::as_u64),
        };
        Ok((header, cast))
    }

    /// The next event or bad line; `None` at the end of the file. Blank lines are skipped.
    pub fn next_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            let raw = match self.peeked.take() {
                Some(raw) => raw,
                None => match self.read_raw()? {
                    Some(raw) => raw,
                    None => return Ok(None),
                },
            };
            if raw.is_blank() {
                continue;
            }
            let reason = if raw.too_long {
                format!("longer than {MAX_LINE} bytes")
            } else {
                match parse_event(&raw.bytes) {
                    Ok(event) => return Ok(Some(Line::Event(event))),
                    Err(reason) => reason,
                }
            };
            let last = loop {
                match self.read_raw()? {
                    None => break true,
                    Some(next) if next.is_blank() => {}
                    Some(next) => {
                        self.peeked = Some(next);
                        break false;
                    }
                }
            };
            return Ok(Some(Line::Bad {
                number: raw.number,
                last,
                reason,
            }));
        }
    }

    /// The next line without its newline, at most [`MAX_LINE`] bytes of it kept.
    fn read_raw(&mut self) -> io::Result<Option<RawLine>> {
        let mut line = RawLine {
            number: self.lines_read + 1,
            bytes: Vec::new(),
            too_long: false,
        };
        let mut any = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(available) => available,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            if available.is_empty() {
                break;
            }
            any = true;
            let (chunk, used, done) = match available.iter().position(|b| *b == b'\n') {
                Some(at) => (&available[..at], at + 1, true),
                None => (available, available.len(), false),
            };
            if !line.too_long {
                if line.bytes.len() + chunk.len() > MAX_LINE {
                    line.too_long = true;
                    line.bytes = Vec::new();
                } else {
                    line.bytes.extend_from_slice(chunk);
                }
            }
            self.reader.consume(used);
            if done {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        self.lines_read += 1;
        if line.bytes.last() == Some(&b'\r') {
            line.bytes.pop();
        }
        Ok(Some(line))
    }
}

/// `[time, "code", "data"]`.
fn parse_event(bytes: &[u8]) -> Result<Event, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|error| {
        if error.is_eof() {
            "cut short".to_owned()
        } else {
            format!("not JSON ({error})")
        }
    })?;
    match value.as_array().map(Vec::as_slice) {
        Some(
            [
                Value::Number(time),
                Value::String(code),
                Value::String(data),
                ..,
            ],
        ) => {
            let time = time
                .as_f64()
                .filter(|t| t.is_finite() && *t >= 0.0)
                .ok_or_else(|| "bad event time".to_owned())?;
            Ok(Event {
                time,
                code: code.clone(),
                data: data.clone(),
            })
        }
        _ => Err("not an event ([time, code, data])".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "{\"version\":2,\"width\":80,\"height\":24,\"timestamp\":1,\"env\":{}}\n";

    fn read_all(text: &str) -> (Header, Vec<Line>) {
        let (header, mut cast) = CastReader::new(text.as_bytes()).expect("header");
        let mut lines = Vec::new();
        while let Some(line) = cast.next_line().expect("read") {
            lines.push(line);
        }
        (header, lines)
    }

    fn event(time: f64, code: &str, data: &str) -> Line {
        Line::Event(Event {
            time,
            code: code.into(),
            data: data.into(),
        })
    }

    #[test]
    fn reads_header_and_events() {
        let text = format!(
            "{HEADER}[0.5, \"o\", \"hi\\r\\n\"]\n[1, \"i\", \"ls\\r\"]\n\n[1.25, \"r\", \"100x30\"]\n"
        );
        let (header, lines) = read_all(&text);
        assert_eq!(header.width, Some(80));
        assert_eq!(header.height, Some(24));
        assert_eq!(
            lines,
            vec![
                event(0.5, "o", "hi\r\n"),
                event(1.0, "i", "ls\r"),
                event(1.25, "r", "100x30"),
            ]
        );
    }

    #[test]
    fn cut_short_last_line_is_reported_as_last() {
        let text = format!("{HEADER}[0.5, \"o\", \"a\"]\n[0.7, \"o\", \"unfinish");
        let (_, lines) = read_all(&text);
        assert_eq!(lines[0], event(0.5, "o", "a"));
        assert_eq!(
            lines[1],
            Line::Bad {
                number: 3,
                last: true,
                reason: "cut short".into()
            }
        );
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn bad_line_in_the_middle_is_skipped() {
        let text = format!("{HEADER}garbage\n\n[1, \"o\", \"b\"]\r\n{{\"x\":1}}\n\n");
        let (_, lines) = read_all(&text);
        assert!(matches!(
            lines[0],
            Line::Bad {
                number: 2,
                last: false,
                ..
            }
        ));
        assert_eq!(lines[1], event(1.0, "o", "b"));
        assert!(matches!(
            lines[2],
            Line::Bad {
                number: 5,
                last: true,
                ..
            }
        ));
    }

    #[test]
    fn headers_that_are_not_v2_fail() {
        for bad in [
            "",
            "\n",
            "[0, \"o\", \"x\"]\n",
            "{\"version\":1}\n",
            "nope\n",
        ] {
            assert!(CastReader::new(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(CastReader::new("{\"width\":80}".as_bytes()).is_ok());
    }

    #[test]
    fn bad_event_times() {
        let text =
            format!("{HEADER}[-1, \"o\", \"x\"]\n[\"1\", \"o\", \"x\"]\n[2, \"o\", \"y\"]\n");
        let (_, lines) = read_all(&text);
        assert!(matches!(lines[0], Line::Bad { number: 2, .. }));
        assert!(matches!(lines[1], Line::Bad { number: 3, .. }));
        assert_eq!(lines[2], event(2.0, "o", "y"));
    }
}
