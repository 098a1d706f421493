//! The container's writable layer read from the engine's host: the overlay "upper"
//! directory holds exactly what the container added or changed. Listing it costs a
//! walk of those few entries; the engine's own diff (`GET /containers/{id}/changes`)
//! cost about 0.9 s of engine CPU a call here, which starved logins under load.
//!
//! The directory is the attacker's to shape, so the walk never follows a symlink:
//! each directory is opened with `O_NOFOLLOW` relative to its already-open parent and
//! read through that descriptor, and the walk is bounded in entries and depth.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::dir_stream::{DirStream, EntryType, lstat_at};
use crate::openat::open_at;

/// Entries looked at in one walk, at most (a container may hold millions of files).
const MAX_ENTRIES: usize = 200_000;
/// Directory depth followed, at most.
const MAX_DEPTH: usize = 64;

/// Opens `name` in the directory `parent` as a directory, never through a symlink.
fn open_dir_at(parent: &File, name: &std::ffi::OsStr) -> io::Result<File> {
    open_at(
        Some(parent),
        name.as_bytes(),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
    )
    .map(File::from)
}

fn open_root(path: &Path) -> io::Result<File> {
    crate::openat::open_dir(path).map(File::from)
}

/// Whether a walk saw the whole layer or stopped at its bounds.
#[derive(Debug, PartialEq, Eq)]
enum Walked {
    Whole,
    Cut,
}

/// What a walk tells of one entry. A directory is known from its entry alone
/// (its size is not counted); anything else is lstat'ed.
struct Seen {
    dir: bool,
    /// An overlay whiteout (character device 0:0): a deletion.
    whiteout: bool,
    len: u64,
    ino: u64,
}

impl Seen {
    fn of(stat: &libc::stat) -> Self {
        let kind = stat.st_mode & libc::S_IFMT;
        Seen {
            dir: kind == libc::S_IFDIR,
            whiteout: kind == libc::S_IFCHR && stat.st_rdev == 0,
            len: u64::try_from(stat.st_size).unwrap_or(0),
            ino: stat.st_ino,
        }
    }
}

/// Walks the upper directory `upper` without following a symlink, giving `visit`
/// each entry's container path and what it is; directories are walked into, down
/// to `MAX_DEPTH`, and at most `MAX_ENTRIES` entries are looked at.
fn walk(upper: &Path, mut visit: impl FnMut(&str, &Seen)) -> io::Result<Walked> {
    let root = open_root(upper)?;
    let mut seen = 0usize;
    let mut walked = Walked::Whole;
    // (directory, its container path, depth)
    let mut stack = vec![(OwnedFd::from(root), String::new(), 0usize)];
    while let Some((dir, prefix, depth)) = stack.pop() {
        let mut entries = DirStream::new(dir);
        while let Some(entry) = entries.next_entry() {
            // A directory that cannot be listed leaves the walk unfinished: an error,
            // not a smaller layer.
            let (name, kind) = entry?;
            seen += 1;
            if seen > MAX_ENTRIES {
                return Ok(Walked::Cut);
            }
            let found = match kind {
                EntryType::Directory => Seen {
                    dir: true,
                    whiteout: false,
                    len: 0,
                    ino: 0,
                },
                // lstat relative to the open directory: a symlink stays a symlink.
                EntryType::Other => match lstat_at(&entries, &name) {
                    Ok(stat) => Seen::of(&stat),
                    Err(_) => continue,
                },
            };
            let path = format!("{prefix}/{}", String::from_utf8_lossy(&name));
            visit(&path, &found);
            if !found.dir {
                continue;
            }
            if depth >= MAX_DEPTH {
                walked = Walked::Cut;
            } else if let Ok(child) = open_at(
                Some(&entries),
                name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            ) {
                stack.push((child, path, depth + 1));
            }
        }
    }
    Ok(walked)
}

/// What one walk of the upper directory found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layer {
    /// Every path (as the container sees it) the layer adds or changes, directories
    /// included; deletions (overlay whiteouts) are left out.
    pub paths: Vec<String>,
    /// The bytes the layer holds, counted as the engine counts a container's
    /// `SizeRw` (every entry but directories, each inode once). None when the layer
    /// has more entries or depth than one walk looks at: the engine must count it,
    /// or a layer shaped past the bound would pass `disk_limit`.
    pub size: Option<u64>,
}

/// Walks the upper directory `upper` once for both what it changes and its size
/// (a capture pass's listing also serves the next disk check).
pub(crate) fn read_layer(upper: &Path) -> io::Result<Layer> {
    let mut paths = Vec::new();
    let mut inodes = std::collections::HashSet::new();
    let mut size = 0u64;
    let walked = walk(upper, |path, seen| {
        if !seen.whiteout {
            paths.push(path.to_owned());
        }
        if !seen.dir && seen.len > 0 && inodes.insert(seen.ino) {
            size = size.saturating_add(seen.len);
        }
    })?;
    Ok(Layer {
        paths,
        size: (walked == Walked::Whole).then_some(size),
    })
}

