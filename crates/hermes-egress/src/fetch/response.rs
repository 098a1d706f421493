//! The upstream's response, read as it streams through to the box: its status, and
//! its body decoded (length, chunked or until close) up to a size limit, so the
//! store gets the file the box's client saves, not the HTTP framing around it.

use super::request::head_end;

/// The largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

/// Why a response could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad HTTP response: {0}")]
pub struct ResponseError(pub &'static str);

#[derive(Debug)]
enum Chunk {
    Size(Vec<u8>),
    Data(u64),
    DataEnd(Vec<u8>),
    Trailer(Vec<u8>),
}

#[derive(Debug)]
enum State {
    Head,
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// What one [`ResponseReader::feed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Bytes of the input taken (all of them, unless the response ended or the
    /// body reached its limit).
    pub consumed: usize,
    /// The response is complete.
    pub done: bool,
    /// The body reached the limit: it holds exactly `limit` bytes; `consumed` stops
    /// where it did.
    pub limit_reached: bool,
}

/// A response being read.
#[derive(Debug)]
pub struct ResponseReader {
    state: State,
    head: Vec<u8>,
    /// The final status (after any 1xx).
    pub status: Option<u16>,
    /// The `Location` header of the final response.
    pub location: Option<String>,
    /// The body so far, decoded.
    pub body: Vec<u8>,
    limit: usize,
    head_request: bool,
}

impl ResponseReader {
    /// A reader keeping at most `limit` body bytes; `head_request` when the request
    /// was HEAD (no body follows whatever the headers say).
    pub fn new(limit: usize, head_request: bool) -> Self {
        ResponseReader {
            state: State::Head,
            head: Vec::new(),
            status: None,
            location: None,
            body: Vec::new(),
            limit,
            head_request,
        }
    }

    /// Whether the response is complete.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The upstream closed: complete if the body runs until close (or is done).
    pub fn close(&mut self) -> Result<(), ResponseError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            State::Head => Err(ResponseError("closed before the head")),
            _ => Err(ResponseError("closed before the end of the body")),
        }
    }

    /// Takes bytes from upstream.
    pub fn feed(&mut self, data: &[u8]) -> Result<Fed, ResponseError> {
        let mut at = 0;
        while at < data.len() {
            let rest = &data[at..];
            match &mut self.state {
                State::Done => break,
                State::Head => at += self.feed_head(rest)?,
                State::UntilClose => {
                    let (used, full) = self.keep(rest);
                    at += used;
                    if full {
                        return Ok(self.fed(at, true));
                    }
                }
                State::Length(left) => {
                    let take = rest.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= take as u64;
                    let finished = *left == 0;
                    let (used, full) = self.keep(&rest[..take]);
                    at += used;
                    if full {
                        if let State::Length(left) = &mut self.state {
                            *left += (take - used) as u64;
                        }
                        return Ok(self.fed(at, true));
                    }
                    if finished {
                        self.state = State::Done;
                    }
                }
                State::Chunked(_) => {
                    let (used, full) = self.feed_chunked(rest)?;
                    at += used;
                    if full {
                        return Ok(self.fed(at, true));
                    }
                }
            }
        }
        Ok(self.fed(at, false))
    }

    fn fed(&self, consumed: usize, limit_reached: bool) -> Fed {
        Fed {
            consumed,
            done: self.is_done(),
            limit_reached,
        }
    }

    /// Appends body bytes up to the limit: (bytes taken, limit reached).
    fn keep(&mut self, data: &[u8]) -> (usize, bool) {
        let room = self.limit - self.body.len();
        if data.len() > room {
            self.body.extend_from_slice(&data[..room]);
            return (room, true);
        }
        self.body.extend_from_slice(data);
        (data.len(), false)
    }

    fn feed_head(&mut self, data: &[u8]) -> Result<usize, ResponseError> {
        let before = self.head.len();
        let take = data.len().min(MAX_HEAD + 4 - before);
        self.head.extend_from_slice(&data[..take]);
        let Some(end) = head_end(&self.head) else {
            if self.head.len() > MAX_HEAD {
                return Err(ResponseError("head too large"));
            }
            return Ok(take);
        };
        let head = std::mem::take(&mut self.head);
        self.start_body(&head[..end])?;
        Ok(end - before)
    }

    fn start_body(&mut self, head: &[u8]) -> Result<(), ResponseError> {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.lines();
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(ResponseError("not HTTP/1.x"));
        }
        let status: u16 = parts
            .next()
            .filter(|code| code.len() == 3)
            .and_then(|code| code.parse().ok())
            .filter(|code| (100..600).contains(code))
            .ok_or(ResponseError("status code"))?;
        if (100..200).contains(&status) && status != 101 {
            // An interim response: the real one follows.
            self.state = State::Head;
            return Ok(());
        }
        self.status = Some(status);
        let mut chunked = false;
        let mut length: Option<u64> = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            } else if name.eq_ignore_ascii_case("content-length") {
                let parsed = value
                    .parse::<u64>()
                    .map_err(|_| ResponseError("Content-Length"))?;
                if length.is_some_and(|known| known != parsed) {
                    return Err(ResponseError("conflicting Content-Length"));
                }
                length = Some(parsed);
            } else if name.eq_ignore_ascii_case("location") {
                self.location = Some(value.to_owned());
            }
        }
        self.state = if self.head_request || status == 101 || status == 204 || status == 304 {
            State::Done
        } else if chunked {
            State::Chunked(Chunk::Size(Vec::new()))
        } else {
            match length {
                Some(0) => State::Done,
                Some(n) => State::Length(n),
                None => State::UntilClose,
            }
        };
        Ok(())
    }

    /// Reads chunked framing: (bytes taken, limit reached).
    fn feed_chunked(&mut self, data: &[u8]) -> Result<(usize, bool), ResponseError> {
        let mut at = 0;
        while at < data.len() {
            let State::Chunked(chunk) = &mut self.state else {
                break;
            };
            match chunk {
                Chunk::Size(line) | Chunk::DataEnd(line) | Chunk::Trailer(line) => {
                    let byte = data[at];
                    at += 1;
                    if byte != b'\n' {
                        if line.len() >= MAX_LINE {
                            return Err(ResponseError("chunk line too long"));
                        }
                        line.push(byte);
                        continue;
                    }
                    let line = std::mem::take(line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    let next = match chunk {
                        Chunk::Size(_) => match chunk_size(line)? {
                            0 => Chunk::Trailer(Vec::new()),
                            n => Chunk::Data(n),
                        },
                        Chunk::DataEnd(_) if line.is_empty() => Chunk::Size(Vec::new()),
                        Chunk::DataEnd(_) => return Err(ResponseError("chunk too long")),
                        Chunk::Trailer(_) if line.is_empty() => {
                            self.state = State::Done;
                            break;
                        }
                        _ => Chunk::Trailer(Vec::new()),
                    };
                    *chunk = next;
                }
                Chunk::Data(left) => {
                    let take = (data.len() - at).min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= take as u64;
                    if *left == 0 {
                        *chunk = Chunk::DataEnd(Vec::new());
                    }
                    let (used, full) = self.keep(&data[at..at + take]);
                    at += used;
                    if full {
                        return Ok((at, true));
                    }
                }
            }
        }
        Ok((at, false))
    }
}

