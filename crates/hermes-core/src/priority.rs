//! The CPU priority of work done behind the sessions' backs (capture walks, disk
//! checks, the commands that build the boxes' network): a fixed step nicer than the
//! threads that carry keystrokes (`server.nice`), so that when the cores are short it
//! waits for the relay instead of sharing the cores with it, and has them all when
//! the relay is idle.

/// How much nicer than its maker background work runs: about a tenth of a session
/// thread's CPU share when both want a core.
pub const BACKGROUND_NICER_BY: libc::c_int = 10;

/// The kernel's largest nice value.
const NICEST: libc::c_int = 19;

/// The calling thread's nice value (per thread on Linux).
pub fn own_nice() -> libc::c_int {
    // SAFETY: reading the calling thread's own priority.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

/// Sets the calling thread's nice value (per thread on Linux).
pub fn set_own_nice(nice: libc::c_int) -> std::io::Result<()> {
    // SAFETY: setting the calling thread's own priority.
    let result =
        unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The nice value for background work started by the calling thread: its own,
/// [`BACKGROUND_NICER_BY`] higher, at most the kernel's largest. Raising a nice value
/// needs no privilege.
pub fn background_nice() -> libc::c_int {
    own_nice().saturating_add(BACKGROUND_NICER_BY).min(NICEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_work_is_ten_nicer_up_to_the_kernels_largest() {
        // On a thread of its own: the test runner's other threads keep theirs.
        std::thread::spawn(|| {
            let start = own_nice();
            assert_eq!(background_nice(), (start + 10).min(19));
            set_own_nice(15).expect("nicer needs no privilege");
            assert_eq!(own_nice(), 15);
            assert_eq!(background_nice(), 19);
        })
        .join()
        .unwrap();
    }
}
