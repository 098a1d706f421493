//! The names of files a client sends with scp or sftp, read from the client's side of
//! the channel, so that the files found in the container afterwards are reported as
//! uploads (`cowrie.session.file_upload`) under the name the client gave.
//!
//! Both parsers see attacker bytes: sizes are checked, buffers are bounded, and a
//! stream that stops making sense just stops yielding names.

/// A file the client sent: the path it will have in the container (absolute when
/// it can be known, else as the client named it) and the name the client gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// Path in the container.
    pub path: String,
    /// As the client named it.
    pub filename: String,
}

/// Longest scp control line kept while waiting for its end.
const MAX_PENDING: usize = 64 << 10;
/// Most names one channel yields.
const MAX_UPLOADS: usize = 10_000;

fn join(dir: &str, name: &str) -> String {
    if name.starts_with('/') || dir.is_empty() {
        name.to_owned()
    } else {
        format!("{}/{name}", dir.trim_end_matches('/'))
    }
}

/// Reads scp's sink protocol (`scp -t TARGET`): `C0644 SIZE NAME\n` then SIZE bytes
/// and a NUL; `D0755 0 NAME\n` enters a directory, `E\n` leaves it, `T...\n` sets
/// times.
#[derive(Debug)]
pub struct ScpUploads {
    target: String,
    /// Whether TARGET is a directory (`-d`, `-r`, or more than one file).
    target_is_dir: bool,
    dirs: Vec<String>,
    line: Vec<u8>,
    /// Content bytes (and the trailing NUL) still to skip.
    skip: u64,
    broken: bool,
    found: Vec<Upload>,
}

impl ScpUploads {
    /// A parser for `command` when it is an scp sink (`scp [-r] [-d] -t TARGET`).
    pub fn for_command(command: &str, home: &str) -> Option<ScpUploads> {
        let words: Vec<&str> = command.split_whitespace().collect();
        if words.first().map(|w| w.rsplit('/').next().unwrap_or(w)) != Some("scp") {
            return None;
        }
        let flags: Vec<&str> = words[1..]
            .iter()
            .copied()
            .take_while(|w| w.starts_with('-'))
            .collect();
        if !flags.iter().any(|f| f.contains('t')) {
            return None;
        }
        let target = words[1 + flags.len()..].join(" ");
        let target = if target.is_empty() {
            ".".to_owned()
        } else {
            target
        };
        let absolute = if target.starts_with('/') {
            target
        } else if target == "." {
            home.to_owned()
        } else {
            join(home, &target)
        };
        Some(ScpUploads {
            target: absolute,
            target_is_dir: flags.iter().any(|f| f.contains('d') || f.contains('r')),
            dirs: Vec::new(),
            line: Vec::new(),
            skip: 0,
            broken: false,
            found: Vec::new(),
        })
    }

    /// Feeds client bytes.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.broken {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            match bytes.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.line.extend_from_slice(&bytes[..end]);
                    bytes = &bytes[end + 1..];
                    let line = std::mem::take(&mut self.line);
                    self.control(&String::from_utf8_lossy(&line));
                }
                None => {
                    self.line.extend_from_slice(bytes);
                    if self.line.len() > MAX_PENDING {
                        self.broken = true;
                    }
                    return;
                }
            }
        }
    }

    fn control(&mut self, line: &str) {
        let mut parts = line.splitn(3, ' ');
        let head = parts.next().unwrap_or("");
        let size = parts.next().and_then(|s| s.parse::<u64>().ok());
        let name = parts.next().unwrap_or("");
        match head.chars().next() {
            Some('C') => {
                let Some(size) = size else {
                    self.broken = true;
                    return;
                };
                let dir = std::iter::once(self.target.as_str())
                    .chain(self.dirs.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join("/");
                // A single file to a path that is not a directory lands at the path
                // itself; both candidates are kept and the container says which.
                if self.found.len() < MAX_UPLOADS {
                    self.found.push(Upload {
                        path: join(&dir, name),
                        filename: name.to_owned(),
                    });
                    if !self.target_is_dir && self.dirs.is_empty() {
                        self.found.push(Upload {
                            path: self.target.clone(),
                            filename: name.to_owned(),
                        });
                    }
                }
                self.skip = size.saturating_add(1);
            }
            Some('D') => self.dirs.push(name.to_owned()),
            Some('E') => {
                self.dirs.pop();
            }
            Some('T') => {}
            _ => self.broken = true,
        }
    }

    /// Names found so far.
    pub fn uploads(&self) -> &[Upload] {
        &self.found
    }
}

