//! FTP's text on the wire (RFC 959, EPSV from RFC 2428): bounded line reads, the
//! box's commands, the server's replies, and the passive-mode replies both ways.
//! Everything here reads attacker or upstream bytes: bounded, and never panics.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// The longest command line a box may send (vsftpd's own limit is 4 KiB; clients
/// send well under 512 bytes).
pub const MAX_COMMAND_LINE: usize = 1024;
/// The longest reply line accepted from upstream.
pub const MAX_REPLY_LINE: usize = 2048;
/// Lines of one multi-line reply accepted from upstream.
pub const MAX_REPLY_LINES: usize = 64;
/// The longest path the box may name (longer ones are refused, not cut).
pub const MAX_PATH: usize = 512;

/// A line that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The peer closed (with what it sent of an unfinished line, if anything).
    #[error("connection closed")]
    Closed,
    /// The line is longer than allowed.
    #[error("line longer than {0} bytes")]
    TooLong(usize),
    /// The socket failed.
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one line (up to `\n`, at most `max` bytes), without its line end.
pub async fn read_line<R>(reader: &mut R, max: usize) -> Result<Vec<u8>, LineError>
where
    R: AsyncBufRead + Unpin,
{
    let mut line = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let read = (&mut *reader)
        .take(limit)
        .read_until(b'\n', &mut line)
        .await?;
    if read == 0 {
        return Err(LineError::Closed);
    }
    if line.last() != Some(&b'\n') {
        return Err(if line.len() > max {
            LineError::TooLong(max)
        } else {
            LineError::Closed
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(line)
}

/// A command of the box: its verb in capitals and its argument (maybe empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// `USER`, `RETR`, ... (ASCII letters only).
    pub verb: String,
    /// What followed the verb and one space, as sent.
    pub arg: String,
}

/// Why a command line was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No verb of letters (binary, empty line, Telnet bytes).
    #[error("no command verb")]
    NoVerb,
    /// The argument holds control bytes (which would reach upstream's wire).
    #[error("control bytes in the argument")]
    ControlBytes,
}

/// The longest verb accepted (FTP's are 3 or 4 letters).
const MAX_VERB: usize = 8;

/// Parses a command line (already without its line end).
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let (verb, arg) = match line.iter().position(|&b| b == b' ') {
        Some(space) => (&line[..space], &line[space + 1..]),
        None => (line, &[][..]),
    };
    if verb.is_empty() || verb.len() > MAX_VERB || !verb.iter().all(u8::is_ascii_alphabetic) {
        return Err(CommandError::NoVerb);
    }
    if arg.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(CommandError::ControlBytes);
    }
    Ok(Command {
        verb: String::from_utf8_lossy(verb).to_ascii_uppercase(),
        arg: String::from_utf8_lossy(arg).into_owned(),
    })
}

/// A reply of the server: its code and its text (the lines joined by `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text after the code.
    pub text: String,
}

impl Reply {
    /// 1xx: more replies follow.
    pub fn is_preliminary(&self) -> bool {
        (100..200).contains(&self.code)
    }

    /// 2xx.
    pub fn is_complete(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The reply shortened for an event (one line, bounded).
    pub fn summary(&self) -> String {
        let first = self.text.lines().next().unwrap_or_default();
        let first: String = first.chars().take(200).collect();
        format!("{} {first}", self.code)
    }
}

/// A reply that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// A line that is not part of an FTP reply.
    #[error("not an FTP reply: {0}")]
    Malformed(String),
    /// More lines than [`MAX_REPLY_LINES`].
    #[error("a reply of more than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    /// The line could not be read.
    #[error(transparent)]
    Line(#[from] LineError),
}

/// The code of a reply line and whether it continues (`123-`), if it starts one.
fn reply_start(line: &[u8]) -> Option<(u16, bool)> {
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || !(b'1'..=b'5').contains(&digits[0]) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |code, digit| code * 10 + u16::from(digit - b'0'));
    match line.get(3) {
        None | Some(b' ') => Some((code, false)),
        Some(b'-') => Some((code, true)),
        Some(_) => None,
    }
}

