//! A forwarded channel has no `peek`: its first byte is read to tell TLS from plain
//! HTTP, then given back in front of the rest.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// How long the client may take to send its first byte before the channel is taken
/// for plain HTTP (whose own timeouts then apply).
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// A stream with the bytes already read from it put back in front.
pub struct Rewound<S> {
    first: Option<u8>,
    inner: S,
}

/// Reads `stream`'s first byte: the stream with it put back, and whether it opens a
/// TLS handshake; `None` when the client closed before sending anything.
pub async fn sniff<S>(mut stream: S) -> Option<(Rewound<S>, bool)>
where
    S: AsyncRead + Unpin,
{
    let mut byte = [0u8; 1];
    let first = match tokio::time::timeout(SNIFF_TIMEOUT, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => return None,
        Ok(Ok(_)) => Some(byte[0]),
        Err(_) => None,
    };
    let tls = first == Some(TLS_HANDSHAKE);
    Some((
        Rewound {
            first,
            inner: stream,
        },
        tls,
    ))
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if buf.remaining() > 0
            && let Some(byte) = self.first.take()
        {
            buf.put_slice(&[byte]);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn the_first_byte_is_given_back_and_tls_is_told_apart() {
        for (sent, tls) in [
            (&b"\x16\x03\x01rest"[..], true),
            (b"GET / HTTP/1.1\r\n", false),
        ] {
            let (mut client, server) = tokio::io::duplex(64);
            client.write_all(sent).await.expect("write");
            drop(client);
            let (mut rewound, is_tls) = sniff(server).await.expect("a byte");
            assert_eq!(is_tls, tls);
            let mut all = Vec::new();
            rewound.read_to_end(&mut all).await.expect("read");
            assert_eq!(all, sent);
        }
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        assert!(sniff(server).await.is_none());
    }
}
