//! Bounds how long a read or write of a descriptor shared with a box may hold the
//! thread that makes it ([`guarded`]).
//!
//! A descriptor taken from a box's sshd is non-blocking, but its open file is
//! shared with the box: a fake sshd could turn blocking back on, and a call would
//! then hang one of the threads every session runs on. A guarded call that takes
//! longer than [`STALL_LIMIT`] is ended with EINTR by a signal whose handler does
//! nothing (installed without `SA_RESTART`). A non-blocking call never sleeps, so
//! EINTR can only mean it blocked.
//!
//! The signal comes from one watchdog thread that looks at every thread's slot a few
//! times per limit, not from a timer armed and disarmed around each call: two
//! `timer_settime` calls per keystroke's read and write were Hermes's most frequent
//! system call in a typing crowd. A call costs two stores into its thread's slot;
//! the watchdog sleeps (parked) while no guarded call is made.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock, Weak};
use std::thread::Thread;
use std::time::Duration;

/// The longest a guarded call may block its thread (it is ended between three and
/// four [`TICK`]s after it started).
pub(crate) const STALL_LIMIT: Duration = Duration::from_millis(200);

/// How often the watchdog looks while calls are made.
const TICK: Duration = Duration::from_millis(50);

/// Looks that find the same call still running before it is ended.
const STALLED_TICKS: u32 = (STALL_LIMIT.as_millis() / TICK.as_millis()) as u32;

/// Set in a slot's word once its call returned.
const DONE: u64 = 1 << 63;

/// The signal that ends a stalled call (a real-time one nothing else here uses).
fn stall_signal() -> libc::c_int {
    libc::SIGRTMIN() + 5
}

extern "C" fn interrupt(_: libc::c_int) {}

/// One thread's guarded calls.
struct Slot {
    tid: libc::pid_t,
    /// The number of the thread's latest call, with [`DONE`] once it returned.
    call: AtomicU64,
}

/// A thread's own handle on its slot; dropped when the thread ends.
struct ThreadSlot {
    slot: Arc<Slot>,
    /// Calls made so far (only this thread counts them).
    made: Cell<u64>,
    watchdog: &'static Thread,
}

impl Drop for ThreadSlot {
    fn drop(&mut self) {
        // A thread that ends is in no call: never signalled again.
        self.slot
            .call
            .store(self.made.get() | DONE, Ordering::SeqCst);
    }
}

/// A slot as the watchdog follows it.
struct Watched {
    slot: Weak<Slot>,
    /// Its word at the last look.
    call: u64,
    /// Looks in a row that found the same call running.
    running: u32,
}

/// Every thread's slot (a thread adds its own at its first call).
static WATCHED: Mutex<Vec<Watched>> = Mutex::new(Vec::new());
/// The watchdog is parked, or about to be: the next call wakes it.
static IDLE: AtomicBool = AtomicBool::new(false);
/// The watchdog's thread, started at the first call; `None` if it cannot be made.
static WATCHDOG: OnceLock<Option<Thread>> = OnceLock::new();
static HANDLER: Once = Once::new();

thread_local! {
    static SLOT: Option<ThreadSlot> = watchdog().map(|watchdog| {
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::gettid() };
        let slot = Arc::new(Slot { tid, call: AtomicU64::new(DONE) });
        watched().push(Watched { slot: Arc::downgrade(&slot), call: DONE, running: 0 });
        ThreadSlot { slot, made: Cell::new(0), watchdog }
    });
}

fn watched() -> MutexGuard<'static, Vec<Watched>> {
    // The list stays valid whatever panicked while holding it.
    WATCHED.lock().unwrap_or_else(|p| p.into_inner())
}

fn install_handler() {
    HANDLER.call_once(|| {
        // SAFETY: a zeroed sigaction with a handler that does nothing, no
        // SA_RESTART (the interrupted call must return EINTR) and an empty mask.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = interrupt as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(stall_signal(), &action, std::ptr::null_mut());
        }
    });
}

fn watchdog() -> Option<&'static Thread> {
    WATCHDOG
        .get_or_init(|| {
            install_handler();
            std::thread::Builder::new()
                .name("hermes-stall".into())
                .stack_size(64 * 1024)
                .spawn(watch)
                .ok()
                .map(|spawned| spawned.thread().clone())
        })
        .as_ref()
}

fn watch() {
    loop {
        std::thread::sleep(TICK);
        if look() {
            continue;
        }
        // Nothing ran since the last look: park until the next call. The flag is
        // set before looking again, so a call either sees it (and unparks) or is
        // seen by that look.
        IDLE.store(true, Ordering::SeqCst);
        if look() {
            IDLE.store(false, Ordering::SeqCst);
            continue;
        }
        while IDLE.load(Ordering::SeqCst) {
            std::thread::park();
        }
    }
}

