//! The box's HTTP/1.x request head: read within a size bound, checked strictly
//! enough that what goes upstream is well formed, and rewritten for upstream
//! (hop-by-hop headers out, `Connection: close` in).
//!
//! Our own small parser rather than hyper's server: the gateway needs the head's
//! exact bytes and nothing of a server's machinery (keep-alive, body decoding,
//! automatic responses that a real network path would not produce), and relays the
//! response bytes as the upstream sent them.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest request head accepted (curl and wget send a few hundred bytes).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header lines accepted.
const MAX_HEADERS: usize = 100;
/// The largest request body forwarded (downloads are GETs; a small POST passes).
pub const MAX_BODY: u64 = 1024 * 1024;

/// Why a request was not forwarded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// The box closed before a whole head arrived.
    #[error("the connection closed before a whole request head ({0} bytes)")]
    Incomplete(usize),
    /// Longer than [`MAX_HEAD`] or with more than 100 headers.
    #[error("the request head is too large")]
    TooLarge,
    /// Not HTTP/1.x as a client sends it.
    #[error("not an HTTP/1.x request: {0}")]
    Malformed(&'static str),
    /// A body this gateway does not forward.
    #[error("unsupported request body: {0}")]
    Body(&'static str),
    /// Reading from the box failed.
    #[error("reading the request: {0}")]
    Io(String),
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, a token.
    pub method: String,
    /// The request target as sent (origin form `/path?q` or absolute form).
    pub target: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    /// Header lines, name and value, in order.
    pub headers: Vec<(String, String)>,
    /// `Content-Length` of the body to forward.
    pub body_length: u64,
    /// Bytes after the head already read (the body's start).
    pub rest: Vec<u8>,
}

/// Reads a request head from `reader`.
pub async fn read_request(reader: &mut (impl AsyncRead + Unpin)) -> Result<Request, RequestError> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = head_end(&buffer) {
            let rest = buffer.split_off(end);
            return parse(&buffer, rest);
        }
        if buffer.len() >= MAX_HEAD {
            return Err(RequestError::TooLarge);
        }
        let room = (MAX_HEAD - buffer.len()).min(chunk.len());
        let read = reader
            .read(&mut chunk[..room])
            .await
            .map_err(|e| RequestError::Io(e.to_string()))?;
        if read == 0 {
            return Err(RequestError::Incomplete(buffer.len()));
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// Where the head ends (after its blank line), `\r\n` or bare `\n` line ends.
pub(crate) fn head_end(buffer: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, byte) in buffer.iter().enumerate() {
        if *byte == b'\n' {
            let line = &buffer[line_start..i];
            if (line.is_empty() || line == b"\r") && line_start > 0 {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

pub(crate) fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse(head: &[u8], rest: Vec<u8>) -> Result<Request, RequestError> {
    let text = std::str::from_utf8(head).map_err(|_| RequestError::Malformed("not UTF-8"))?;
    let mut lines = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed("request line"));
    };
    if !is_token(method) {
        return Err(RequestError::Malformed("method"));
    }
    if target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(RequestError::Malformed("target"));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(RequestError::Malformed("version"));
    }
    let mut headers = Vec::new();
    for line in lines.take_while(|line| !line.is_empty()) {
        if headers.len() >= MAX_HEADERS {
            return Err(RequestError::TooLarge);
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(RequestError::Malformed("header line"))?;
        // No obsolete line folding, no space before the colon (request smuggling).
        if !is_token(name) {
            return Err(RequestError::Malformed("header name"));
        }
        let value = value.trim_matches([' ', '\t']);
        if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(RequestError::Malformed("header value"));
        }
        headers.push((name.to_owned(), value.to_owned()));
    }
    fn named<'a>(
        headers: &'a [(String, String)],
        wanted: &'a str,
    ) -> impl Iterator<Item = &'a str> {
        headers
            .iter()
            .filter(move |(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.as_str())
    }
    if named(&headers, "transfer-encoding").next().is_some() {
        return Err(RequestError::Body("Transfer-Encoding"));
    }
    let lengths: Vec<&str> = named(&headers, "content-length").collect();
    let body_length = match lengths.as_slice() {
        [] => 0,
        [one] => one
            .parse::<u64>()
            .map_err(|_| RequestError::Malformed("Content-Length"))?,
        _ => return Err(RequestError::Malformed("several Content-Length")),
    };
    if body_length > MAX_BODY {
        return Err(RequestError::Body("larger than 1 MiB"));
    }
    if named(&headers, "host").count() > 1 {
        return Err(RequestError::Malformed("several Host"));
    }
    Ok(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        version: version.to_owned(),
        headers,
        body_length,
        rest,
    })
}