/// Reads one whole reply (RFC 959 4.2: a multi-line one ends at a line starting
/// with the same code and a space).
pub async fn read_reply<R>(reader: &mut R) -> Result<Reply, ReplyError>
where
    R: AsyncBufRead + Unpin,
{
    let first = read_line(reader, MAX_REPLY_LINE).await?;
    let Some((code, mut more)) = reply_start(&first) else {
        return Err(ReplyError::Malformed(shown(&first)));
    };
    let mut text = text_after_code(&first);
    let mut lines = 1;
    while more {
        lines += 1;
        if lines > MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines);
        }
        let line = read_line(reader, MAX_REPLY_LINE).await?;
        text.push('\n');
        if let Some((last, false)) = reply_start(&line)
            && last == code
        {
            more = false;
            text.push_str(&text_after_code(&line));
        } else {
            text.push_str(&String::from_utf8_lossy(&line));
        }
    }
    Ok(Reply { code, text })
}

fn text_after_code(line: &[u8]) -> String {
    String::from_utf8_lossy(line.get(4..).unwrap_or_default()).into_owned()
}

/// A bounded, lossy rendering of bytes for an error message.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned()
}

/// The port of a `227` reply. Its address is not returned: the data connection
/// goes to the control connection's peer whatever the server says (as curl does),
/// so a hostile server cannot point it elsewhere.
pub fn pasv_port(text: &str) -> Option<u16> {
    // The six numbers are the first run of `d,d,d,d,d,d`; most servers put them in
    // parentheses, RFC 959 does not require it.
    let bytes = text.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        if bytes[start].is_ascii_digit() {
            let end = bytes[start..]
                .iter()
                .position(|b| !(b.is_ascii_digit() || *b == b','))
                .map_or(bytes.len(), |len| start + len);
            if let Some(port) = six_numbers_port(&bytes[start..end]) {
                return Some(port);
            }
            start = end;
        } else {
            start += 1;
        }
    }
    None
}

fn six_numbers_port(run: &[u8]) -> Option<u16> {
    let numbers: Vec<u8> = run
        .split(|&b| b == b',')
        .map(|n| std::str::from_utf8(n).ok()?.parse::<u8>().ok())
        .collect::<Option<_>>()?;
    match numbers[..] {
        [_, _, _, _, high, low] => Some(u16::from_be_bytes([high, low])),
        _ => None,
    }
}

/// The port of a `229` reply: `(|||port|)`, any printable delimiter.
pub fn epsv_port(text: &str) -> Option<u16> {
    let open = text.find('(')?;
    let inner = &text[open + 1..];
    let close = inner.find(')')?;
    let inner = &inner.as_bytes()[..close];
    let delimiter = *inner.first()?;
    if inner.len() < 5 || !(33..=126).contains(&delimiter) {
        return None;
    }
    let parts: Vec<&[u8]> = inner.split(|&b| b == delimiter).collect();
    match parts[..] {
        [[], [], [], port, []] if !port.is_empty() && port.iter().all(u8::is_ascii_digit) => {
            std::str::from_utf8(port)
                .ok()?
                .parse()
                .ok()
                .filter(|&p| p != 0)
        }
        _ => None,
    }
}

/// The byte count of a `150` reply, as vsftpd and proftpd say it: `(1234 bytes)`.
pub fn announced_size(text: &str) -> Option<u64> {
    let end = text.rfind(" bytes)")?;
    let open = text[..end].rfind('(')?;
    text[open + 1..end].parse().ok()
}

/// The box's `227` reply for a data port at `ip`.
pub fn pasv_reply(ip: Ipv4Addr, port: u16) -> String {
    let [a, b, c, d] = ip.octets();
    let [high, low] = port.to_be_bytes();
    format!("227 Entering Passive Mode ({a},{b},{c},{d},{high},{low}).")
}

/// The box's `229` reply for a data port.
pub fn epsv_reply(port: u16) -> String {
    format!("229 Entering Extended Passive Mode (|||{port}|)")
}

/// The path `arg` names from the directory `cwd`, absolute and without `.` or `..`
/// (None when too long). The box's server keeps its working directory itself; the
/// upstream fetch names the file by this path.
pub fn resolve(cwd: &str, arg: &str) -> Option<String> {
    let joined = if arg.starts_with('/') {
        arg.to_owned()
    } else {
        format!("{cwd}/{arg}")
    };
    if joined.len() > MAX_PATH {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// The URL a fetch is reported under: `ftp://host[:port]/path`.
pub fn ftp_url(server: SocketAddr, path: &str) -> String {
    let host = match server.ip() {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let path = path.trim_start_matches('/');
    match server.port() {
        21 => format!("ftp://{host}/{path}"),
        port => format!("ftp://{host}:{port}/{path}"),
    }
}
