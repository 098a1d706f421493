//! A file of a box's `/etc` rewritten from the host the way shadow-utils rewrites it
//! (`chpasswd`, `useradd`): the old content kept as `<name>-` with the old owner, mode
//! and times, the new content written to `<name>+` with the old owner and mode and
//! renamed over `<name>`. The box sees what the tool would have left.
//!
//! The box's root is hostile: `/etc` and the file are opened without following links,
//! the file is looked at without being opened (`O_PATH`) and opened only when it is a
//! regular file (a device node is never opened), read only up to a bound, and nothing
//! already at `<name>-` or `<name>+` is ever opened (new files are created
//! exclusively and renamed into place). The rewrite holds the lock glibc's
//! `lckpwdf()` and shadow-utils take (`/etc/.pwd.lock`), so a `chpasswd` or `useradd`
//! in the box waits for it, and it for them.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use hermes_core::sandbox::{ChangedFile, FileEdit};

use crate::files::epoch_to_rfc3339;
use crate::openat::{create_at, cstring, fstat, open_at, reopen};

/// Largest file this rewrites: account files are a few kilobytes.
const MAX_SIZE: u64 = 1 << 20;
/// How long the password files' lock is waited for (a `chpasswd` in the box holds it
/// for milliseconds).
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// The lock file of glibc's `lckpwdf()`, in /etc.
const LOCK_FILE: &str = ".pwd.lock";

fn check(result: libc::c_int) -> io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `name` in `dir` opened with `flags` only when it is a regular file: looked at
/// first through an `O_PATH` descriptor, which opens nothing (a device node's open
/// could act on the host's device).
fn open_regular(dir: &OwnedFd, name: &str, flags: libc::c_int) -> io::Result<(File, libc::stat)> {
    let path = open_at(Some(dir), name, libc::O_PATH | libc::O_NOFOLLOW)?;
    let stat = fstat(&path)?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    Ok((reopen(&path, flags | libc::O_NOCTTY)?, stat))
}

/// glibc's `lckpwdf()` lock on /etc/.pwd.lock (made when missing, as it makes it),
/// held until dropped. Waited for up to [`LOCK_WAIT`], in steps: a blocking wait
/// could not be bounded.
struct PasswdLock {
    _file: File,
}

fn lock_password_files(etc: &OwnedFd) -> io::Result<PasswdLock> {
    let file = match open_regular(etc, LOCK_FILE, libc::O_WRONLY) {
        Ok((file, _)) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            File::from(create_at(etc, LOCK_FILE, libc::O_WRONLY, 0o600)?)
        }
        Err(error) => return Err(error),
    };
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: an all-zero flock is valid; the fields that matter are set below.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = libc::F_WRLCK as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: `file` is open and `lock` a valid flock for the call's duration.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) } == 0 {
            return Ok(PasswdLock { _file: file });
        }
        let error = io::Error::last_os_error();
        if !matches!(error.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) {
            return Err(error);
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the password files are locked in the box",
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes `name` from `dir` when it is there (not a directory).
fn remove(dir: &OwnedFd, name: &str) -> io::Result<()> {
    let name = cstring(name)?;
    // SAFETY: `dir` is an open directory and `name` a valid C string.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(error)
    }
}

fn rename(dir: &OwnedFd, from: &str, to: &str) -> io::Result<()> {
    let (from, to) = (cstring(from)?, cstring(to)?);
    // SAFETY: `dir` is an open directory; both names are valid C strings.
    check(unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) })
}

/// Writes `content` as `dir/name`, owned and moded as `like`, with `like`'s times
/// when `keep_times`: created exclusively as `temp` (whatever was there removed
/// first, never opened) and renamed over `name`.
fn replace(
    dir: &OwnedFd,
    name: &str,
    temp: &str,
    content: &[u8],
    like: &libc::stat,
    keep_times: bool,
) -> io::Result<libc::stat> {
    remove(dir, temp)?;
    let fd = create_at(dir, temp, libc::O_WRONLY, 0o600)?;
    let written = (|| {
        // SAFETY: `fd` is a file this function created and owns.
        check(unsafe { libc::fchown(fd.as_raw_fd(), like.st_uid, like.st_gid) })?;
        // SAFETY: as above.
        check(unsafe { libc::fchmod(fd.as_raw_fd(), like.st_mode & 0o7777) })?;
        let mut file = File::from(fd.try_clone()?);
        file.write_all(content)?;
        if keep_times {
            let times = [
                libc::timespec {
                    tv_sec: like.st_atime,
                    tv_nsec: like.st_atime_nsec,
                },
                libc::timespec {
                    tv_sec: like.st_mtime,
                    tv_nsec: like.st_mtime_nsec,
                },
            ];
            // SAFETY: `fd` is open and `times` holds two timespecs.
            check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })?;
        }
        file.sync_all()?;
        rename(dir, temp, name)?;
        fstat(&fd)
    })();
    if written.is_err() {
        let _ = remove(dir, temp);
    }
    written
}