/// Looks at every slot once, ending calls that ran for [`STALLED_TICKS`] looks.
/// Returns whether any call was made or running since the last look.
fn look() -> bool {
    let mut watched = watched();
    watched.retain(|entry| entry.slot.strong_count() > 0);
    let mut active = false;
    for entry in watched.iter_mut() {
        let Some(slot) = entry.slot.upgrade() else {
            continue;
        };
        let call = slot.call.load(Ordering::SeqCst);
        if call != entry.call {
            active = true;
        }
        if call & DONE != 0 {
            entry.running = 0;
        } else if call == entry.call {
            active = true;
            entry.running += 1;
            // Still the same call at the moment of the signal: it is stalled.
            if entry.running >= STALLED_TICKS && slot.call.load(Ordering::SeqCst) == call {
                // SAFETY: tgkill with our own process id and a thread of it whose
                // slot lives (the slot is marked done before its thread ends).
                unsafe {
                    libc::syscall(libc::SYS_tgkill, libc::getpid(), slot.tid, stall_signal())
                };
                entry.running = 0;
            }
        } else {
            entry.running = 1;
        }
        entry.call = call;
    }
    active
}

/// Runs `call` (a read or write returning -1 and errno on failure) so that it holds
/// the thread for at most about [`STALL_LIMIT`]. Without a watchdog nothing is
/// called: the descriptor is given up rather than risk the thread.
pub(crate) fn guarded(call: impl FnOnce() -> isize) -> io::Result<usize> {
    SLOT.with(|slot| {
        let Some(slot) = slot else {
            return Err(io::Error::other("no stall watchdog"));
        };
        let number = slot.made.get() + 1;
        slot.made.set(number);
        slot.slot.call.store(number, Ordering::SeqCst);
        if IDLE.load(Ordering::SeqCst) && IDLE.swap(false, Ordering::SeqCst) {
            slot.watchdog.unpark();
        }
        let result = call();
        let error = io::Error::last_os_error();
        slot.slot.call.store(number | DONE, Ordering::SeqCst);
        if result >= 0 {
            return Ok(result as usize);
        }
        if error.raw_os_error() == Some(libc::EINTR) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "a descriptor taken from the box's sshd blocked",
            ));
        }
        Err(error)
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Instant;

    use super::*;

    /// A blocking pipe: (read end, write end).
    fn blocking_pipe() -> (OwnedFd, OwnedFd) {
        let mut ends = [0; 2];
        // SAFETY: pipe2 writes two descriptors.
        assert_eq!(unsafe { libc::pipe2(ends.as_mut_ptr(), 0) }, 0);
        // SAFETY: both were just made for us.
        unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) }
    }

    fn read_one(fd: &OwnedFd) -> isize {
        let mut byte = [0u8; 1];
        // SAFETY: read one byte into a live buffer.
        unsafe { libc::read(fd.as_raw_fd(), byte.as_mut_ptr().cast(), 1) }
    }

    #[test]
    fn a_call_that_blocks_is_ended_near_the_limit() {
        let (read, _write) = blocking_pipe();
        for _ in 0..3 {
            let started = Instant::now();
            let error = guarded(|| read_one(&read)).expect_err("nothing to read: it blocked");
            let took = started.elapsed();
            assert_eq!(error.kind(), io::ErrorKind::TimedOut);
            assert!(
                took >= STALL_LIMIT - TICK && took < STALL_LIMIT * 4,
                "ended after {took:?}"
            );
        }
    }

    #[test]
    fn calls_that_return_leave_no_signal_behind() {
        let (read, write) = blocking_pipe();
        // SAFETY: write to our own pipe from a live buffer.
        let put = || unsafe { libc::write(write.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        let started = Instant::now();
        while started.elapsed() < STALL_LIMIT * 3 {
            assert_eq!(guarded(put).expect("written"), 1);
            assert_eq!(guarded(|| read_one(&read)).expect("read"), 1);
        }
        // An unguarded wait past the limit on this same thread: no signal ends it.
        let writer = {
            let write = write.try_clone().expect("clone");
            std::thread::spawn(move || {
                std::thread::sleep(STALL_LIMIT * 2);
                // SAFETY: as above.
                unsafe { libc::write(write.as_raw_fd(), b"y".as_ptr().cast(), 1) }
            })
        };
        assert_eq!(read_one(&read), 1, "{}", io::Error::last_os_error());
        assert_eq!(writer.join().expect("writer"), 1);
    }

    #[test]
    fn the_watchdog_parks_when_no_calls_are_made_and_wakes_for_the_next() {
        let (read, _write) = blocking_pipe();
        let _ = guarded(|| 0);
        let started = Instant::now();
        while !IDLE.load(Ordering::SeqCst) {
            // Other tests' calls may keep it awake for a while; never for long.
            assert!(started.elapsed() < Duration::from_secs(30), "never parked");
            std::thread::sleep(TICK);
        }
        // A parked watchdog still ends a stalled call.
        let started = Instant::now();
        let error = guarded(|| read_one(&read)).expect_err("blocked");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() < STALL_LIMIT * 4,
            "{:?}",
            started.elapsed()
        );
    }
}
