//! Escaping of attacker-controlled text before it reaches a log line or a terminal.
//!
//! Usernames, passwords, client versions and commands come straight from the network.
//! Written raw, they could forge log lines (CR/LF), drive an operator's terminal (ESC
//! sequences) or hide text (BIDI overrides). JSON encoding already escapes C0 controls in
//! the event log; the operational log and anything printed use this.

use std::borrow::Cow;
use std::fmt::Write;

/// Returns `text` with control characters, backslashes and invisible formatting
/// characters replaced by visible escapes (`\n`, `\x1b`, `\u{202e}`).
pub fn escape_untrusted(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Every byte kept, nothing interpreted: printable ASCII as is, `\\`, `\r`, `\n`,
/// `\t`, and every other byte as `\xNN`. For payloads (forwarded data) that may be
/// binary and must be recoverable from the log.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

/// Lossy UTF-8 decoding followed by [`escape_untrusted`], for raw protocol bytes.
pub fn escape_untrusted_bytes(bytes: &[u8]) -> String {
    escape_untrusted(&String::from_utf8_lossy(bytes)).into_owned()
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(c as u32,
            0x200b..=0x200f   // zero-width and directional marks
            | 0x2028..=0x202e // line/paragraph separators, BIDI embeddings and overrides
            | 0x2060..=0x2069 // word joiner, BIDI isolates
            | 0xfeff          // zero-width no-break space
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(escape_untrusted("root"), Cow::Borrowed("root")));
    }

    #[test]
    fn controls_and_tricks_are_visible() {
        assert_eq!(escape_untrusted("a\nb"), "a\\nb");
        assert_eq!(escape_untrusted("\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(escape_untrusted("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(escape_untrusted("back\\slash"), "back\\\\slash");
        assert_eq!(escape_untrusted("\u{85}"), "\\u{85}");
        assert_eq!(escape_untrusted("\x7f"), "\\x7f");
        assert_eq!(escape_untrusted("héllo ☃"), "héllo ☃");
    }

    #[test]
    fn bytes_are_decoded_lossily() {
        assert_eq!(escape_untrusted_bytes(b"a\xffb\x00"), "a\u{fffd}b\\x00");
    }

    #[test]
    fn bytes_escape_keeps_every_byte_visible() {
        assert_eq!(
            escape_bytes(b"GET / HTTP/1.1\r\n\x00\xff\x1b[31m\\"),
            "GET / HTTP/1.1\\r\\n\\x00\\xff\\x1b[31m\\\\"
        );
        assert_eq!(escape_bytes("é".as_bytes()), "\\xc3\\xa9");
    }
}
