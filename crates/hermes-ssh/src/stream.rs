//! The client's TCP stream as the SSH library sees it, after our own identification
//! exchange: the client's version line is replayed, the library's banner (already sent)
//! is swallowed, the first packet is shown to the KEXINIT scanner, and the connection
//! can be cut or held from outside.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use hermes_core::admission::Progress;
use hermes_core::session::ClientKex;

use crate::kexinit::KexInitScanner;
use crate::read_ahead::ReadAhead;

/// Client bytes kept while the gate is closed; more are read and dropped.
const MAX_HELD: usize = 64 * 1024;
/// sshd decodes nothing of the first packet before a whole cipher block (8 bytes for
/// the initial "none" cipher) is there; hold the library back the same way, so a
/// stray CR LF after the version line waits instead of failing.
const FIRST_BLOCK: usize = 8;

/// Controls a [`ClientStream`] from outside the SSH library.
#[derive(Debug, Default)]
pub(crate) struct StreamControl {
    killed: AtomicBool,
    gated: AtomicBool,
    read_waker: AtomicWaker,
    arrived: Notify,
}

impl StreamControl {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(StreamControl::default())
    }

    /// Ends the connection without a word, as sshd does when it exits: the library
    /// reads end-of-stream and drops the socket.
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.read_waker.wake();
    }

    /// From now on, client bytes are read off the socket but not passed on.
    pub(crate) fn close_gate(&self) {
        self.gated.store(true, Ordering::Release);
        self.read_waker.wake();
    }

    /// True once the gate is closed.
    pub(crate) fn is_gated(&self) -> bool {
        self.gated.load(Ordering::Acquire)
    }

    /// Resolves when the client sent something while the gate was closed.
    pub(crate) async fn held_bytes_arrived(&self) {
        self.arrived.notified().await;
    }
}

/// The stream handed to the SSH library.
pub(crate) struct ClientStream<F> {
    inner: TcpStream,
    /// Bytes to hand out before reading the socket again: the replayed version line,
    /// then the first block.
    replay: Vec<u8>,
    replayed: usize,
    first_block: Option<Vec<u8>>,
    swallow: usize,
    scanner: KexInitScanner,
    on_kex: Option<F>,
    control: Arc<StreamControl>,
    held: usize,
    /// Told of every read, so admission knows the client is not silent.
    progress: Arc<Progress>,
    ahead: ReadAhead,
}

impl<F: FnOnce(ClientKex)> ClientStream<F> {
    /// `client_line`: the client's version line (replayed to the library with CR LF);
    /// `banner_len`: bytes of banner (with CR LF) the library will write and we
    /// already sent; `progress`: told when the client sends something.
    pub(crate) fn new(
        inner: TcpStream,
        client_line: &str,
        banner_len: usize,
        control: Arc<StreamControl>,
        progress: Arc<Progress>,
        on_kex: F,
    ) -> Self {
        let mut replay = Vec::with_capacity(client_line.len() + 2);
        replay.extend_from_slice(client_line.as_bytes());
        replay.extend_from_slice(b"\r\n");
        ClientStream {
            inner,
            replay,
            replayed: 0,
            first_block: Some(Vec::with_capacity(FIRST_BLOCK)),
            swallow: banner_len,
            scanner: KexInitScanner::default(),
            on_kex: Some(on_kex),
            control,
            held: 0,
            progress,
            ahead: ReadAhead::default(),
        }
    }
}

/// Shows client bytes to the KEXINIT scanner until it found the client's KEXINIT.
fn scan<F: FnOnce(ClientKex)>(scanner: &mut KexInitScanner, on_kex: &mut Option<F>, bytes: &[u8]) {
    if !scanner.is_done()
        && let Some(kex) = scanner.feed(bytes)
        && let Some(report) = on_kex.take()
    {
        report(kex);
    }
}

impl<F: FnOnce(ClientKex) + Unpin> ClientStream<F> {
    fn scan(&mut self, bytes: &[u8]) {
        scan(&mut self.scanner, &mut self.on_kex, bytes);
    }

    /// Reads until the first block is complete (or the client closes), then queues it.
    fn poll_first_block(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; 4096];
        loop {
            let mut read = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let bytes = read.filled();
                    self.progress.heard();
                    self.scan(bytes);
                    let block = self.first_block.get_or_insert_with(Vec::new);
                    block.extend_from_slice(bytes);
                    if bytes.is_empty() || block.len() >= FIRST_BLOCK {
                        self.replay = self.first_block.take().unwrap_or_default();
                        self.replayed = 0;
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn poll_gated(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Read ahead but not handed on: dropped, as what is still on the socket.
        let unread = self.ahead.discard();
        if unread > 0 {
            if self.held < MAX_HELD {
                self.held += unread;
            }
            self.control.arrived.notify_one();
        }
        let mut scratch = [0u8; 4096];
        loop {
            let mut read = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    if self.held < MAX_HELD {
                        self.held += read.filled().len();
                    }
                    self.control.arrived.notify_one();
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<F: FnOnce(ClientKex) + Unpin> AsyncRead for ClientStream<F> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.control.read_waker.register(cx.waker());
        if this.control.killed.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        if this.replayed < this.replay.len() {
            let rest = &this.replay[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            return Poll::Ready(Ok(()));
        }
        if this.control.is_gated() {
            return this.poll_gated(cx);
        }
        if this.first_block.is_some() {
            match this.poll_first_block(cx) {
                Poll::Ready(Ok(())) => {
                    let n = this.replay.len().min(buf.remaining());
                    buf.put_slice(&this.replay[..n]);
                    this.replayed = n;
                    return Poll::Ready(Ok(()));
                }
                other => return other,
            }
        }
        let ClientStream {
            inner,
            ahead,
            progress,
            scanner,
            on_kex,
            ..
        } = this;
        ahead.poll_read(inner, cx, buf, |bytes| {
            progress.heard();
            scan(scanner, on_kex, bytes);
        })
    }
}

impl<F: Unpin> AsyncWrite for ClientStream<F> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.control.killed.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if self.swallow > 0 {
            let n = self.swallow.min(buf.len());
            self.swallow -= n;
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The library shuts down after its DISCONNECT and then waits for the client to
        // close; sshd just exits. End the read side too.
        self.control.kill();
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