const SSH_FXP_OPEN: u8 = 3;
const SSH_FXP_RENAME: u8 = 18;
const SSH_FXP_EXTENDED: u8 = 200;
const SSH_FXF_WRITE: u32 = 0x02;
const SSH_FXF_CREAT: u32 = 0x08;
/// Largest SFTP packet a client sends (OpenSSH's limit is 256 KiB).
const MAX_SFTP_PACKET: u32 = 1 << 20;

/// Reads the client side of an SFTP session for files opened for writing and the
/// targets of renames.
#[derive(Debug)]
pub struct SftpUploads {
    home: String,
    pending: Vec<u8>,
    /// Bytes of the current packet still to skip (file data of a WRITE).
    skip: usize,
    broken: bool,
    found: Vec<Upload>,
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_string(bytes: &[u8], at: usize) -> Option<(String, usize)> {
    let len = read_u32(bytes, at)? as usize;
    let text = bytes.get(at + 4..at + 4 + len)?;
    Some((String::from_utf8_lossy(text).into_owned(), at + 4 + len))
}

impl SftpUploads {
    /// A parser for a session whose relative paths start at `home`.
    pub fn new(home: &str) -> Self {
        SftpUploads {
            home: home.to_owned(),
            pending: Vec::new(),
            skip: 0,
            broken: false,
            found: Vec::new(),
        }
    }