/// Rewrites `/etc/<name>` under `root` with `edit` (None from `edit`: left as it
/// is). Returns the new file and its backup.
pub(crate) fn rewrite(
    root: &OwnedFd,
    name: &str,
    edit: FileEdit,
) -> io::Result<Option<[ChangedFile; 2]>> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a name in /etc",
        ));
    }
    let etc = open_at(
        Some(root),
        "etc",
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
    )?;
    let _lock = lock_password_files(&etc)?;
    let (old, stat) = open_regular(&etc, name, libc::O_RDONLY)?;
    let mut content = Vec::new();
    old.take(MAX_SIZE + 1).read_to_end(&mut content)?;
    if content.len() as u64 > MAX_SIZE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "too large"));
    }
    let Some(new) = edit(&content) else {
        return Ok(None);
    };
    let temp = format!("{name}+");
    let backup_name = format!("{name}-");
    let backup = replace(&etc, &backup_name, &temp, &content, &stat, true)?;
    let current = replace(&etc, name, &temp, &new, &stat, false)?;
    let changed = |path: &str, stat: libc::stat| ChangedFile {
        path: format!("/etc/{path}"),
        size: u64::try_from(stat.st_size).unwrap_or(0),
        modified: epoch_to_rfc3339(u64::try_from(stat.st_mtime).unwrap_or(0)),
    };
    Ok(Some([
        changed(name, current),
        changed(&backup_name, backup),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    fn root(dir: &std::path::Path) -> OwnedFd {
        open_at(
            None::<&OwnedFd>,
            dir.to_str().expect("utf-8").as_bytes(),
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .expect("root")
    }

    fn upper(text: &[u8]) -> Option<Vec<u8>> {
        Some(text.to_ascii_uppercase())
    }

    fn box_with_shadow() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("etc");
        let shadow = dir.path().join("etc/shadow");
        std::fs::write(&shadow, b"root:*:1:::::\n").expect("write");
        std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o640)).expect("mode");
        // SAFETY: the path is a valid C string for the call's duration.
        let path = std::ffi::CString::new(shadow.to_str().expect("utf-8")).expect("c");
        assert_eq!(
            unsafe { libc::chown(path.as_ptr(), 0, 42) },
            0,
            "chown (tests run as root)"
        );
        let old = libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        };
        // SAFETY: valid path and two timespecs.
        assert_eq!(
            unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), [old, old].as_ptr(), 0) },
            0
        );
        dir
    }

    #[test]
    fn the_file_is_replaced_and_the_old_one_kept_as_shadow_utils_does() {
        let dir = box_with_shadow();
        let changed = rewrite(&root(dir.path()), "shadow", Box::new(upper))
            .expect("rewritten")
            .expect("edited");
        let etc = dir.path().join("etc");
        assert_eq!(
            std::fs::read(etc.join("shadow")).expect("new"),
            b"ROOT:*:1:::::\n"
        );
        assert_eq!(
            std::fs::read(etc.join("shadow-")).expect("backup"),
            b"root:*:1:::::\n"
        );
        for name in ["shadow", "shadow-"] {
            let meta = std::fs::metadata(etc.join(name)).expect("meta");
            assert_eq!(
                (meta.uid(), meta.gid(), meta.mode() & 0o7777),
                (0, 42, 0o640),
                "{name}"
            );
        }
        let backup = std::fs::metadata(etc.join("shadow-")).expect("meta");
        assert_eq!(
            backup.mtime(),
            1_000_000_000,
            "the backup keeps the old times"
        );
        assert!(std::fs::metadata(etc.join("shadow")).expect("meta").mtime() > 1_000_000_000);
        assert!(!etc.join("shadow+").exists(), "no temporary file left");
        assert_eq!(changed[0].path, "/etc/shadow");
        assert_eq!(changed[0].size, 14);
        assert_eq!(changed[1].path, "/etc/shadow-");
        assert_eq!(changed[1].modified, "2001-09-09T01:46:40Z");
    }

    #[test]
    fn a_declined_edit_changes_nothing() {
        let dir = box_with_shadow();
        assert!(
            rewrite(&root(dir.path()), "shadow", Box::new(|_| None))
                .expect("ok")
                .is_none()
        );
        assert!(!dir.path().join("etc/shadow-").exists());
    }

    #[test]
    fn links_and_other_kinds_planted_by_the_box_are_never_followed_or_opened() {
        let outside = tempfile::tempdir().expect("tempdir");
        let secret = outside.path().join("secret");
        std::fs::write(&secret, b"host file\n").expect("write");

        // /etc/shadow a link to a host path: refused, the host file untouched.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("etc");
        symlink(&secret, dir.path().join("etc/shadow")).expect("link");
        assert!(rewrite(&root(dir.path()), "shadow", Box::new(upper)).is_err());
        assert_eq!(std::fs::read(&secret).expect("read"), b"host file\n");

        // /etc itself a link out of the box: refused.
        let dir = tempfile::tempdir().expect("tempdir");
        symlink(outside.path(), dir.path().join("etc")).expect("link");
        std::fs::write(outside.path().join("shadow"), b"x:1\n").expect("write");
        assert!(rewrite(&root(dir.path()), "shadow", Box::new(upper)).is_err());
        assert_eq!(
            std::fs::read(outside.path().join("shadow")).expect("read"),
            b"x:1\n"
        );

        // A FIFO as /etc/shadow: refused without blocking.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("etc");
        let fifo = std::ffi::CString::new(dir.path().join("etc/shadow").to_str().expect("utf-8"))
            .expect("c");
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(rewrite(&root(dir.path()), "shadow", Box::new(upper)).is_err());

        // Links at the backup's and the temporary file's names: replaced, not followed.
        let dir = box_with_shadow();
        symlink(&secret, dir.path().join("etc/shadow-")).expect("link");
        symlink(&secret, dir.path().join("etc/shadow+")).expect("link");
        rewrite(&root(dir.path()), "shadow", Box::new(upper))
            .expect("ok")
            .expect("edited");
        assert_eq!(std::fs::read(&secret).expect("read"), b"host file\n");
        assert!(
            !std::fs::symlink_metadata(dir.path().join("etc/shadow-"))
                .expect("meta")
                .file_type()
                .is_symlink()
        );

        // A directory at the temporary name: refused, the file unchanged.
        let dir = box_with_shadow();
        std::fs::create_dir(dir.path().join("etc/shadow+")).expect("dir");
        assert!(rewrite(&root(dir.path()), "shadow", Box::new(upper)).is_err());
        assert_eq!(
            std::fs::read(dir.path().join("etc/shadow")).expect("read"),
            b"root:*:1:::::\n"
        );
    }

    #[test]
    fn a_device_node_is_refused_and_never_opened() {
        let dir = box_with_shadow();
        let shadow = dir.path().join("etc/shadow");
        std::fs::remove_file(&shadow).expect("remove");
        let path = std::ffi::CString::new(shadow.to_str().expect("utf-8")).expect("c");
        // A character device (the host's /dev/null, 1:3): the type check comes before
        // any open.
        // SAFETY: valid path; the device number is made by the libc macro.
        let made =
            unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o640, libc::makedev(1, 3)) };
        assert_eq!(made, 0, "mknod (tests run as root)");
        let error = rewrite(&root(dir.path()), "shadow", Box::new(upper)).expect_err("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    }

    #[test]
    fn the_rewrite_takes_lckpwdfs_lock_and_waits_for_its_holder() {
        let dir = box_with_shadow();
        let lock = dir.path().join("etc/.pwd.lock");
        // Another process (as chpasswd in the box would be) holds the lock for a while.
        let mut holder = std::process::Command::new("python3")
            .args([
                "-c",
                "import fcntl,sys,time\nf=open(sys.argv[1],'w')\nfcntl.lockf(f,fcntl.LOCK_EX)\nprint('held',flush=True)\ntime.sleep(0.8)",
            ])
            .arg(&lock)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("read");
        assert_eq!(line.trim(), "held");
        let started = Instant::now();
        rewrite(&root(dir.path()), "shadow", Box::new(upper))
            .expect("rewritten")
            .expect("edited");
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "the rewrite did not wait for the lock: {:?}",
            started.elapsed()
        );
        holder.wait().expect("holder");
        // Missing, the lock file is made as lckpwdf makes it.
        let dir = box_with_shadow();
        rewrite(&root(dir.path()), "shadow", Box::new(upper)).expect("ok");
        let meta = std::fs::metadata(dir.path().join("etc/.pwd.lock")).expect("made");
        assert_eq!(meta.mode() & 0o7777, 0o600);
    }

    #[test]
    fn a_huge_file_or_a_path_is_refused() {
        let dir = box_with_shadow();
        let big = vec![b'x'; (MAX_SIZE + 1) as usize];
        std::fs::write(dir.path().join("etc/shadow"), &big).expect("write");
        assert!(rewrite(&root(dir.path()), "shadow", Box::new(upper)).is_err());
        for name in ["../shadow", "", ".pwd.lock"] {
            assert!(
                rewrite(&root(dir.path()), name, Box::new(upper)).is_err(),
                "{name}"
            );
        }
    }
}
