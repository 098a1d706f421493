//! The CPU priority of Hermes's threads (`server.nice`). sshd runs a process per
//! session; Hermes runs every session in a few threads. The kernel shares a busy CPU
//! per thread, so at nice 0 those few threads would get a few shares of the machine
//! for the work that sshd's hundreds of processes get hundreds of shares for, and
//! every keystroke would wait behind the boxes' shells and the terminal's kernel
//! work. Set before any other thread exists: threads start at their maker's value.

/// What became of the wanted value.
#[derive(Debug, PartialEq, Eq)]
pub enum Priority {
    /// The threads run at the wanted value.
    Set(i32),
    /// The kernel refused it (no CAP_SYS_NICE); the threads keep `now`.
    Kept {
        wanted: i32,
        now: i32,
        error: String,
    },
}

/// Sets the calling thread's nice value; call it before any other thread starts.
pub fn set(nice: i32) -> Priority {
    match hermes_core::priority::set_own_nice(nice) {
        Ok(()) => Priority::Set(nice),
        Err(error) => Priority::Kept {
            wanted: nice,
            now: hermes_core::priority::own_nice(),
            error: error.to_string(),
        },
    }
}

impl Priority {
    /// Says what was set, once logging runs.
    pub fn log(&self) {
        match self {
            Priority::Set(nice) => {
                tracing::info!(target: "hermes", nice, "session threads' CPU priority set");
            }
            Priority::Kept { wanted, now, error } => {
                tracing::warn!(target: "hermes", wanted, now, %error, "server.nice could not be set (it needs CAP_SYS_NICE below the current value); the session threads keep theirs and share the CPU with every box's shell as equals");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_gets_the_value_and_threads_it_starts_inherit_it() {
        // On a thread of its own: the test runner's other threads keep theirs.
        std::thread::spawn(|| {
            let own = hermes_core::priority::own_nice;
            let start = own();
            // Raising the value (nicer) needs no privilege.
            let nicer = (start + 3).min(19);
            assert_eq!(set(nicer), Priority::Set(nicer));
            assert_eq!(own(), nicer);
            let child = std::thread::spawn(own).join().unwrap();
            assert_eq!(child, nicer);
        })
        .join()
        .unwrap();
    }

    /// Drops CAP_SYS_NICE from the calling thread's effective capabilities.
    fn drop_sys_nice() {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        const CAP_SYS_NICE: u32 = 23;
        let mut header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: capget/capset with a version-3 header and room for its two words;
        // they change only this thread's capabilities.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()),
                0
            );
            data[0].effective &= !(1 << CAP_SYS_NICE);
            assert_eq!(
                libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()),
                0
            );
        }
    }

    #[test]
    fn a_value_the_kernel_refuses_is_reported_and_the_thread_keeps_its_own() {
        std::thread::spawn(|| {
            drop_sys_nice();
            let start = hermes_core::priority::own_nice();
            match set(start - 1) {
                Priority::Kept { wanted, now, error } => {
                    assert_eq!((wanted, now), (start - 1, start));
                    assert!(error.contains("denied"), "{error}");
                }
                other => panic!("lowered without CAP_SYS_NICE: {other:?}"),
            }
        })
        .join()
        .unwrap();
    }
}