    /// Feeds client bytes.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.broken {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            if self.pending.len() < 5 {
                let n = (5 - self.pending.len()).min(bytes.len());
                self.pending.extend_from_slice(&bytes[..n]);
                bytes = &bytes[n..];
                continue;
            }
            let length = read_u32(&self.pending, 0).unwrap_or(0);
            if length == 0 || length > MAX_SFTP_PACKET {
                self.broken = true;
                return;
            }
            let total = 4 + length as usize;
            if !matches!(
                self.pending[4],
                SSH_FXP_OPEN | SSH_FXP_RENAME | SSH_FXP_EXTENDED
            ) {
                // Not interesting (file data, reads, stats): skip it unbuffered.
                self.skip = total - self.pending.len();
                self.pending.clear();
                continue;
            }
            let n = (total - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.pending.len() == total {
                let packet = std::mem::take(&mut self.pending);
                self.packet(&packet[4..]);
            }
        }
    }

    fn absolute(&self, path: &str) -> String {
        join(&self.home, path)
    }

    fn packet(&mut self, packet: &[u8]) {
        if self.found.len() >= MAX_UPLOADS {
            return;
        }
        let kind = packet[0];
        // Skip the type byte and the request id.
        let body = 5;
        // The path a file is written to: opened for writing, or a rename's target.
        let target = match kind {
            SSH_FXP_OPEN => read_string(packet, body).and_then(|(path, next)| {
                let flags = read_u32(packet, next)?;
                (flags & (SSH_FXF_WRITE | SSH_FXF_CREAT) != 0).then_some(path)
            }),
            SSH_FXP_RENAME => read_string(packet, body)
                .and_then(|(_, next)| read_string(packet, next))
                .map(|(target, _)| target),
            SSH_FXP_EXTENDED => read_string(packet, body)
                .filter(|(name, _)| name == "posix-rename@openssh.com")
                .and_then(|(_, next)| read_string(packet, next))
                .and_then(|(_, next)| read_string(packet, next))
                .map(|(target, _)| target),
            _ => None,
        };
        if let Some(filename) = target {
            self.found.push(Upload {
                path: self.absolute(&filename),
                filename,
            });
        }
    }

    /// Names found so far.
    pub fn uploads(&self) -> &[Upload] {
        &self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scp_single_file_and_recursive() {
        let mut scp = ScpUploads::for_command("scp -t /tmp/", "/root").expect("sink");
        scp.feed(b"C0755 5 bot.sh\nhello\0");
        let paths: Vec<_> = scp.uploads().iter().map(|u| u.path.as_str()).collect();
        assert!(paths.contains(&"/tmp/bot.sh"), "{paths:?}");
        let mut scp = ScpUploads::for_command("scp -r -t .", "/root").expect("sink");
        let stream = b"D0755 0 kit\nC0644 3 a\nabc\0T1 0 1 0\nC0644 2 b\nxy\0E\n";
        for byte in stream.iter() {
            scp.feed(std::slice::from_ref(byte));
        }
        let paths: Vec<_> = scp.uploads().iter().map(|u| u.path.as_str()).collect();
        assert_eq!(paths, ["/root/kit/a", "/root/kit/b"]);
        assert!(ScpUploads::for_command("scp -f /etc/passwd", "/root").is_none());
        assert!(ScpUploads::for_command("uname -a", "/root").is_none());
    }

    fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 5) as u32).to_be_bytes().to_vec();
        out.push(kind);
        out.extend_from_slice(&7u32.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn string(text: &str) -> Vec<u8> {
        let mut out = (text.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(text.as_bytes());
        out
    }

    #[test]
    fn sftp_opens_for_writing_and_renames() {
        let mut stream = Vec::new();
        stream.extend(packet(1, &3u32.to_be_bytes()[..0])); // INIT-like, ignored
        let mut open = string("up/payload.bin");
        open.extend_from_slice(&(SSH_FXF_WRITE | SSH_FXF_CREAT).to_be_bytes());
        open.extend_from_slice(&0u32.to_be_bytes());
        stream.extend(packet(SSH_FXP_OPEN, &open));
        let mut read_only = string("/etc/passwd");
        read_only.extend_from_slice(&1u32.to_be_bytes());
        read_only.extend_from_slice(&0u32.to_be_bytes());
        stream.extend(packet(SSH_FXP_OPEN, &read_only));
        // A big WRITE whose data must be skipped, not parsed.
        let mut write = string("handle");
        write.extend_from_slice(&0u64.to_be_bytes());
        write.extend(string(&"A".repeat(200_000)));
        stream.extend(packet(6, &write));
        let mut rename = string("/tmp/a");
        rename.extend(string("/tmp/b"));
        stream.extend(packet(SSH_FXP_RENAME, &rename));
        let mut posix = string("posix-rename@openssh.com");
        posix.extend(string("c"));
        posix.extend(string("/var/tmp/d"));
        stream.extend(packet(SSH_FXP_EXTENDED, &posix));
        for chunk_size in [1, 3, 7, 4096, stream.len()] {
            let mut sftp = SftpUploads::new("/root");
            for chunk in stream.chunks(chunk_size) {
                sftp.feed(chunk);
            }
            let paths: Vec<_> = sftp.uploads().iter().map(|u| u.path.as_str()).collect();
            assert_eq!(
                paths,
                ["/root/up/payload.bin", "/tmp/b", "/var/tmp/d"],
                "chunks of {chunk_size}"
            );
            assert_eq!(sftp.uploads()[0].filename, "up/payload.bin");
        }
    }

    #[test]
    fn hostile_streams_stop_quietly() {
        let mut sftp = SftpUploads::new("/root");
        sftp.feed(&[0xff; 100]);
        sftp.feed(&[0; 100]);
        assert!(sftp.uploads().is_empty());
        let mut scp = ScpUploads::for_command("scp -t x", "/root").expect("sink");
        scp.feed(&[b'C'; 200_000]);
        scp.feed(b"C0644 notanumber x\n");
        assert!(scp.uploads().is_empty());
        let mut seed = 1u32;
        let junk: Vec<u8> = (0..100_000)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect();
        let mut sftp = SftpUploads::new("/root");
        for chunk in junk.chunks(97) {
            sftp.feed(chunk);
        }
    }
}