/// Headers that belong to one hop, never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Request {
    /// The value of the first header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The host the box asked for: its `Host` header, or the address it connected
    /// to (as the URL's authority).
    pub fn authority(&self, original_dst: SocketAddr) -> String {
        self.authority_for(80, original_dst)
    }

    /// As [`Request::authority`], for a scheme whose default port is `default_port`.
    fn authority_for(&self, default_port: u16, original_dst: SocketAddr) -> String {
        match self.header("host") {
            Some(host) if !host.is_empty() => host.to_owned(),
            _ if original_dst.port() == default_port => host_text(original_dst),
            _ => format!("{}:{}", host_text(original_dst), original_dst.port()),
        }
    }

    /// The URL fetched, as the box's client would print it.
    pub fn url(&self, original_dst: SocketAddr) -> String {
        self.url_for("http", 80, original_dst)
    }

    /// The URL fetched over TLS (`https://`).
    pub fn https_url(&self, original_dst: SocketAddr) -> String {
        self.url_for("https", 443, original_dst)
    }

    fn url_for(&self, scheme: &str, default_port: u16, original_dst: SocketAddr) -> String {
        if self.target.starts_with("http://") || self.target.starts_with("https://") {
            return self.target.clone();
        }
        let path = if self.target.starts_with('/') {
            self.target.as_str()
        } else {
            "/"
        };
        let authority = self.authority_for(default_port, original_dst);
        format!("{scheme}://{authority}{path}")
    }

    /// The head sent upstream: the box's method, target and end-to-end headers,
    /// `Host` always present, `Connection: close`.
    pub fn upstream_head(&self, original_dst: SocketAddr) -> Vec<u8> {
        let dropped: Vec<String> = self
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, value)| value.split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .collect();
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        if self.header("host").is_none() {
            head.push_str(&format!("Host: {}\r\n", self.authority(original_dst)));
        }
        for (name, value) in &self.headers {
            let lower = name.to_ascii_lowercase();
            if HOP_BY_HOP.contains(&lower.as_str()) || dropped.contains(&lower) {
                continue;
            }
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        head.into_bytes()
    }
}

fn host_text(address: SocketAddr) -> String {
    match address {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> Result<Request, RequestError> {
        let mut reader = bytes;
        read_request(&mut reader).await
    }

    fn dst() -> SocketAddr {
        "203.0.113.9:80".parse().expect("addr")
    }

    #[tokio::test]
    async fn a_wget_request_is_parsed_and_rewritten() {
        let request = read(
            b"GET /x.sh?a=1 HTTP/1.1\r\nUser-Agent: Wget/1.21.3\r\nAccept: */*\r\nHost: evil.example\r\nConnection: Keep-Alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 300\r\n\r\nextra",
        )
        .await
        .expect("request");
        assert_eq!(request.method, "GET");
        assert_eq!(request.url(dst()), "http://evil.example/x.sh?a=1");
        assert_eq!(request.rest, b"extra");
        let head = String::from_utf8(request.upstream_head(dst())).expect("utf8");
        assert_eq!(
            head,
            "GET /x.sh?a=1 HTTP/1.1\r\nUser-Agent: Wget/1.21.3\r\nAccept: */*\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn without_host_the_destination_names_the_url() {
        let request = read(b"GET / HTTP/1.0\n\n").await.expect("request");
        assert_eq!(request.url(dst()), "http://203.0.113.9/");
        let other: SocketAddr = "[2001:db8::1]:8080".parse().expect("addr");
        assert_eq!(request.url(other), "http://[2001:db8::1]:8080/");
        let head = String::from_utf8(request.upstream_head(other)).expect("utf8");
        assert!(
            head.starts_with("GET / HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn malformed_and_oversized_requests_are_refused() {
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"G\x01T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert!(
                read(bad).await.is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            read(b"GET / HTTP/1.1\r\nHost: a\r\n").await,
            Err(RequestError::Incomplete(25))
        );
        let mut huge = b"GET / HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert_eq!(read(&huge).await, Err(RequestError::TooLarge));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(read(&many).await, Err(RequestError::TooLarge));
    }

    #[tokio::test]
    async fn a_small_body_is_announced() {
        let request = read(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nab")
            .await
            .expect("request");
        assert_eq!(request.body_length, 3);
        assert_eq!(request.rest, b"ab");
    }
}
