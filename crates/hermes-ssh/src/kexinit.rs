//! The client's first binary packet, its KEXINIT, read in plaintext as it passes by:
//! its algorithm lists and its HASSH (md5 of `kex;ciphers;macs;compression`, client to
//! server), recorded even when the handshake then fails.

use hermes_core::session::ClientKex;

/// The largest packet taken for a KEXINIT (RFC 4253 allows 35000 bytes).
const MAX_PACKET: usize = 35_000;
/// Length, padding length, message number, cookie: nothing shorter is a KEXINIT.
const MIN_PACKET: usize = 4 + 1 + 1 + 16;
/// SSH_MSG_KEXINIT.
const KEXINIT: u8 = 20;

/// Collects the first packet after the identification line.
#[derive(Debug, Default)]
pub(crate) struct KexInitScanner {
    buffer: Vec<u8>,
    done: bool,
}

impl KexInitScanner {
    /// Feeds bytes; returns the parsed KEXINIT once the packet is complete. After a
    /// result, or anything that is not a plausible KEXINIT, it stops looking.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Option<ClientKex> {
        while !self.done && !bytes.is_empty() {
            let wanted = if self.buffer.len() < 4 {
                4
            } else {
                packet_total(&self.buffer)
            };
            let take = wanted.saturating_sub(self.buffer.len()).min(bytes.len());
            self.buffer.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buffer.len() < 4 {
                continue;
            }
            let total = packet_total(&self.buffer);
            if !(MIN_PACKET..=MAX_PACKET + 4).contains(&total) {
                self.stop();
                return None;
            }
            if self.buffer.len() == total {
                let parsed = parse_packet(&self.buffer);
                self.stop();
                return parsed;
            }
        }
        None
    }

    fn stop(&mut self) {
        self.done = true;
        self.buffer = Vec::new();
    }

    /// True once it no longer looks at bytes.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }
}

fn packet_total(buffer: &[u8]) -> usize {
    let length = u32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) as usize;
    length.saturating_add(4)
}

fn parse_packet(packet: &[u8]) -> Option<ClientKex> {
    let padding = *packet.get(4)? as usize;
    let payload = packet.get(5..packet.len().checked_sub(padding)?)?;
    parse_kexinit(payload)
}

/// Parses a KEXINIT payload (starting with the message number).
pub(crate) fn parse_kexinit(payload: &[u8]) -> Option<ClientKex> {
    let (&kind, rest) = payload.split_first()?;
    if kind != KEXINIT {
        return None;
    }
    let mut rest = rest.get(16..)?; // cookie
    let mut lists: Vec<Vec<String>> = Vec::with_capacity(10);
    for _ in 0..10 {
        let length = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let text = rest.get(4..4 + length)?;
        rest = &rest[4 + length..];
        let text = String::from_utf8_lossy(text);
        lists.push(if text.is_empty() {
            Vec::new()
        } else {
            text.split(',').map(str::to_owned).collect()
        });
    }
    let hassh_algorithms = format!(
        "{};{};{};{}",
        lists[0].join(","),
        lists[2].join(","),
        lists[4].join(","),
        lists[6].join(",")
    );
    let hassh = format!("{:x}", md5::compute(hassh_algorithms.as_bytes()));
    let mut lists = lists.into_iter();
    let mut next = || lists.next().unwrap_or_default();
    let kex = next();
    let host_key = next();
    let enc_cs = next();
    let _enc_sc = next();
    let mac_cs = next();
    let _mac_sc = next();
    let comp_cs = next();
    let _comp_sc = next();
    let lang_cs = next();
    Some(ClientKex {
        hassh,
        hassh_algorithms,
        kex,
        host_key,
        enc_cs,
        mac_cs,
        comp_cs,
        lang_cs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_list(out: &mut Vec<u8>, names: &str) {
        out.extend_from_slice(&(names.len() as u32).to_be_bytes());
        out.extend_from_slice(names.as_bytes());
    }

    /// A KEXINIT packet (unencrypted framing, 4 bytes of padding) with these lists.
    fn packet(kex: &str, keys: &str, ciphers: &str, macs: &str, comp: &str) -> Vec<u8> {
        let mut payload = vec![KEXINIT];
        payload.extend_from_slice(&[7u8; 16]);
        for list in [kex, keys, ciphers, ciphers, macs, macs, comp, comp, "", ""] {
            name_list(&mut payload, list);
        }
        payload.push(0);
        payload.extend_from_slice(&0u32.to_be_bytes());
        let padding = 4usize;
        let mut out = Vec::new();
        out.extend_from_slice(&((payload.len() + padding + 1) as u32).to_be_bytes());
        out.push(padding as u8);
        out.extend_from_slice(&payload);
        out.extend_from_slice(&[0u8; 4]);
        out
    }

    /// Known answer: the HASSH string below, hashed independently of this code
    /// (Python's hashlib.md5), is c0140e0785316fd1211a5f5d084f43a3.
    #[test]
    fn hassh_of_a_known_offer() {
        let bytes = packet(
            "curve25519-sha256,curve25519-sha256@libssh.org,ext-info-c",
            "ssh-ed25519,rsa-sha2-512",
            "aes128-ctr,aes256-gcm@openssh.com",
            "hmac-sha2-256",
            "none,zlib@openssh.com",
        );
        let mut scanner = KexInitScanner::default();
        let kex = scanner.feed(&bytes).expect("parsed");
        assert_eq!(
            kex.hassh_algorithms,
            "curve25519-sha256,curve25519-sha256@libssh.org,ext-info-c;aes128-ctr,aes256-gcm@openssh.com;hmac-sha2-256;none,zlib@openssh.com"
        );
        assert_eq!(kex.hassh, KNOWN_HASSH);
        assert_eq!(kex.host_key, ["ssh-ed25519", "rsa-sha2-512"]);
        assert!(kex.lang_cs.is_empty());
        assert!(scanner.is_done());
    }

    const KNOWN_HASSH: &str = "c0140e0785316fd1211a5f5d084f43a3";

    #[test]
    fn byte_by_byte_and_with_trailing_data() {
        let mut bytes = packet("a", "b", "c", "d", "none");
        let total = bytes.len();
        bytes.extend_from_slice(b"next packet bytes");
        let mut scanner = KexInitScanner::default();
        let mut found = None;
        for (i, byte) in bytes.iter().enumerate() {
            if let Some(kex) = scanner.feed(&[*byte]) {
                assert_eq!(i, total - 1);
                found = Some(kex);
            }
        }
        assert_eq!(found.expect("found").hassh_algorithms, "a;c;d;none");
        let mut scanner = KexInitScanner::default();
        assert!(scanner.feed(&bytes).is_some());
    }

    #[test]
    fn garbage_is_ignored_without_panicking() {
        for input in [
            &b"\xff\xff\xff\xff"[..],
            b"\x00\x00\x00\x01\x00",
            b"\x00\x00\x00\x20\x04\x15garbage-garbage-garbage-garbage!!",
            b"",
        ] {
            let mut scanner = KexInitScanner::default();
            assert!(scanner.feed(input).is_none());
        }
        // A truncated list inside an otherwise framed packet.
        let mut bytes = packet("a", "b", "c", "d", "e");
        bytes[30] = 0xff;
        assert!(KexInitScanner::default().feed(&bytes).is_none());
    }
}
