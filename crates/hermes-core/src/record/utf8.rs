//! Incremental UTF-8 decoding for byte streams cut at arbitrary points.

/// Decodes a byte stream chunk by chunk. A character split across chunks is kept until
/// its remaining bytes arrive; invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Decodes `chunk` after whatever was pending, keeping an incomplete final
    /// character for the next call.
    pub fn decode(&mut self, chunk: &[u8]) -> String {
        let owned;
        let mut input: &[u8] = if self.pending.is_empty() {
            chunk
        } else {
            self.pending.extend_from_slice(chunk);
            owned = std::mem::take(&mut self.pending);
            &owned
        };
        let mut out = String::with_capacity(input.len());
        loop {
            match std::str::from_utf8(input) {
                Ok(valid) => {
                    out.push_str(valid);
                    break;
                }
                Err(error) => {
                    let (valid, rest) = input.split_at(error.valid_up_to());
                    // `valid` was just checked by from_utf8.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match error.error_len() {
                        Some(bad) => {
                            out.push('\u{fffd}');
                            input = &rest[bad..];
                        }
                        None => {
                            // An incomplete character at the end: wait for more bytes.
                            self.pending.extend_from_slice(rest);
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// Ends the stream: an incomplete character left over becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        if self.pending.is_empty() {
            String::new()
        } else {
            self.pending.clear();
            "\u{fffd}".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_chunks_survives() {
        let text = "héllo ☃ 日本語 🎉";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut stream = Utf8Stream::default();
            let mut out = stream.decode(&bytes[..cut]);
            out.push_str(&stream.decode(&bytes[cut..]));
            out.push_str(&stream.finish());
            assert_eq!(out, text, "cut at {cut}");
        }
    }

    #[test]
    fn byte_by_byte() {
        let text = "🎉a☃";
        let mut stream = Utf8Stream::default();
        let out: String = text
            .as_bytes()
            .iter()
            .map(|b| stream.decode(&[*b]))
            .collect();
        assert_eq!(out, text);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut stream = Utf8Stream::default();
        assert_eq!(
            stream.decode(b"\x00\x01\x02ok\xff\xfe!"),
            "\u{0}\u{1}\u{2}ok\u{fffd}\u{fffd}!"
        );
        assert_eq!(stream.decode(b"\xe2\x98"), "");
        assert_eq!(stream.finish(), "\u{fffd}");
    }
}
