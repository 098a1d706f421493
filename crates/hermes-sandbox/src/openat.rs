//! `openat(2)` on a descriptor, for the code that walks directories an attacker
//! controls (the overlay upper directory, the container's `/dev`): the caller picks
//! the flags (`O_NOFOLLOW` above all); `O_CLOEXEC` is always added.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `text` as a C path; a NUL in it is an error, never a cut.
pub(crate) fn cstring(text: impl AsRef<[u8]>) -> io::Result<CString> {
    CString::new(text.as_ref())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

/// `fstat(2)` of an open descriptor (an `O_PATH` one too).
pub(crate) fn fstat(fd: &impl AsRawFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `stat` is writable.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat)
}

/// Opens `name` relative to `dir` (the current directory when None).
pub(crate) fn open_at(
    dir: Option<&impl AsRawFd>,
    name: impl Into<Vec<u8>>,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    let name = cstring(name.into())?;
    let dir = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: `name` is NUL-terminated and `dir` an open descriptor (or AT_FDCWD);
    // the result is checked.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the directory at `path` for reading its entries, never through a symlink
/// as its last component.
pub(crate) fn open_dir(path: &std::path::Path) -> io::Result<OwnedFd> {
    open_at(
        None::<&OwnedFd>,
        path.as_os_str().as_encoded_bytes(),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
    )
}

/// Creates `name` in `dir` (`O_CREAT | O_EXCL | O_NOFOLLOW` always added: never an
/// existing file, never through a link) with `mode`, opened with `flags`.
pub(crate) fn create_at(
    dir: &impl AsRawFd,
    name: &str,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let name = cstring(name)?;
    let flags = flags | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `name` is NUL-terminated, `dir` an open descriptor; the result is checked.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The root directory of the container `container_id` as its first process `pid`
/// sees it (`O_PATH`), pinned: `/proc/PID` is opened first, so a PID reused
/// meanwhile fails the cgroup check or names another container.
pub(crate) fn container_root(pid: i64, container_id: &str) -> io::Result<OwnedFd> {
    if pid <= 0 {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no process id"));
    }
    let proc_dir = open_at(
        None::<&OwnedFd>,
        format!("/proc/{pid}"),
        libc::O_PATH | libc::O_DIRECTORY,
    )?;
    let cgroup = open_at(Some(&proc_dir), "cgroup", libc::O_RDONLY)?;
    let cgroup = io::read_to_string(std::fs::File::from(cgroup))?;
    if container_id.len() < 12 || !cgroup.contains(container_id) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the process is not in the container's cgroup",
        ));
    }
    open_at(Some(&proc_dir), "root", libc::O_PATH | libc::O_DIRECTORY)
}

/// Reopens an `O_PATH` descriptor for I/O: the same inode, whatever its name now is.
pub(crate) fn reopen(fd: &OwnedFd, flags: libc::c_int) -> io::Result<std::fs::File> {
    let reopened = open_at(
        None::<&OwnedFd>,
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        flags,
    )?;
    Ok(std::fs::File::from(reopened))
}
