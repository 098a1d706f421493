//! A reader for the tar streams the engine produces (`GET /containers/{id}/archive`,
//! `tar -c` in a container): ustar headers, with pax and GNU long names. Everything in
//! them comes from the attacker's container, so every size is checked against the
//! bytes actually there and nothing is trusted to be well formed.

/// What a tar entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A regular file (with its content).
    File,
    /// A directory.
    Directory,
    /// Anything else (links, devices, fifos, sockets).
    Other,
}

/// One entry of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Path as stored (relative to the archived directory).
    pub path: String,
    /// Kind of entry.
    pub kind: EntryKind,
    /// Size the header declares.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// The content when it is complete in the buffer (regular files only).
    pub data: Option<Vec<u8>>,
}

const BLOCK: usize = 512;

/// Parses an octal (or GNU base-256) numeric header field.
fn number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // Base-256: big-endian binary after the marker bit.
        let mut value: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn string(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// The `path` record of a pax extended header, if any.
fn pax_path(data: &[u8]) -> Option<String> {
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ')?;
        let length: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        if length <= space || length > rest.len() {
            return None;
        }
        let record = &rest[space + 1..length];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(value) = record.strip_prefix(b"path=") {
            return Some(String::from_utf8_lossy(value).into_owned());
        }
        rest = &rest[length..];
    }
    None
}

/// Parses the entries in `bytes`, at most `max_entries`. A truncated archive yields the
/// entries before the cut; an entry cut short has `data: None`.
pub(crate) fn entries(bytes: &[u8], max_entries: usize) -> Vec<Entry> {
    let mut found = Vec::new();
    let mut offset = 0;
    let mut long_name: Option<String> = None;
    while found.len() < max_entries && offset + BLOCK <= bytes.len() {
        let header = &bytes[offset..offset + BLOCK];
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let Some(size) = number(&header[124..136]) else {
            break;
        };
        let typeflag = header[156];
        let data_start = offset + BLOCK;
        let data_end = usize::try_from(size)
            .ok()
            .and_then(|s| data_start.checked_add(s));
        let data = data_end.and_then(|end| bytes.get(data_start..end));
        let padded = usize::try_from(size.div_ceil(BLOCK as u64) * BLOCK as u64).ok();
        match typeflag {
            b'x' | b'L' => {
                // The next entry's name: pax `path=` record or GNU long name.
                long_name = data.and_then(|d| {
                    if typeflag == b'x' {
                        pax_path(d)
                    } else {
                        Some(string(d))
                    }
                });
            }
            b'g' | b'K' => {}
            _ => {
                let mut path = string(&header[0..100]);
                let prefix = string(&header[345..500]);
                if &header[257..262] == b"ustar" && !prefix.is_empty() {
                    path = format!("{prefix}/{path}");
                }
                if let Some(name) = long_name.take() {
                    path = name;
                }
                let kind = match typeflag {
                    b'0' | 0 | b'7' => EntryKind::File,
                    b'5' => EntryKind::Directory,
                    _ => EntryKind::Other,
                };
                found.push(Entry {
                    path,
                    kind,
                    size,
                    mtime: number(&header[136..148]).unwrap_or(0),
                    data: (kind == EntryKind::File)
                        .then(|| data.map(<[u8]>::to_vec))
                        .flatten(),
                });
            }
        }
        let Some(next) = padded.and_then(|p| data_start.checked_add(p)) else {
            break;
        };
        offset = next;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ustar header block for `name`.
    fn header(name: &str, size: usize, typeflag: u8) -> Vec<u8> {
        let mut block = vec![0u8; BLOCK];
        block[..name.len()].copy_from_slice(name.as_bytes());
        let size = format!("{size:011o}\0");
        block[124..136].copy_from_slice(size.as_bytes());
        block[156] = typeflag;
        block[257..263].copy_from_slice(b"ustar\0");
        block
    }

    fn entry(name: &str, data: &[u8], typeflag: u8) -> Vec<u8> {
        let mut out = header(name, data.len(), typeflag);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        out
    }

    #[test]
    fn files_directories_and_long_names() {
        let long = "d/".repeat(80) + "file";
        let mut pax = Vec::new();
        let record = format!("path={long}\n");
        let length = record.len() + 4;
        pax.extend_from_slice(format!("{length} {record}").as_bytes());
        let mut archive = entry("dir/", b"", b'5');
        archive.extend(entry("dir/a.sh", b"#!/bin/sh\necho hi\n", b'0'));
        archive.extend(entry("PaxHeaders/x", &pax, b'x'));
        archive.extend(entry("short-name", b"xyz", b'0'));
        archive.extend(entry("link", b"", b'2'));
        archive.extend(vec![0u8; 2 * BLOCK]);
        let found = entries(&archive, 100);
        assert_eq!(found.len(), 4);
        assert_eq!(found[0].kind, EntryKind::Directory);
        assert_eq!(found[1].path, "dir/a.sh");
        assert_eq!(found[1].data.as_deref(), Some(&b"#!/bin/sh\necho hi\n"[..]));
        assert_eq!(found[2].path, long);
        assert_eq!(found[2].data.as_deref(), Some(&b"xyz"[..]));
        assert_eq!(found[3].kind, EntryKind::Other);
    }

    #[test]
    fn truncated_and_hostile_archives_never_panic() {
        let mut archive = entry("a", &[7u8; 1000], b'0');
        archive.truncate(700);
        let found = entries(&archive, 10);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].data, None, "cut short");
        // A header that claims an absurd size.
        let mut huge = header("b", 0, b'0');
        huge[124..136].copy_from_slice(b"77777777777\0");
        assert_eq!(entries(&huge, 10)[0].data, None);
        let mut binary = header("c", 0, b'0');
        binary[124] = 0xff;
        binary[125..136].fill(0xff);
        let _ = entries(&binary, 10);
        // Garbage of every length.
        let mut seed = 7u32;
        for len in 0..3000 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = entries(&junk, 10);
        }
        assert!(entries(&[], 10).is_empty());
    }

    #[test]
    fn entry_count_is_bounded() {
        let mut archive = Vec::new();
        for i in 0..50 {
            archive.extend(entry(&format!("f{i}"), b"x", b'0'));
        }
        assert_eq!(entries(&archive, 20).len(), 20);
    }
}
