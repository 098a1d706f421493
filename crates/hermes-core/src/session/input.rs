//! Client input on its way to a channel's process.
//!
//! The SSH library hands input over inside its connection loop, and that loop also
//! carries the process's output to the client. Writing input straight into the
//! container from there deadlocks a process that echoes (`cat`): it stops reading its
//! stdin while its stdout is full, the loop waits on the stdin, and the stdout waits on
//! the loop. So input is queued here, a writer task feeds it to the process, and the
//! queued bytes of the whole connection are counted: the SSH adapter stops granting
//! the client window while they are many, which is how sshd bounds the same buffer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// Past this many queued bytes a channel's `data` waits for the writer (the last
/// resort; the window throttle normally keeps the queue far below it).
pub(super) const MAX_QUEUED_PER_CHANNEL: usize = 16 << 20;

/// Bytes written to a process's stdin in one go.
const WRITE_SLICE: usize = 256 << 10;

#[derive(Default)]
struct State {
    queued: BytesMut,
    eof: bool,
    /// The process is gone or the channel closed: input is dropped.
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer (new input, EOF, close).
    wake_writer: Notify,
    /// Wakes a producer waiting for room.
    drained: Notify,
    /// Queued bytes of every channel of the connection.
    connection_backlog: Arc<AtomicUsize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self) {
        let dropped = {
            let mut state = self.lock();
            state.closed = true;
            let dropped = state.queued.len();
            state.queued.clear();
            dropped
        };
        self.connection_backlog.fetch_sub(dropped, Ordering::AcqRel);
        self.wake_writer.notify_one();
        self.drained.notify_waiters();
    }
}

/// One channel's input queue.
pub(super) struct InputQueue {
    shared: Arc<Shared>,
}

impl InputQueue {
    pub(super) fn new(connection_backlog: Arc<AtomicUsize>) -> Self {
        InputQueue {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake_writer: Notify::new(),
                drained: Notify::new(),
                connection_backlog,
            }),
        }
    }

    /// Queues bytes; waits only while this channel alone holds more than
    /// [`MAX_QUEUED_PER_CHANNEL`].
    pub(super) async fn push(&self, bytes: &[u8]) {
        loop {
            let drained = self.shared.drained.notified();
            {
                let mut state = self.shared.lock();
                if state.closed || state.eof {
                    return;
                }
                if state.queued.len() < MAX_QUEUED_PER_CHANNEL {
                    state.queued.extend_from_slice(bytes);
                    self.shared
                        .connection_backlog
                        .fetch_add(bytes.len(), Ordering::AcqRel);
                    break;
                }
            }
            drained.await;
        }
        self.shared.wake_writer.notify_one();
    }

    /// The client sent EOF: the process's stdin is closed once the queue is written.
    pub(super) fn finish(&self) {
        self.shared.lock().eof = true;
        self.shared.wake_writer.notify_one();
    }

    /// Bytes queued on this channel.
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        self.shared.lock().queued.len()
    }

    /// Drops what is queued and everything that comes later.
    pub(super) fn close(&self) {
        self.shared.close();
    }

    /// Writes the queue into the process's stdin until EOF, close, or a write error
    /// (the process closed its stdin), after which input is dropped.
    pub(super) fn writer(
        &self,
        mut stdin: Box<dyn AsyncWrite + Send + Unpin>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let shared = Arc::clone(&self.shared);
        async move {
            loop {
                let woken = shared.wake_writer.notified();
                let (chunk, eof) = {
                    let mut state = shared.lock();
                    if state.closed {
                        return;
                    }
                    (state.queued.split().freeze(), state.eof)
                };
                if !chunk.is_empty() {
                    // In slices, each counted off the backlog as soon as it is out, so
                    // the client's window reopens while a large queue drains.
                    let mut offset = 0;
                    while offset < chunk.len() {
                        let end = (offset + WRITE_SLICE).min(chunk.len());
                        let written = stdin.write_all(&chunk[offset..end]).await;
                        // On a failed write, what was not written is dropped too.
                        let settled = if written.is_ok() { end } else { chunk.len() };
                        shared
                            .connection_backlog
                            .fetch_sub(settled - offset, Ordering::AcqRel);
                        shared.drained.notify_waiters();
                        if written.is_err() {
                            shared.close();
                            return;
                        }
                        offset = end;
                    }
                    continue;
                }
                if eof {
                    let _ = stdin.shutdown().await;
                    return;
                }
                woken.await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    /// A stdin that accepts nothing until `open` is set, then keeps what it gets.
    struct Gate {
        open: Arc<std::sync::atomic::AtomicBool>,
        got: Arc<Mutex<Vec<u8>>>,
        shut: Arc<std::sync::atomic::AtomicBool>,
        waker: Arc<Mutex<Option<std::task::Waker>>>,
    }

    impl AsyncWrite for Gate {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            if !self.open.load(Ordering::Acquire) {
                *self.waker.lock().unwrap() = Some(cx.waker().clone());
                return Poll::Pending;
            }
            self.got.lock().unwrap().extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            self.shut.store(true, Ordering::Release);
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn input_waits_in_order_then_eof_closes_stdin() {
        let backlog = Arc::new(AtomicUsize::new(0));
        let queue = InputQueue::new(Arc::clone(&backlog));
        queue.push(b"before start ").await;
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let got = Arc::new(Mutex::new(Vec::new()));
        let shut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waker = Arc::new(Mutex::new(None));
        let writer = tokio::spawn(queue.writer(Box::new(Gate {
            open: Arc::clone(&open),
            got: Arc::clone(&got),
            shut: Arc::clone(&shut),
            waker: Arc::clone(&waker),
        })));
        // The process does not read: pushing never waits below the cap, and the
        // connection's backlog shows what is held.
        for _ in 0..100 {
            queue.push(&[b'x'; 1000]).await;
        }
        queue.finish();
        tokio::task::yield_now().await;
        assert_eq!(backlog.load(Ordering::Acquire), 13 + 100_000);
        assert!(!shut.load(Ordering::Acquire));
        open.store(true, Ordering::Release);
        if let Some(w) = waker.lock().unwrap().take() {
            w.wake();
        }
        writer.await.unwrap();
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 13 + 100_000);
        assert!(got.starts_with(b"before start x"));
        assert!(shut.load(Ordering::Acquire));
        assert_eq!(backlog.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn close_drops_what_is_queued_and_settles_the_backlog() {
        let backlog = Arc::new(AtomicUsize::new(0));
        let queue = InputQueue::new(Arc::clone(&backlog));
        queue.push(&[1; 5000]).await;
        assert_eq!(queue.queued(), 5000);
        queue.close();
        queue.push(&[1; 5000]).await;
        assert_eq!(queue.queued(), 0);
        assert_eq!(backlog.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_full_channel_waits_for_the_writer() {
        let backlog = Arc::new(AtomicUsize::new(0));
        let queue = Arc::new(InputQueue::new(Arc::clone(&backlog)));
        queue.push(&vec![0; MAX_QUEUED_PER_CHANNEL]).await;
        let pusher = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.push(b"more").await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!pusher.is_finished(), "a full queue must hold the producer");
        queue.close();
        tokio::time::timeout(std::time::Duration::from_secs(5), pusher)
            .await
            .expect("close releases the producer")
            .unwrap();
    }
}
