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
        let input: &[u8] = if self.pending.is_empty() {
            chunk
        } else {
            self.pending.extend_from_slice(chunk);
            owned = std::mem::take(&mut self.pending);
            &owned
        };
        // One pass over the input (binary output is mostly invalid UTF-8: decoding
        // it error by error with from_utf8 cost more than the encryption).
        let mut out = String::with_capacity(input.len());
        let mut chunks = input.utf8_chunks().peekable();
        while let Some(piece) = chunks.next() {
            out.push_str(piece.valid());
            let invalid = piece.invalid();
            if invalid.is_empty() {
                continue;
            }
            let at_end = chunks.peek().is_none();
            let incomplete =
                at_end && std::str::from_utf8(invalid).is_err_and(|e| e.error_len().is_none());
            if incomplete {
                // A character cut at the end of the chunk: wait for the rest.
                self.pending.extend_from_slice(invalid);
            } else {
                out.push('\u{fffd}');
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
    fn random_bytes_decode_like_from_utf8_lossy() {
        let mut state: u32 = 0x1234_5678;
        let bytes: Vec<u8> = (0..100_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        let whole = String::from_utf8_lossy(&bytes);
        for size in [1, 2, 3, 7, 4096, 100_000] {
            let mut stream = Utf8Stream::default();
            let mut out: String = bytes.chunks(size).map(|c| stream.decode(c)).collect();
            out.push_str(&stream.finish());
            assert_eq!(out, whole, "chunks of {size}");
        }
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