fn chunk_size(line: &[u8]) -> Result<u64, ResponseError> {
    let digits = line.split(|b| *b == b';').next().unwrap_or_default();
    let digits = std::str::from_utf8(digits)
        .map_err(|_| ResponseError("chunk size"))?
        .trim();
    if digits.is_empty() || digits.len() > 15 {
        return Err(ResponseError("chunk size"));
    }
    u64::from_str_radix(digits, 16).map_err(|_| ResponseError("chunk size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `data` in pieces of `step` bytes; the reader and bytes consumed.
    fn read_in_steps(data: &[u8], step: usize, limit: usize) -> (ResponseReader, usize, bool) {
        let mut reader = ResponseReader::new(limit, false);
        let mut consumed = 0;
        for piece in data.chunks(step) {
            let fed = reader.feed(piece).expect("feed");
            consumed += fed.consumed;
            if fed.limit_reached {
                return (reader, consumed, true);
            }
            if fed.done {
                break;
            }
        }
        (reader, consumed, false)
    }

    #[test]
    fn a_content_length_body_is_kept_whatever_the_pieces() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        for step in [1, 2, 7, 100] {
            let (reader, consumed, cut) = read_in_steps(response, step, 100);
            assert!(reader.is_done() && !cut, "{step}");
            assert_eq!(reader.status, Some(200));
            assert_eq!(reader.body, b"hello");
            assert_eq!(consumed, response.len());
        }
    }

    #[test]
    fn a_chunked_body_is_decoded_with_extensions_and_trailers() {
        let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;x=y\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-T: 1\r\n\r\n";
        for step in [1, 3, 1000] {
            let (reader, consumed, _) = read_in_steps(response, step, 100);
            assert!(reader.is_done(), "{step}");
            assert_eq!(reader.body, b"hello, world!!!");
            assert_eq!(consumed, response.len());
        }
    }

    #[test]
    fn a_body_until_close_needs_the_close() {
        let mut reader = ResponseReader::new(100, false);
        reader.feed(b"HTTP/1.0 200 OK\r\n\r\nabc").expect("feed");
        assert!(!reader.is_done());
        reader.close().expect("close");
        assert_eq!(reader.body, b"abc");
        let mut short = ResponseReader::new(100, false);
        short
            .feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")
            .expect("feed");
        assert!(short.close().is_err());
    }

    #[test]
    fn the_limit_cuts_the_body_exactly() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789";
        let head = response.len() - 10;
        for step in [1, 4, 1000] {
            let (reader, consumed, cut) = read_in_steps(response, step, 4);
            assert!(cut, "{step}");
            assert_eq!(reader.body, b"0123");
            assert_eq!(consumed, head + 4, "{step}");
        }
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
        let (reader, consumed, cut) = read_in_steps(chunked, 1000, 4);
        assert!(cut);
        assert_eq!(reader.body, b"abcd");
        assert_eq!(&chunked[..consumed], &chunked[..chunked.len() - 9]);
    }

    #[test]
    fn interim_and_bodiless_responses() {
        let mut reader = ResponseReader::new(100, false);
        let fed = reader
            .feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\n\r\n")
            .expect("feed");
        assert!(fed.done);
        assert_eq!(reader.status, Some(302));
        assert_eq!(reader.location.as_deref(), Some("http://169.254.169.254/"));
        let mut head = ResponseReader::new(100, true);
        assert!(
            head.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
                .expect("feed")
                .done
        );
        let mut not_modified = ResponseReader::new(100, false);
        assert!(
            not_modified
                .feed(b"HTTP/1.1 304 Not Modified\r\n\r\n")
                .expect("feed")
                .done
        );
    }

    #[test]
    fn malformed_responses_are_errors() {
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
        ] {
            let mut reader = ResponseReader::new(100, false);
            assert!(
                reader.feed(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut huge = ResponseReader::new(100, false);
        let line = vec![b'a'; MAX_HEAD + 10];
        assert!(huge.feed(b"HTTP/1.1 200 OK\r\n").is_ok());
        assert!(huge.feed(&line).is_err());
    }
}
