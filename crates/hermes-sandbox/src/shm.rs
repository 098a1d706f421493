//! A box's `/dev/shm` (a tmpfs the engine's diff does not see) read from the host
//! through the box's pinned root, at the session's last capture pass. Running `tar`
//! in the box for it cost an exec through the engine (runc, its init, the engine's
//! stream) at every box's stop, mostly to find the directory empty.
//!
//! The directory is the attacker's to shape: nothing is followed through a symlink
//! (each component opened with `O_NOFOLLOW` relative to its open parent), nothing
//! but a regular file is opened for reading, the walk stays on `/dev/shm`'s own
//! filesystem (as `tar --one-file-system`), and it is bounded in entries and depth.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;

use bytes::Bytes;
use hermes_core::sandbox::{FileRead, VolatileFile};

use crate::dir_stream::{DirStream, EntryType, lstat_at};
use crate::openat::{container_root, fstat, open_at};

/// Directory depth followed, at most.
const MAX_DEPTH: usize = 32;
/// Entries looked at per file asked for, at most (as the archive's reader did).
const ENTRIES_PER_FILE: usize = 4;

/// The regular files in the `/dev/shm` of the box `container_id`, whose first process
/// is `init_pid` on this host: at most `max_files`, each read when it is at most
/// `max_size` bytes. An error when the box's root cannot be pinned here (its
/// processes are not on this host) or `/dev/shm` is not a directory of its own.
pub(crate) fn shm_files(
    init_pid: i64,
    container_id: &str,
    max_files: usize,
    max_size: u64,
) -> io::Result<Vec<VolatileFile>> {
    let root = container_root(init_pid, container_id)?;
    let dir_flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    let dev = open_at(Some(&root), "dev", dir_flags)?;
    let shm = open_at(Some(&dev), "shm", dir_flags)?;
    Ok(files_under(shm, "/dev/shm", max_files, max_size))
}

/// The regular files below the open directory `top` on its own filesystem, named
/// `prefix/...`: at most `max_files`, looking at no more than `ENTRIES_PER_FILE`
/// entries each; a directory that cannot be read is left out.
fn files_under(top: OwnedFd, prefix: &str, max_files: usize, max_size: u64) -> Vec<VolatileFile> {
    let mut found = Vec::new();
    let Ok(device) = fstat(&top).map(|stat| stat.st_dev) else {
        return found;
    };
    let mut budget = max_files.saturating_mul(ENTRIES_PER_FILE);
    let mut stack = vec![(top, prefix.trim_end_matches('/').to_owned(), 0usize)];
    while let Some((dir, path, depth)) = stack.pop() {
        let mut entries = DirStream::new(dir);
        while let Some(Ok((name, kind))) = entries.next_entry() {
            if found.len() >= max_files || budget == 0 {
                return found;
            }
            budget -= 1;
            let child = format!("{path}/{}", String::from_utf8_lossy(&name));
            match kind {
                EntryType::Directory if depth < MAX_DEPTH => {
                    let opened = open_at(
                        Some(&entries),
                        name,
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    );
                    if let Ok(sub) = opened
                        && fstat(&sub).is_ok_and(|stat| stat.st_dev == device)
                    {
                        stack.push((sub, child, depth + 1));
                    }
                }
                EntryType::Directory => {}
                EntryType::Other => {
                    if let Some(content) = regular_file(&entries, &name, device, max_size) {
                        found.push(VolatileFile {
                            path: child,
                            content,
                        });
                    }
                }
            }
        }
    }
    found
}

