//! The identification exchange, done as OpenSSH's sshd does it, before the SSH library
//! sees the connection: banner first, then the client's line read one byte at a time,
//! with sshd's exact answers to lines it refuses.
//!
//! Reading byte by byte matters: sshd leaves whatever follows a refused line unread,
//! so closing the socket resets the connection, and a client then sees the same bytes
//! it sees from sshd (sometimes without the final CR LF).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use hermes_core::admission::Progress;

/// sshd's limit on an identification line (SSH_MAX_BANNER_LEN).
const MAX_LINE: usize = 8192;
/// The library's limit on the identification line it will take.
const LIBRARY_MAX_LINE: usize = 253;

/// sshd's answer to a malformed line.
pub(crate) const INVALID: &str = "Invalid SSH identification string.";
/// sshd's answer to a protocol 1 (or 3+) client.
pub(crate) const MAJOR_DIFFERS: &str = "Protocol major versions differ.";

/// What a finished line means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A version line sshd accepts: its text without CR LF.
    Accepted(String),
    /// Refused with this answer; the offending line (as far as it was read).
    Refused { reply: &'static str, line: String },
}

/// sshd's line reader (kex_exchange_identification), one byte at a time.
#[derive(Debug, Default)]
pub(crate) struct IdentReader {
    line: Vec<u8>,
    expect_newline: bool,
}

impl IdentReader {
    /// Feeds one byte; returns a verdict when the line is decided.
    pub(crate) fn push(&mut self, byte: u8) -> Option<Verdict> {
        match byte {
            b'\r' => {
                self.expect_newline = true;
                None
            }
            b'\n' => Some(self.finish()),
            0 => Some(self.refuse(INVALID)),
            _ if self.expect_newline => Some(self.refuse(INVALID)),
            _ => {
                self.line.push(byte);
                if self.line.len() > MAX_LINE {
                    Some(self.refuse(INVALID))
                } else {
                    None
                }
            }
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.line).into_owned()
    }

    fn refuse(&self, reply: &'static str) -> Verdict {
        Verdict::Refused {
            reply,
            line: self.text(),
        }
    }

    fn finish(&mut self) -> Verdict {
        // A server takes no lines before the version line.
        if self.line.len() <= 4 || !self.line.starts_with(b"SSH-") {
            return self.refuse(INVALID);
        }
        let text = self.text();
        match parse_version(&text) {
            None => self.refuse(INVALID),
            Some((2, _)) | Some((1, 99)) => Verdict::Accepted(text),
            Some(_) => self.refuse(MAJOR_DIFFERS),
        }
    }
}

/// `sscanf(line, "SSH-%d.%d-%[^\n]")`: the two numbers, if the rest matches.
fn parse_version(line: &str) -> Option<(i64, i64)> {
    let rest = line.strip_prefix("SSH-")?;
    let (major, rest) = scan_int(rest)?;
    let rest = rest.strip_prefix('.')?;
    let (minor, rest) = scan_int(rest)?;
    let software = rest.strip_prefix('-')?;
    (!software.is_empty()).then_some((major, minor))
}

/// `%d`: optional leading whitespace, optional sign, at least one digit.
fn scan_int(text: &str) -> Option<(i64, &str)> {
    let trimmed = text.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let bytes = trimmed.as_bytes();
    let mut end = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let digits_start = end;
    while bytes.get(end).is_some_and(u8::is_ascii_digit) {
        end += 1;
    }
    if end == digits_start {
        return None;
    }
    let value = trimmed[..end].parse::<i64>().unwrap_or(i64::MAX);
    Some((value, &trimmed[end..]))
}

/// How the exchange ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The client's version line, accepted and usable by the SSH library.
    Accepted(String),
    /// Accepted by sshd's rules but beyond what the library takes (too long, or a
    /// version other than 2.0/1.99); the connection is closed.
    Unsupported(String),
    /// Refused with sshd's answer (already sent).
    Refused {
        /// The answer.
        reply: &'static str,
        /// The client's line.
        line: String,
    },
    /// The client closed before a full line.
    Closed,
    /// The login grace time ran out before a full line.
    TimedOut,
}

