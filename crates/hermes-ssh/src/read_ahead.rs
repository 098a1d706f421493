//! Serves the SSH library's small reads of the client's socket from one larger read.
//!
//! The library reads a packet's length, then its rest: each a system call of its
//! own, and a third to learn the socket is empty. A keystroke's packet (36 bytes)
//! then costs three calls where sshd makes one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

/// Reads smaller than this are served from one read of this size; larger ones go
/// straight to the socket (bulk data gains nothing from a copy).
pub(crate) const READ_AHEAD: usize = 2 * 1024;

/// Bytes read off a stream and not yet handed on: `bytes[taken..filled]`. The
/// buffer is allocated (and zeroed) once, at the first small read.
#[derive(Debug, Default)]
pub(crate) struct ReadAhead {
    bytes: Box<[u8]>,
    taken: usize,
    filled: usize,
}

impl ReadAhead {
    /// Reads from `inner` into `buf`, through the read-ahead; `heard` is shown each
    /// piece as it comes off `inner`, in order.
    pub(crate) fn poll_read<R: AsyncRead + Unpin>(
        &mut self,
        inner: &mut R,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        mut heard: impl FnMut(&[u8]),
    ) -> Poll<io::Result<()>> {
        if self.unread() == 0 && buf.remaining() < READ_AHEAD {
            if self.bytes.is_empty() {
                self.bytes = vec![0; READ_AHEAD].into_boxed_slice();
            }
            self.taken = 0;
            self.filled = 0;
            let mut read = ReadBuf::new(&mut self.bytes);
            let result = Pin::new(&mut *inner).poll_read(cx, &mut read);
            if let Poll::Ready(Ok(())) = result {
                self.filled = read.filled().len();
            }
            if self.filled > 0 {
                heard(&self.bytes[..self.filled]);
            }
            ready!(result)?;
            if self.filled == 0 {
                // The end of the stream: not asked again.
                return Poll::Ready(Ok(()));
            }
        }
        if self.unread() > 0 {
            let rest = &self.bytes[self.taken..self.filled];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.taken += n;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            heard(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }

    /// Drops what was read ahead and not handed on; how many bytes that was.
    pub(crate) fn discard(&mut self) -> usize {
        let unread = self.unread();
        self.taken = 0;
        self.filled = 0;
        unread
    }

    fn unread(&self) -> usize {
        self.filled - self.taken
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    /// Serves `data` and notes the size of every read asked of it.
    struct Counted<'a> {
        data: &'a [u8],
        asked: Vec<usize>,
    }

    impl<'a> Counted<'a> {
        fn new(data: &'a [u8]) -> Self {
            Counted {
                data,
                asked: Vec::new(),
            }
        }
    }

    impl AsyncRead for Counted<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.asked.push(buf.remaining());
            let n = self.data.len().min(buf.remaining());
            buf.put_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Poll::Ready(Ok(()))
        }
    }

    async fn read(
        ahead: &mut ReadAhead,
        inner: &mut Counted<'_>,
        len: usize,
        heard: &mut Vec<u8>,
    ) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let mut buf = ReadBuf::new(&mut out);
        poll_fn(|cx| ahead.poll_read(inner, cx, &mut buf, |bytes| heard.extend_from_slice(bytes)))
            .await
            .unwrap();
        let n = buf.filled().len();
        out.truncate(n);
        out
    }

    #[tokio::test]
    async fn small_reads_cost_one_read_of_the_stream_and_keep_the_order() {
        let packets: Vec<u8> = (0..72u8).collect();
        let mut inner = Counted::new(&packets);
        let mut ahead = ReadAhead::default();
        let mut heard = Vec::new();
        let mut got = Vec::new();
        for len in [4, 32, 4, 32] {
            got.extend(read(&mut ahead, &mut inner, len, &mut heard).await);
        }
        assert_eq!(got, packets);
        assert_eq!(heard, packets, "each byte shown once, in order");
        assert_eq!(inner.asked, vec![READ_AHEAD]);
        assert!(read(&mut ahead, &mut inner, 4, &mut heard).await.is_empty());
    }

    #[tokio::test]
    async fn refills_reuse_the_buffer_and_hand_on_every_byte_once() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut inner = Counted::new(&data);
        let mut ahead = ReadAhead::default();
        let mut heard = Vec::new();
        let mut got = Vec::new();
        loop {
            let piece = read(&mut ahead, &mut inner, 7, &mut heard).await;
            if piece.is_empty() {
                break;
            }
            got.extend(piece);
        }
        assert_eq!(got, data);
        assert_eq!(heard, data);
        // Three refills of the stream, then the read that found it empty.
        assert_eq!(inner.asked, vec![READ_AHEAD; 4]);
    }

    #[tokio::test]
    async fn a_large_read_goes_to_the_stream_after_what_was_read_ahead() {
        let data: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let mut inner = Counted::new(&data);
        let mut ahead = ReadAhead::default();
        let mut heard = Vec::new();
        let mut got = read(&mut ahead, &mut inner, 4, &mut heard).await;
        while got.len() < data.len() {
            got.extend(read(&mut ahead, &mut inner, 32 * 1024, &mut heard).await);
        }
        assert_eq!(got, data);
        assert_eq!(heard, data);
        assert_eq!(inner.asked[0], READ_AHEAD);
        assert!(inner.asked[1..].iter().all(|&asked| asked == 32 * 1024));
    }

    #[tokio::test]
    async fn discarded_bytes_are_not_handed_on() {
        let data = b"0123456789";
        let mut inner = Counted {
            data,
            asked: Vec::new(),
        };
        let mut ahead = ReadAhead::default();
        let mut heard = Vec::new();
        assert_eq!(read(&mut ahead, &mut inner, 4, &mut heard).await, b"0123");
        assert_eq!(ahead.discard(), 6);
        assert!(read(&mut ahead, &mut inner, 4, &mut heard).await.is_empty());
    }
}
