//! Listing a directory through a descriptor already open on it, for walks of
//! directories an attacker shapes: the names come from the pinned inode, never from
//! a path looked up again, and each entry's type comes with its name, so that a walk
//! stats only what it needs to. A box's layer is walked every few seconds for every
//! session: reading `/proc/self/fd/N` and lstat'ing every entry cost twice as much.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// What a directory entry is, from the entry itself (`d_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryType {
    Directory,
    /// Anything else, including a type the filesystem did not give: lstat it.
    Other,
}

/// An open directory's entries, read in turn with `getdents64` on the descriptor
/// itself; the descriptor closes with it.
pub(crate) struct DirStream {
    dir: OwnedFd,
    buf: Box<[u8]>,
    /// The unread part of `buf`: `buf[at..filled]`.
    at: usize,
    filled: usize,
    done: bool,
}

/// Bytes of entries read per system call (a box's directories fit in one).
const BUF: usize = 8 * 1024;
/// `struct linux_dirent64`: inode (8), offset (8), record length (2), type (1), name.
const NAME_AT: usize = 19;

impl DirStream {
    /// Takes `dir` (open with `O_DIRECTORY`) for reading its entries.
    pub(crate) fn new(dir: OwnedFd) -> Self {
        DirStream {
            dir,
            buf: vec![0u8; BUF].into_boxed_slice(),
            at: 0,
            filled: 0,
            done: false,
        }
    }

    /// The next entry's name and type, `.` and `..` left out; None at the end.
    pub(crate) fn next_entry(&mut self) -> Option<io::Result<(Vec<u8>, EntryType)>> {
        loop {
            if self.at >= self.filled {
                if self.done {
                    return None;
                }
                // SAFETY: `buf` is writable for its length; the descriptor is open.
                let read = unsafe {
                    libc::syscall(
                        libc::SYS_getdents64,
                        self.dir.as_raw_fd(),
                        self.buf.as_mut_ptr(),
                        self.buf.len(),
                    )
                };
                if read < 0 {
                    self.done = true;
                    return Some(Err(io::Error::last_os_error()));
                }
                if read == 0 {
                    self.done = true;
                    return None;
                }
                self.at = 0;
                self.filled = usize::try_from(read).unwrap_or(0).min(self.buf.len());
            }
            let record = &self.buf[self.at..self.filled];
            let length = record
                .get(16..18)
                .map(|b| usize::from(u16::from_ne_bytes([b[0], b[1]])))
                .unwrap_or(0);
            if length <= NAME_AT || length > record.len() {
                // Not a record the kernel writes: stop rather than guess.
                self.done = true;
                self.at = self.filled;
                return Some(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed directory entry",
                )));
            }
            self.at += length;
            let kind = record[18];
            let name = &record[NAME_AT..length];
            let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
            if name.is_empty() || name == b"." || name == b".." {
                continue;
            }
            let kind = if kind == libc::DT_DIR {
                EntryType::Directory
            } else {
                EntryType::Other
            };
            return Some(Ok((name.to_vec(), kind)));
        }
    }
}

impl AsRawFd for DirStream {
    fn as_raw_fd(&self) -> RawFd {
        self.dir.as_raw_fd()
    }
}

/// `lstat` of `name` in the open directory `dir`: a symlink is itself, never its
/// target.
pub(crate) fn lstat_at(dir: &impl AsRawFd, name: &[u8]) -> io::Result<libc::stat> {
    let name = crate::openat::cstring(name)?;
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `dir` is open, `name` NUL-terminated, `stat` writable.
    let done = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openat::open_at;

    fn open(path: &std::path::Path) -> OwnedFd {
        crate::openat::open_dir(path).expect("open")
    }

    #[test]
    fn lists_names_and_types_through_the_descriptor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("file"), b"12345").expect("write");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).expect("symlink");
        let mut stream = DirStream::new(open(dir.path()));
        // The directory is renamed away: the listing is still of the inode opened.
        let moved = dir.path().with_extension("moved");
        std::fs::rename(dir.path(), &moved).expect("rename");
        let mut seen = Vec::new();
        while let Some(entry) = stream.next_entry() {
            let (name, kind) = entry.expect("entry");
            let stat = lstat_at(&stream, &name).expect("lstat");
            seen.push((String::from_utf8(name).expect("utf-8"), kind, stat));
        }
        std::fs::rename(&moved, dir.path()).expect("rename back");
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<_> = seen.iter().map(|(n, k, _)| (n.as_str(), *k)).collect();
        assert_eq!(
            names,
            [
                ("file", EntryType::Other),
                ("link", EntryType::Other),
                ("sub", EntryType::Directory)
            ]
        );
        assert_eq!(seen[0].2.st_size, 5);
        assert_eq!(seen[1].2.st_mode & libc::S_IFMT, libc::S_IFLNK);
    }

    #[test]
    fn a_descriptor_that_is_not_a_directory_gives_an_error_then_ends() {
        let file = tempfile::NamedTempFile::new().expect("file");
        let fd = open_at(
            None::<&OwnedFd>,
            file.path().as_os_str().as_encoded_bytes(),
            libc::O_RDONLY,
        )
        .expect("open");
        let mut stream = DirStream::new(fd);
        assert!(matches!(stream.next_entry(), Some(Err(_))));
        assert!(stream.next_entry().is_none());
        assert!(lstat_at(&open(file.path().parent().expect("dir")), b"none").is_err());
    }

    #[test]
    fn a_directory_larger_than_one_read_is_listed_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Names of 200 bytes: about 40 entries fill one read.
        let names: std::collections::BTreeSet<String> = (0..300)
            .map(|n| format!("{n:03}{}", "x".repeat(197)))
            .collect();
        for name in &names {
            std::fs::write(dir.path().join(name), b"").expect("write");
        }
        let mut stream = DirStream::new(open(dir.path()));
        let mut seen = std::collections::BTreeSet::new();
        while let Some(entry) = stream.next_entry() {
            let (name, _) = entry.expect("entry");
            seen.insert(String::from_utf8(name).expect("utf-8"));
        }
        assert_eq!(seen, names);
    }
}
