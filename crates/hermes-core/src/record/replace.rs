//! Replacing a small file with a new version so that a reader, or a process killed
//! at any moment, finds one whole version: written to `<path>.tmp`, then moved into
//! place.
//!
//! How it is moved matters for a busy server. Renamed over an existing file, ext4
//! (with its default `auto_da_alloc`) writes the new data out at the rename, in the
//! renaming thread: a block allocation, a disk write, and later the old version's
//! blocks freed, for every rewrite of every running session's metadata (200 a second
//! in the benchmark's typing crowd, about 7% of the server's CPU). A rewrite that
//! the next one replaces within a second or two need not reach the disk: it is
//! swapped into place (`RENAME_EXCHANGE`, no data written out) and the old version,
//! now under the temp name, unlinked before the kernel's writeback ever wrote it.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// How [`replace_file`] puts the new version in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Renamed over the old version: on ext4 its data is written out at the rename,
    /// so a power cut leaves one version or the other. For a version meant to last
    /// (a session's start and end).
    Durable,
    /// Swapped with the old version, which is then unlinked: whole for readers and
    /// a killed process alike, but left to the kernel's writeback. For a version the
    /// next one soon replaces (a running session's rewrites). Where the swap is not
    /// supported, as [`Replace::Durable`].
    Interim,
}

/// Replaces `path` with `text` (its directory made if missing). When that fails (a
/// full disk) the temp file is removed, so no partial file is left.
pub fn replace_file(path: &Path, text: &[u8], how: Replace) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let result = std::fs::write(&tmp, text).and_then(|()| move_into_place(&tmp, path, how));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn move_into_place(tmp: &Path, path: &Path, how: Replace) -> io::Result<()> {
    // When the swap fails there is no old version yet (the rename then has nothing
    // to write out), or the filesystem cannot swap: renamed.
    if how == Replace::Interim && exchange(tmp, path).is_ok() {
        // The old version, under the temp name now. Left behind (a kill here), the
        // next write truncates it.
        let _ = std::fs::remove_file(tmp);
        return Ok(());
    }
    std::fs::rename(tmp, path)
}

/// Swaps the names `a` and `b` atomically (both must exist).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    let a = CString::new(a.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let b = CString::new(b.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: two NUL-terminated paths that live across the call; renameat2 reads
    // them and touches no memory of ours otherwise.
    let status = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn versions() -> Vec<Vec<u8>> {
        // Different lengths, so a mixed or cut file shows.
        (0..8)
            .map(|v| format!("{{\"v\":{v},\"pad\":\"{}\"}}\n", "x".repeat(v * 300)).into_bytes())
            .collect()
    }

    fn replaced_under_a_reader(how: Replace) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("2026/12/07/s.json");
        let versions = Arc::new(versions());
        replace_file(&path, &versions[0], how).expect("first version");
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (path, versions, done) = (path.clone(), Arc::clone(&versions), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) {
                    let seen = std::fs::read(&path).expect("the file is always there");
                    assert!(
                        versions.contains(&seen),
                        "a mixed or partial file: {seen:?}"
                    );
                    reads += 1;
                }
                reads
            })
        };
        for round in 0..400 {
            let text = &versions[round % versions.len()];
            replace_file(&path, text, how).expect("replaced");
            assert_eq!(&std::fs::read(&path).expect("read"), text);
        }
        done.store(true, Ordering::Release);
        let reads = reader.join().expect("the reader saw only whole versions");
        assert!(reads > 0, "the reader never read");
        let left: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["s.json"], "the temp file is gone");
    }

    #[test]
    fn an_interim_rewrite_is_always_one_whole_version_and_leaves_no_temp_file() {
        replaced_under_a_reader(Replace::Interim);
    }

    #[test]
    fn a_durable_rewrite_is_always_one_whole_version_and_leaves_no_temp_file() {
        replaced_under_a_reader(Replace::Durable);
    }

    #[test]
    fn an_interim_write_without_an_old_version_lands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("new/s.json");
        replace_file(&path, b"first", Replace::Interim).expect("written");
        assert_eq!(std::fs::read(&path).expect("read"), b"first");
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn a_temp_file_a_killed_process_left_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json");
        std::fs::write(&path, b"old").expect("old");
        std::fs::write(path.with_extension("json.tmp"), b"left by a kill, longer").expect("tmp");
        replace_file(&path, b"new", Replace::Interim).expect("written");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn a_refused_write_leaves_the_old_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json");
        std::fs::write(&path, b"old").expect("old");
        // A directory where the temp file goes: its write is refused.
        std::fs::create_dir(path.with_extension("json.tmp")).expect("blocker");
        for how in [Replace::Interim, Replace::Durable] {
            assert!(replace_file(&path, b"new", how).is_err());
            assert_eq!(std::fs::read(&path).expect("read"), b"old");
        }
    }
}
