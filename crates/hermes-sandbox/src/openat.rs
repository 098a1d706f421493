//! `openat(2)` on a descriptor, for the code that walks directories an attacker
//! controls (the overlay upper directory, the container's `/dev`): the caller picks
//! the flags (`O_NOFOLLOW` above all); `O_CLOEXEC` is always added.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Opens `name` relative to `dir` (the current directory when None).
pub(crate) fn open_at(
    dir: Option<&impl AsRawFd>,
    name: impl Into<Vec<u8>>,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    let name = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
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