/// What the upper directory says of one path: a regular file (size, mtime in seconds,
/// and its content when asked), something else, or not there (the path is not in the
/// writable layer, or a directory on the way is a symlink: the engine must resolve it).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    File {
        size: u64,
        mtime: u64,
        content: Option<Vec<u8>>,
    },
    Other,
    Absent,
}

/// Looks `path` up in `upper` without following any symlink, reading the content of a
/// regular file when `read` (at most `max_size` bytes; a larger file has none).
pub(crate) fn entry(upper: &Path, path: &str, read: bool, max_size: u64) -> io::Result<Entry> {
    use std::io::Read;
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let Some((last, dirs)) = components.split_last() else {
        return Ok(Entry::Other);
    };
    if components.iter().any(|c| *c == "." || *c == "..") {
        return Ok(Entry::Absent);
    }
    let mut dir = open_root(upper)?;
    for component in dirs {
        match open_dir_at(&dir, std::ffi::OsStr::new(component)) {
            Ok(next) => dir = next,
            Err(error) if is_absent(&error) => return Ok(Entry::Absent),
            Err(error) => return Err(error),
        }
    }
    // Only a regular file is opened: opening a socket fails (ENXIO) and a device
    // node is not for Hermes to open. lstat through the pinned directory.
    match crate::dir_stream::lstat_at(&dir, last.as_bytes()) {
        Ok(stat) if stat.st_mode & libc::S_IFMT == libc::S_IFCHR && stat.st_rdev == 0 => {
            return Ok(Entry::Absent); // a whiteout
        }
        Ok(stat) if stat.st_mode & libc::S_IFMT != libc::S_IFREG => return Ok(Entry::Other),
        Ok(_) => {}
        Err(error) if is_absent(&error) => return Ok(Entry::Absent),
        Err(error) => return Err(error),
    }
    // O_NONBLOCK: a FIFO swapped in since must not wait for a writer; O_NOFOLLOW: a
    // symlink is not opened through.
    let opened = open_at(
        Some(&dir),
        last.as_bytes(),
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
    );
    let mut file = match opened {
        Ok(fd) => File::from(fd),
        Err(error) => {
            return match error.raw_os_error() {
                Some(libc::ELOOP) => Ok(Entry::Other),
                _ if is_absent(&error) => Ok(Entry::Absent),
                _ => Err(error),
            };
        }
    };
    let metadata = file.metadata()?;
    let kind = metadata.file_type();
    if kind.is_char_device() && metadata.rdev() == 0 {
        return Ok(Entry::Absent); // a whiteout
    }
    if !kind.is_file() {
        return Ok(Entry::Other);
    }
    let size = metadata.len();
    let mtime = u64::try_from(metadata.mtime()).unwrap_or(0);
    let content = if read && size <= max_size {
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut file)
            .take(max_size.saturating_add(1))
            .read_to_end(&mut bytes)?;
        // Grew past the limit while being read: as if too large.
        (bytes.len() as u64 <= max_size).then_some(bytes)
    } else {
        None
    };
    Ok(Entry::File {
        size,
        mtime,
        content,
    })
}

