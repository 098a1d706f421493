//! A transparent wrapper around the client's TCP stream that reports the client's
//! identification line the moment it arrives, before the SSH library parses it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes inspected before giving up on finding an identification line.
const MAX_INSPECTED: usize = 8 * 1024;

/// Finds the `SSH-` line in the first bytes a client sends.
#[derive(Debug, Default)]
pub(crate) struct IdentScanner {
    line: Vec<u8>,
    inspected: usize,
    done: bool,
}

impl IdentScanner {
    /// Feeds received bytes; returns the identification line (without CR LF) once
    /// complete. Lines before it that do not start with `SSH-` are skipped.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Option<String> {
        if self.done {
            return None;
        }
        for &byte in bytes {
            self.inspected += 1;
            if self.inspected > MAX_INSPECTED {
                self.done = true;
                return None;
            }
            if byte == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.starts_with(b"SSH-") {
                    self.done = true;
                    return Some(String::from_utf8_lossy(&line).into_owned());
                }
            } else if self.line.len() < 1024 {
                self.line.push(byte);
            }
        }
        None
    }
}

/// The client stream, with inbound bytes shown to an [`IdentScanner`].
pub(crate) struct TappedStream<S, F> {
    inner: S,
    scanner: IdentScanner,
    on_ident: Option<F>,
}

impl<S, F: FnOnce(String)> TappedStream<S, F> {
    pub(crate) fn new(inner: S, on_ident: F) -> Self {
        TappedStream {
            inner,
            scanner: IdentScanner::default(),
            on_ident: Some(on_ident),
        }
    }
}

impl<S: AsyncRead + Unpin, F: FnOnce(String) + Unpin> AsyncRead for TappedStream<S, F> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.on_ident.is_some()
            && let Poll::Ready(Ok(())) = &result
        {
            let this = &mut *self;
            if let Some(line) = this.scanner.feed(&buf.filled()[before..])
                && let Some(report) = this.on_ident.take()
            {
                report(line);
            }
            if this.scanner.done {
                this.on_ident = None;
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin, F: Unpin> AsyncWrite for TappedStream<S, F> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_line_across_chunks_and_after_blank_lines() {
        let mut scanner = IdentScanner::default();
        assert_eq!(scanner.feed(b"\r\n\r\nSSH-2.0-Open"), None);
        assert_eq!(
            scanner.feed(b"SSH_9.6\r\n\x00\x00"),
            Some("SSH-2.0-OpenSSH_9.6".to_owned())
        );
        assert_eq!(scanner.feed(b"SSH-2.0-again\r\n"), None);
    }

    #[test]
    fn gives_up_on_endless_garbage() {
        let mut scanner = IdentScanner::default();
        let garbage = vec![b'A'; MAX_INSPECTED + 10];
        assert_eq!(scanner.feed(&garbage), None);
        assert!(scanner.done);
        assert_eq!(scanner.feed(b"\nSSH-2.0-x\n"), None);
    }

    #[tokio::test]
    async fn reports_through_the_stream() {
        use tokio::io::AsyncReadExt;
        let (mut client, server) = tokio::io::duplex(64);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut tapped = TappedStream::new(server, move |line| {
            let _ = tx.send(line);
        });
        tokio::io::AsyncWriteExt::write_all(&mut client, b"SSH-2.0-Test\r\nrest")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        let n = tapped.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"SSH-2.0-Test\r\nrest");
        assert_eq!(rx.try_recv().ok().as_deref(), Some("SSH-2.0-Test"));
    }
}
