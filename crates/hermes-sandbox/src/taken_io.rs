//! Reads and writes the descriptors taken from a box's sshd ([`crate::sshd_fds`]) on
//! tokio's threads.
//!
//! They are non-blocking, but their open file is shared with the box: a fake sshd
//! could turn blocking back on, and a read or write would then hang one of the
//! threads every session runs on. So each call is [`guarded`]: one that blocks is
//! ended, that descriptor is then given up with an error, and its channel ends.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::stall_guard::guarded;

/// A descriptor taken from the box's sshd, registered with tokio.
#[derive(Clone)]
pub(crate) struct TakenFd {
    fd: Arc<AsyncFd<OwnedFd>>,
    /// A pty master: reading EIO means every process closed the terminal (its end).
    terminal: bool,
}

impl TakenFd {
    /// Registers `fd` (non-blocking already) with the runtime.
    pub(crate) fn new(fd: OwnedFd, terminal: bool) -> io::Result<TakenFd> {
        Ok(TakenFd {
            // SAFETY: an OwnedFd keeps its one descriptor open until dropped.
            fd: Arc::new(unsafe { AsyncFd::register(fd) }?),
            terminal,
        })
    }
}

impl AsyncRead for TakenFd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let wanted = unfilled.len();
            let raw = ready.get_inner().as_raw_fd();
            // SAFETY: read into the unfilled part of the buffer, at most its length.
            match guarded(|| unsafe { libc::read(raw, unfilled.as_mut_ptr().cast(), wanted) }) {
                Ok(n) => {
                    // A short read took all there was: what comes next is an edge of
                    // its own. Reading again before it would only find nothing, or
                    // wait in the kernel for a terminal's pending output while the
                    // chunk just read waits behind this task.
                    if n < wanted {
                        ready.clear_ready();
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    ready.clear_ready();
                }
                Err(error) if self.terminal && error.raw_os_error() == Some(libc::EIO) => {
                    return Poll::Ready(Ok(()));
                }
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl hermes_core::box_sshd::TakenRead for TakenFd {
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let raw = self.fd.as_raw_fd();
        // SAFETY: read into the caller's buffer, at most its length.
        match guarded(|| unsafe { libc::read(raw, buf.as_mut_ptr().cast(), buf.len()) }) {
            Err(error) if self.terminal && error.raw_os_error() == Some(libc::EIO) => Ok(0),
            result => result,
        }
    }
}

impl AsyncWrite for TakenFd {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut ready = ready!(self.fd.poll_write_ready(cx))?;
            let written = ready.try_io(|fd| {
                let raw = fd.as_raw_fd();
                // SAFETY: write from the caller's buffer, at most its length.
                guarded(|| unsafe { libc::write(raw, data.as_ptr().cast(), data.len()) })
            });
            match written {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::FromRawFd;

    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut ends = [0; 2];
        // SAFETY: pipe2 writes two descriptors.
        assert_eq!(
            unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_NONBLOCK) },
            0
        );
        // SAFETY: both were just made for us.
        unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) }
    }

    #[tokio::test]
    async fn bytes_go_through_and_the_end_is_read() {
        let (read, write) = pipe();
        let mut reader = TakenFd::new(read, false).unwrap();
        let mut writer = TakenFd::new(write, false).unwrap();
        writer.write_all(b"\x00\x01\x02 out").await.unwrap();
        // The end of input is this copy's end.
        drop(writer);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"\x00\x01\x02 out");
    }

    #[tokio::test]
    async fn what_comes_after_a_short_read_is_read() {
        let (read, write) = pipe();
        let mut reader = TakenFd::new(read, false).unwrap();
        let mut writer = TakenFd::new(write, false).unwrap();
        let mut buf = [0u8; 64];
        for piece in [&b"echo\r\n"[..], b"t-1\r\n", b"# "] {
            writer.write_all(piece).await.unwrap();
            let n = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf))
                .await
                .expect("the next piece is read")
                .unwrap();
            assert_eq!(&buf[..n], piece);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_descriptor_made_blocking_again_does_not_hold_the_thread() {
        let (read, write) = pipe();
        // What a fake sshd sharing the open file could do: make it blocking again,
        // and take the bytes the reactor said were there.
        let hostile = read.try_clone().unwrap();
        let mut reader = TakenFd::new(read, false).unwrap();
        // SAFETY: F_SETFL on a descriptor this test owns.
        unsafe { libc::fcntl(hostile.as_raw_fd(), libc::F_SETFL, 0) };
        // SAFETY: write one byte from a live buffer.
        assert_eq!(
            unsafe { libc::write(write.as_raw_fd(), b"x".as_ptr().cast(), 1) },
            1
        );
        // The reactor learns that it is readable...
        // SAFETY: as in TakenFd::new.
        let mut wait = unsafe { AsyncFd::register(hostile.try_clone().unwrap()) }.unwrap();
        wait.readable_mut().await.unwrap().retain_ready();
        let mut byte = [0u8; 1];
        // ...and the byte is gone before the taken descriptor reads.
        // SAFETY: read one byte into a live buffer.
        assert_eq!(
            unsafe { libc::read(hostile.as_raw_fd(), byte.as_mut_ptr().cast(), 1) },
            1
        );
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16];
        let result = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf)).await;
        let error = result
            .expect("the read ended")
            .expect_err("a stall is an error");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        drop(write);
    }
}