fn is_absent(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    fn changed_paths(upper: &Path) -> io::Result<Vec<String>> {
        read_layer(upper).map(|layer| layer.paths)
    }

    fn layer_size(upper: &Path) -> io::Result<Option<u64>> {
        read_layer(upper).map(|layer| layer.size)
    }

    #[test]
    fn lists_what_the_layer_holds_without_following_symlinks() {
        let upper = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("host-secret"), b"x").expect("write");
        let base = upper.path();
        std::fs::create_dir_all(base.join("root/.cache")).expect("mkdir");
        std::fs::write(base.join("root/.cache/dropper"), b"payload").expect("write");
        std::fs::create_dir_all(base.join("tmp")).expect("mkdir");
        std::fs::write(base.join("tmp/x.sh"), b"#!/bin/sh").expect("write");
        // A symlink to a host directory is a path of its own, never walked into.
        std::os::unix::fs::symlink(outside.path(), base.join("tmp/escape")).expect("symlink");
        let mut paths = changed_paths(base).expect("walk");
        paths.sort();
        assert_eq!(
            paths,
            [
                "/root",
                "/root/.cache",
                "/root/.cache/dropper",
                "/tmp",
                "/tmp/escape",
                "/tmp/x.sh"
            ]
        );
        assert!(!paths.iter().any(|p| p.contains("host-secret")));
    }

    #[test]
    fn the_layers_size_counts_each_inode_once_and_never_follows_a_symlink() {
        let upper = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("big"), vec![0u8; 100_000]).expect("write");
        let base = upper.path();
        std::fs::create_dir_all(base.join("root/d")).expect("mkdir");
        std::fs::write(base.join("root/d/a"), vec![1u8; 1000]).expect("write");
        std::fs::hard_link(base.join("root/d/a"), base.join("root/b")).expect("link");
        std::fs::write(base.join("root/empty"), b"").expect("write");
        // Its own length (the target's name) counts, as the engine counts it.
        let target = outside.path().join("big");
        std::os::unix::fs::symlink(&target, base.join("root/escape")).expect("symlink");
        let expected = 1000 + target.as_os_str().len() as u64;
        assert_eq!(layer_size(base).expect("walk"), Some(expected));
        std::os::unix::fs::symlink(outside.path(), base.join("dir-escape")).expect("symlink");
        let expected = expected + outside.path().as_os_str().len() as u64;
        assert_eq!(layer_size(base).expect("walk"), Some(expected));
    }

    #[test]
    fn a_layer_deeper_than_one_walk_is_left_to_the_engine() {
        let upper = tempfile::tempdir().expect("tempdir");
        let mut deep = upper.path().to_path_buf();
        for _ in 0..=MAX_DEPTH {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).expect("mkdir");
        std::fs::write(deep.join("hidden"), vec![0u8; 4096]).expect("write");
        assert_eq!(layer_size(upper.path()).expect("walk"), None);
        assert!(layer_size(&upper.path().join("missing")).is_err());
    }

    #[test]
    fn whiteouts_are_deletions_and_left_out() {
        let upper = tempfile::tempdir().expect("tempdir");
        let base = upper.path();
        std::fs::write(base.join("kept"), b"x").expect("write");
        let whiteout = CString::new(base.join("gone").as_os_str().as_bytes()).expect("path");
        // SAFETY: a valid path; creating a 0:0 character device needs CAP_MKNOD.
        let made = unsafe { libc::mknod(whiteout.as_ptr(), libc::S_IFCHR | 0o600, 0) } == 0;
        let paths = changed_paths(base).expect("walk");
        assert!(paths.contains(&"/kept".to_owned()));
        if made {
            assert!(!paths.contains(&"/gone".to_owned()), "{paths:?}");
        } else {
            eprintln!("whiteout check needs CAP_MKNOD (run as root)");
        }
    }

    #[test]
    fn one_entry_is_read_without_following_symlinks() {
        let upper = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), b"host").expect("write");
        let base = upper.path();
        std::fs::create_dir_all(base.join("tmp")).expect("mkdir");
        std::fs::write(base.join("tmp/drop.bin"), b"\x7fELF payload").expect("write");
        std::os::unix::fs::symlink(outside.path().join("secret"), base.join("tmp/link"))
            .expect("symlink");
        std::os::unix::fs::symlink(outside.path(), base.join("via")).expect("symlink");
        let fifo = CString::new(base.join("tmp/fifo").as_os_str().as_bytes()).expect("path");
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

        match entry(base, "/tmp/drop.bin", true, 1024).expect("read") {
            Entry::File { size, content, .. } => {
                assert_eq!(size, 12);
                assert_eq!(content.as_deref(), Some(&b"\x7fELF payload"[..]));
            }
            other => panic!("{other:?}"),
        }
        // Too large: the stat without the content.
        assert!(matches!(
            entry(base, "/tmp/drop.bin", true, 4).expect("read"),
            Entry::File {
                size: 12,
                content: None,
                ..
            }
        ));
        assert_eq!(
            entry(base, "/tmp/link", true, 1024).expect("link"),
            Entry::Other
        );
        assert_eq!(
            entry(base, "/via/secret", true, 1024).expect("via"),
            Entry::Absent
        );
        assert_eq!(
            entry(base, "/tmp/fifo", true, 1024).expect("fifo"),
            Entry::Other
        );
        assert_eq!(
            entry(base, "/tmp/none", true, 1024).expect("none"),
            Entry::Absent
        );
        assert_eq!(
            entry(base, "/tmp/../etc", true, 1024).expect("dots"),
            Entry::Absent
        );
        assert_eq!(entry(base, "/tmp", true, 1024).expect("dir"), Entry::Other);
    }

    #[test]
    fn a_socket_or_a_fifo_is_something_else_and_never_opened() {
        let upper = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(upper.path().join("run/dbus")).expect("mkdir");
        let _listener =
            std::os::unix::net::UnixListener::bind(upper.path().join("run/dbus/system_bus_socket"))
                .expect("socket");
        let fifo =
            CString::new(upper.path().join("run/fifo").as_os_str().as_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        for path in ["/run/dbus/system_bus_socket", "/run/fifo"] {
            assert_eq!(
                entry(upper.path(), path, true, 1024).expect(path),
                Entry::Other,
                "{path}"
            );
        }
    }

    #[test]
    fn a_root_that_is_a_symlink_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("upper");
        std::os::unix::fs::symlink(target.path(), &link).expect("symlink");
        assert!(changed_paths(&link).is_err());
    }
}
