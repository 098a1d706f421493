//! The boxes' /proc/stat and /proc/uptime, served over FUSE and bound over the box's
//! own by Hermes. A box runs on a boot clock of its own (the `hermes-box` runtime's
//! time namespace); LXCFS's /proc/stat keeps the host's btime, and `ps` adds each
//! process's start time to it, so with LXCFS's file every START in the box would be
//! off by the host's uptime. These two files count the box's CPUs (as LXCFS does)
//! and its clock (as the kernel does): uptime, btime and every `ps` age agree.
//!
//! Usage: hermes-box-proc MOUNTPOINT. Run as root on the engine's host, as LXCFS is
//! (scripts/ensure-box-proc.sh starts it). The mount is named as LXCFS's mounts are,
//! so the box's mount table shows these two files as it shows the others.

mod cgroup;
mod files;
mod fuse;
mod render;

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use std::sync::OnceLock;

/// Where this server is mounted, for the signal handler's unmount.
static MOUNTPOINT: OnceLock<CString> = OnceLock::new();

/// Larger than any request the kernel sends here (it wants at least 8 KiB).
const REQUEST_BUFFER: usize = 1 << 17;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(point), None) = (args.next(), args.next()) else {
        eprintln!("usage: hermes-box-proc MOUNTPOINT");
        return ExitCode::from(2);
    };
    let Ok(point) = CString::new(point.as_bytes()) else {
        eprintln!("the mount point holds a NUL byte");
        return ExitCode::from(2);
    };
    match serve(point) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hermes-box-proc: {error}");
            ExitCode::FAILURE
        }
    }
}

fn serve(point: CString) -> io::Result<()> {
    let device = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|error| io::Error::new(error.kind(), format!("/dev/fuse: {error}")))?;
    mount(&point, device.as_raw_fd())?;
    let _ = MOUNTPOINT.set(point.clone());
    on_signals_unmount();
    eprintln!(
        "hermes-box-proc: serving proc/stat and proc/uptime at {}",
        point.to_string_lossy()
    );
    let mut server = fuse::Server::new(cgroup::Hierarchies::discover());
    let mut channel = &device;
    let mut buf = vec![0u8; REQUEST_BUFFER];
    loop {
        let len = match channel.read(&mut buf) {
            Ok(len) => len,
            Err(error) => match error.raw_os_error() {
                // Interrupted, or a request the kernel withdrew: the next one.
                Some(libc::EINTR | libc::EAGAIN | libc::ENOENT) => continue,
                // Unmounted.
                Some(libc::ENODEV) => return Ok(()),
                _ => {
                    return Err(io::Error::new(
                        error.kind(),
                        format!("/dev/fuse read: {error}"),
                    ));
                }
            },
        };
        let Some(request) = fuse::parse(&buf[..len]) else {
            continue;
        };
        let answer = server.answer(&request);
        if let Some(reply) = fuse::frame(request.unique, &answer) {
            // A reply to a request its reader gave up on fails with ENOENT: no matter.
            let _ = channel.write_all(&reply);
        }
        if answer == fuse::Answer::Stop {
            return Ok(());
        }
    }
}

/// Mounts /dev/fuse's connection at `point`, named as LXCFS names its mount.
fn mount(point: &CString, fd: i32) -> io::Result<()> {
    let options = CString::new(format!(
        "fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other"
    ))
    .map_err(io::Error::other)?;
    let source = c"lxcfs";
    let fstype = c"fuse.lxcfs";
    // SAFETY: every pointer is a NUL-terminated string alive for the call.
    let done = unsafe {
        libc::mount(
            source.as_ptr(),
            point.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            options.as_ptr().cast(),
        )
    };
    if done != 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::new(
            error.kind(),
            format!("mount at {}: {error}", point.to_string_lossy()),
        ));
    }
    Ok(())
}

extern "C" fn unmount_and_exit(_: libc::c_int) {
    if let Some(point) = MOUNTPOINT.get() {
        // SAFETY: umount2 and _exit are async-signal-safe; the string is 'static.
        unsafe {
            libc::umount2(point.as_ptr(), libc::MNT_DETACH);
        }
    }
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

/// TERM, INT and HUP unmount before exiting: a box made later binds the next
/// server's mount, not a dead one.
fn on_signals_unmount() {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a handler that only makes signal-safe calls.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = unmount_and_exit as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}