/// The content of `name` in `dir` when it is a regular file on `device` (None for
/// anything else): lstat'ed first, so that nothing else is ever opened, then opened
/// without following a link and without waiting (a FIFO swapped in meanwhile), and
/// checked again once open.
fn regular_file(dir: &DirStream, name: &[u8], device: u64, max_size: u64) -> Option<FileRead> {
    let is_ours =
        |stat: &libc::stat| stat.st_mode & libc::S_IFMT == libc::S_IFREG && stat.st_dev == device;
    let stat = lstat_at(dir, name).ok()?;
    if !is_ours(&stat) {
        return None;
    }
    let size = u64::try_from(stat.st_size).unwrap_or(u64::MAX);
    if size > max_size {
        return Some(FileRead::TooLarge(size));
    }
    let opened = open_at(
        Some(dir),
        name,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
    );
    let Ok(fd) = opened else {
        return Some(FileRead::Unavailable);
    };
    match fstat(&fd) {
        Ok(stat) if is_ours(&stat) => {}
        _ => return Some(FileRead::Unavailable),
    }
    let mut bytes = Vec::new();
    let read = File::from(fd)
        .take(max_size.saturating_add(1))
        .read_to_end(&mut bytes);
    Some(match read {
        // Grew past the limit while being read: as if too large.
        Ok(_) if bytes.len() as u64 > max_size => FileRead::TooLarge(bytes.len() as u64),
        Ok(_) => FileRead::Content(Bytes::from(bytes)),
        Err(_) => FileRead::Unavailable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn open_dir(path: &std::path::Path) -> OwnedFd {
        crate::openat::open_dir(path).expect("open the directory")
    }

    fn sorted(mut files: Vec<VolatileFile>) -> Vec<VolatileFile> {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    fn content(text: &str) -> FileRead {
        FileRead::Content(Bytes::from(text.as_bytes().to_vec()))
    }

    #[test]
    fn regular_files_are_read_at_every_depth_and_too_large_ones_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(".x"), "payload").expect("write");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        std::fs::write(dir.path().join("a/b/deep"), "deeper").expect("write");
        std::fs::write(dir.path().join("big"), vec![b'z'; 100]).expect("write");
        let files = sorted(files_under(open_dir(dir.path()), "/dev/shm", 10, 50));
        assert_eq!(
            files,
            [
                VolatileFile {
                    path: "/dev/shm/.x".into(),
                    content: content("payload"),
                },
                VolatileFile {
                    path: "/dev/shm/a/b/deep".into(),
                    content: content("deeper"),
                },
                VolatileFile {
                    path: "/dev/shm/big".into(),
                    content: FileRead::TooLarge(100),
                },
            ]
        );
    }

    #[test]
    fn links_fifos_and_sockets_are_never_followed_or_opened() {
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), "host file").expect("write");
        let dir = tempfile::tempdir().expect("tempdir");
        symlink(outside.path().join("secret"), dir.path().join("to-file")).expect("symlink");
        symlink(outside.path(), dir.path().join("to-dir")).expect("symlink");
        let fifo = crate::openat::cstring(dir.path().join("fifo").as_os_str().as_encoded_bytes())
            .expect("path");
        // SAFETY: a NUL-terminated path; the result is checked.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let _socket =
            std::os::unix::net::UnixListener::bind(dir.path().join("socket")).expect("socket");
        std::fs::write(dir.path().join("real"), "ok").expect("write");
        // A FIFO opened for reading would wait for a writer: this returns at once.
        let files = files_under(open_dir(dir.path()), "/dev/shm", 10, 1024);
        assert_eq!(
            files,
            [VolatileFile {
                path: "/dev/shm/real".into(),
                content: content("ok"),
            }]
        );
    }

    /// A file below `levels` nested directories of `dir`.
    fn nested_file(dir: &std::path::Path, levels: usize) {
        let mut path = dir.to_path_buf();
        for _ in 0..levels {
            path.push("d");
        }
        std::fs::create_dir_all(&path).expect("mkdir");
        std::fs::write(path.join("file"), "x").expect("write");
    }

    #[test]
    fn the_walk_stops_at_max_files_its_entry_budget_and_its_depth() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..20 {
            std::fs::write(dir.path().join(format!("f{i}")), "x").expect("write");
        }
        assert_eq!(files_under(open_dir(dir.path()), "/s", 3, 10).len(), 3);
        // Ten directories deep: eleven entries to look at. One file asked for allows
        // four, three allow twelve.
        let deep = tempfile::tempdir().expect("tempdir");
        nested_file(deep.path(), 10);
        assert!(files_under(open_dir(deep.path()), "/s", 1, 10).is_empty());
        let found = files_under(open_dir(deep.path()), "/s", 3, 10);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, format!("/s{}/file", "/d".repeat(10)));
        // Deeper than the walk goes, whatever the budget.
        let deeper = tempfile::tempdir().expect("tempdir");
        nested_file(deeper.path(), MAX_DEPTH + 2);
        assert!(files_under(open_dir(deeper.path()), "/s", 100, 10).is_empty());
    }

    #[test]
    fn a_box_root_that_cannot_be_pinned_is_an_error() {
        assert!(shm_files(0, "0123456789abcdef", 10, 10).is_err());
        // Our own process is in no container's cgroup.
        let own = i64::from(std::process::id());
        assert!(shm_files(own, "0123456789abcdef", 10, 10).is_err());
    }
}