/// Sends `banner`, reads the client's line, answers a bad one as sshd does; tells
/// `progress` of every byte and of the complete line.
pub(crate) async fn exchange(
    stream: &mut TcpStream,
    banner: &str,
    grace: Duration,
    progress: &Progress,
) -> io::Result<Outcome> {
    let mut hello = Vec::with_capacity(banner.len() + 2);
    hello.extend_from_slice(banner.as_bytes());
    hello.extend_from_slice(b"\r\n");
    stream.write_all(&hello).await?;

    let read_line = async {
        let mut reader = IdentReader::default();
        let mut byte = [0u8; 1];
        loop {
            if stream.read(&mut byte).await? == 0 {
                return Ok::<_, io::Error>(None);
            }
            progress.heard();
            if let Some(verdict) = reader.push(byte[0]) {
                return Ok(Some(verdict));
            }
        }
    };
    let verdict = match tokio::time::timeout(grace, read_line).await {
        Ok(Ok(Some(verdict))) => verdict,
        Ok(Ok(None)) => return Ok(Outcome::Closed),
        Err(_) => return Ok(Outcome::TimedOut),
        Ok(Err(error)) => return Err(error),
    };
    match verdict {
        Verdict::Accepted(line) => {
            progress.identified();
            let library_takes = line.len() <= LIBRARY_MAX_LINE
                && (line.starts_with("SSH-2.0-") || line.starts_with("SSH-1.99-"));
            Ok(if library_takes {
                Outcome::Accepted(line)
            } else {
                Outcome::Unsupported(line)
            })
        }
        Verdict::Refused { reply, line } => {
            // sshd writes the message and the CR LF with two writes, Nagle on. The
            // client may be gone already; the refusal is recorded either way.
            let _ = stream.set_nodelay(false);
            if stream.write_all(reply.as_bytes()).await.is_ok() {
                let _ = stream.write_all(b"\r\n").await;
            }
            Ok(Outcome::Refused { reply, line })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(input: &[u8]) -> Option<Verdict> {
        let mut reader = IdentReader::default();
        input.iter().find_map(|b| reader.push(*b))
    }

    fn accepted(input: &[u8]) -> bool {
        matches!(verdict(input), Some(Verdict::Accepted(_)))
    }

    fn reply(input: &[u8]) -> Option<&'static str> {
        match verdict(input) {
            Some(Verdict::Refused { reply, .. }) => Some(reply),
            _ => None,
        }
    }

    /// The answers measured from Debian 12's sshd (see the reference tests too).
    #[test]
    fn sshd_answers() {
        assert_eq!(reply(b"GET / HTTP/1.0\r\n\r\n"), Some(INVALID));
        assert_eq!(reply(b"SSH-1337\r\n"), Some(INVALID));
        assert_eq!(reply(b"SSH-1111-OpenSSH_9.0\r\n"), Some(INVALID));
        assert_eq!(reply(b"SSH-1.5-x\r\n"), Some(MAJOR_DIFFERS));
        assert_eq!(reply(b"SSH-3.0-x\r\n"), Some(MAJOR_DIFFERS));
        assert_eq!(reply(b"SSH-2.0-\r\n"), Some(INVALID));
        assert_eq!(reply(b"SSH-2.0\r\n"), Some(INVALID));
        assert_eq!(reply(b"ssh-2.0-x\r\n"), Some(INVALID));
        assert_eq!(reply(b"\r\n\r\nSSH-2.0-x\r\n"), Some(INVALID));
        assert_eq!(reply(b"\x00\x01garbage\r\n"), Some(INVALID));
        assert_eq!(reply(b"SSH-2.0-x\x00y\r\n"), Some(INVALID));
        assert_eq!(reply(b"SSH-2.0-x\ry\n"), Some(INVALID));
        assert!(accepted(b"SSH-2.0-x\r\n"));
        assert!(accepted(b"SSH-2.0-x\n"));
        assert!(accepted(b"SSH-1.99-x\r\n"));
        assert!(accepted(b"SSH-2.1-x\r\n"));
        assert!(accepted(b"SSH-2.0-x y\r\n"));
        assert!(accepted(b"SSH- 2.0-x\r\n"));
        assert!(accepted(b"SSH-2.0-x\r\r\n"));
        // Carriage returns alone never finish a line: sshd stays silent.
        assert_eq!(verdict(b"\r\r\r\r\r\r\r\r"), None);
    }

    #[test]
    fn a_refusal_stops_at_the_offending_byte() {
        let mut reader = IdentReader::default();
        let input = b"\x00\x01garbage\r\n";
        let consumed = input.iter().position(|b| reader.push(*b).is_some());
        assert_eq!(consumed, Some(0), "sshd stops reading at the NUL");
    }

    #[test]
    fn over_long_lines_are_refused() {
        let mut line = b"SSH-2.0-".to_vec();
        line.extend(std::iter::repeat_n(b'A', MAX_LINE));
        assert_eq!(reply(&line), Some(INVALID));
    }
}
