//! A guess at what a box's connection speaks, from its first bytes and its port,
//! for the event (nothing is decided on it).

/// The guess's name in events.
pub fn guess(port: u16, first: &[u8]) -> &'static str {
    if let Some(name) = from_bytes(first) {
        return name;
    }
    match port {
        80 | 8000 | 8080 | 8888 => "http",
        443 | 8443 => "tls",
        22 | 2222 => "ssh",
        53 => "dns",
        25 | 465 | 587 => "smtp",
        6660..=6669 | 6697 | 7000 => "irc",
        3333 | 4444 | 5555 | 7777 | 14444 | 45700 => "stratum",
        _ => "unknown",
    }
}

fn from_bytes(first: &[u8]) -> Option<&'static str> {
    const HTTP_METHODS: &[&[u8]] = &[
        b"GET ",
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"CONNECT ",
        b"PATCH ",
    ];
    if HTTP_METHODS.iter().any(|m| first.starts_with(m)) {
        return Some("http");
    }
    // A TLS handshake record: content type 22, version 3.x.
    if first.len() >= 3 && first[0] == 0x16 && first[1] == 0x03 {
        return Some("tls");
    }
    if first.starts_with(b"SSH-") {
        return Some("ssh");
    }
    let upper = first.to_ascii_uppercase();
    if upper.starts_with(b"EHLO ") || upper.starts_with(b"HELO ") {
        return Some("smtp");
    }
    if upper.starts_with(b"NICK ") || upper.starts_with(b"USER ") || upper.starts_with(b"PASS ") {
        return Some("irc");
    }
    let text = String::from_utf8_lossy(first);
    if text.trim_start().starts_with('{')
        && (text.contains("\"mining.") || text.contains("\"login\"") || text.contains("jsonrpc"))
    {
        return Some("stratum");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::guess;

    #[test]
    fn bytes_win_over_the_port() {
        assert_eq!(guess(80, b"GET / HTTP/1.1\r\n"), "http");
        assert_eq!(guess(8080, b"\x16\x03\x01\x02\x00"), "tls");
        assert_eq!(guess(443, b"SSH-2.0-Go\r\n"), "ssh");
        assert_eq!(guess(2525, b"EHLO x\r\n"), "smtp");
        assert_eq!(guess(1, b"NICK bot\r\nUSER a b c d\r\n"), "irc");
        assert_eq!(
            guess(1, br#"{"id":1,"method":"mining.subscribe","params":[]}"#),
            "stratum"
        );
        assert_eq!(guess(3333, b""), "stratum");
        assert_eq!(guess(25, b""), "smtp");
        assert_eq!(guess(12345, b"\x00\x01"), "unknown");
    }
}
