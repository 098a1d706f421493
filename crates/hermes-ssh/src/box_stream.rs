//! The TCP stream to a box's sshd, acknowledging at once what it reads.
//!
//! sshd leaves Nagle's algorithm on until a session gets a terminal (and for good
//! on sessions without one), so a small packet it writes while its previous one is
//! unacknowledged waits for that acknowledgement. Linux delays a receiver's
//! acknowledgement by up to 40 ms when the receiver usually answers with data of its
//! own, as Hermes does: at every login the channel's confirmation (after the
//! host-keys notice) and at the end of a command its exit status waited that long.
//! Acknowledging each read at once (TCP_QUICKACK) takes the wait out.
//!
//! Once a session on the connection has a terminal, sshd has turned Nagle off for
//! the connection's socket, and a typed session's acknowledgements ride on its next
//! keystroke: each read's own ACK would be a packet more per echo for both sides.
//! [`QuickAck::stop`] ends the immediate acknowledgements then.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Whether a connection's reads are still acknowledged at once (shared with the
/// session that knows when a terminal is up).
#[derive(Debug, Clone)]
pub(crate) struct QuickAck(Arc<AtomicBool>);

impl QuickAck {
    /// sshd has turned Nagle off (a terminal session runs): ACKs may wait again.
    pub(crate) fn stop(&self) {
        self.0.store(false, Ordering::Release);
    }

    fn on(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A stream to a box's sshd whose reads are acknowledged at once.
pub(crate) struct AckingStream {
    inner: TcpStream,
    quick: QuickAck,
}

impl AckingStream {
    pub(crate) fn new(inner: TcpStream) -> Self {
        AckingStream {
            inner,
            quick: QuickAck(Arc::new(AtomicBool::new(true))),
        }
    }

    /// The switch that ends the immediate acknowledgements.
    pub(crate) fn quick_ack(&self) -> QuickAck {
        self.quick.clone()
    }

    /// Sends the acknowledgement of what was read now, and leaves the socket in
    /// quick-ack mode (which the kernel leaves again once Hermes answers).
    fn acknowledge(&self) {
        let on: libc::c_int = 1;
        // SAFETY: the descriptor is the open socket `inner` owns; `on` outlives the
        // call and its size is passed. A failure only leaves the delayed ACK.
        unsafe {
            libc::setsockopt(
                self.inner.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

impl AsyncRead for AckingStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before && this.quick.on() {
            this.acknowledge();
        }
        polled
    }
}

impl AsyncWrite for AckingStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// What is read from the socket at most when it is dropped.
const DRAIN_AT_CLOSE: usize = 64 << 10;

impl Drop for AckingStream {
    /// A socket closed with bytes unread is reset, not closed: sshd would then log a
    /// broken pipe where a client that gave up leaves `Connection closed by ...`. So
    /// what has arrived is read first (without waiting, and bounded: a box that keeps
    /// sending gets its reset).
    fn drop(&mut self) {
        let mut buf = [0u8; 4096];
        let mut drained = 0;
        while drained < DRAIN_AT_CLOSE {
            match self.inner.try_read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn quick_ack(stream: &TcpStream) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the descriptor is open; `value` and `len` are writable and sized.
        let done = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(done, 0);
        value
    }

    /// Client and server talk in turns (as Hermes and sshd do), which puts the
    /// client's socket into delayed-ACK mode; through the wrapper each read leaves it
    /// acknowledging at once, until the wrapper is stopped. Bytes pass through
    /// unchanged either way.
    #[tokio::test]
    async fn each_read_leaves_the_socket_acknowledging_at_once_until_stopped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let mut served = Vec::new();
            for _ in 0..3 {
                let (mut peer, _) = listener.accept().await.expect("accept");
                let mut byte = [0u8; 1];
                for turn in 0..20u8 {
                    peer.read_exact(&mut byte).await.expect("read");
                    peer.write_all(&[turn, byte[0]]).await.expect("write");
                }
                served.push(peer);
            }
            served
        });
        let mut modes = Vec::new();
        for (wrapped, stopped) in [(false, false), (true, false), (true, true)] {
            let stream = TcpStream::connect(address).await.expect("connect");
            let mut acking = AckingStream::new(stream);
            if stopped {
                acking.quick_ack().stop();
            }
            for turn in 0..20u8 {
                let mut reply = [0u8; 2];
                if wrapped {
                    acking.write_all(&[turn]).await.expect("write");
                    acking.read_exact(&mut reply).await.expect("read");
                } else {
                    acking.inner.write_all(&[turn]).await.expect("write");
                    acking.inner.read_exact(&mut reply).await.expect("read");
                }
                assert_eq!(reply, [turn, turn]);
            }
            modes.push(quick_ack(&acking.inner));
        }
        assert_eq!(
            modes,
            [0, 1, 0],
            "plain stream, the wrapper, the stopped wrapper"
        );
        drop(server.await.expect("server"));
    }

    /// Dropped with bytes it never read (sshd's notice after the key exchange), the
    /// stream still ends with a close the server reads as the end, not a reset; a
    /// plain socket dropped the same way is reset.
    #[tokio::test]
    async fn a_dropped_stream_is_closed_not_reset_for_what_it_left_unread() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let mut ends = Vec::new();
        for wrapped in [true, false] {
            let stream = TcpStream::connect(address).await.expect("connect");
            let (mut peer, _) = listener.accept().await.expect("accept");
            peer.write_all(&[7; 300]).await.expect("write");
            // The bytes are in the client's socket before it goes.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if wrapped {
                drop(AckingStream::new(stream));
            } else {
                drop(stream);
            }
            let mut byte = [0u8; 1];
            ends.push(match peer.read(&mut byte).await {
                Ok(0) => "closed",
                Ok(_) => "data",
                Err(_) => "reset",
            });
        }
        assert_eq!(ends, ["closed", "reset"], "the wrapper, a plain socket");
    }
}
