//! A channel of the box's sshd whose program's descriptors Hermes took
//! ([`hermes_core::box_sshd::ChannelTakeover`]): its output is read from the
//! terminal or pipes, its input written there, while the channel itself (window
//! zero: sshd reads none of the output) still brings the exit status and carries
//! window changes, signals and the end of input to sshd.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use hermes_core::box_sshd::{Claim, TakenChannel, TakenRead};
use hermes_core::sandbox::{OutputChunk, ProcessOutput};
use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncReadExt, AsyncWrite};

use crate::box_client::{ExitSlot, note};

/// One read of a terminal gives at most 4 KiB (the line discipline's buffer).
const READ: usize = 4 * 1024;
/// Largest piece of output handed on at once (OpenSSH's client takes 32 KiB
/// packets): a read that filled [`READ`] is followed by reads of what is already
/// there, so that bulk output costs one chunk, not eight, downstream.
const CHUNK: usize = 32 * 1024;
/// How long output is still read after sshd ended the channel without the
/// program's end (sshd killed, the connection gone): what the program had written.
const DRAIN: Duration = Duration::from_secs(1);
/// How long sshd may take to close the channel once the program is done.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type Reader = Box<dyn TakenRead>;

/// The program's output, from the taken descriptors; its exit, from the channel.
pub(crate) struct TakenOutput {
    output: Option<Reader>,
    errors: Option<Reader>,
    /// `output` is a terminal: once the program has exited, what is there is read
    /// and the channel ends, as sshd ends it (see [`TakenRead::read_now`]).
    terminal: bool,
    /// The channel's place among its connection's taken descriptors.
    _claim: Claim,
    /// A subsystem's stderr is read (the program must not block on it) and dropped,
    /// as sshd drops it.
    keep_errors: bool,
    read: ChannelReadHalf,
    write: Arc<ChannelWriteHalf<Msg>>,
    status: ExitSlot,
    /// sshd closed the channel (or the connection ended), and when.
    channel_gone: Option<tokio::time::Instant>,
    done: bool,
    buf: Box<[u8]>,
    error_buf: Box<[u8]>,
}

impl TakenOutput {
    /// The output of `fds` (its input taken out already), its exit from `read`.
    pub(crate) fn new(
        fds: TakenChannel,
        keep_errors: bool,
        read: ChannelReadHalf,
        write: Arc<ChannelWriteHalf<Msg>>,
        status: ExitSlot,
    ) -> Self {
        TakenOutput {
            output: Some(fds.output),
            errors: fds.errors,
            terminal: fds.terminal,
            _claim: fds.claim,
            keep_errors,
            read,
            write,
            status,
            channel_gone: None,
            done: false,
            buf: vec![0u8; READ].into_boxed_slice(),
            error_buf: vec![0u8; READ].into_boxed_slice(),
        }
    }

    fn exited(&self) -> bool {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The program is done: sshd is told the channel is closed (it then ends its
    /// session: utmp, the logout line), unless it closed it first.
    async fn finish(&mut self) {
        self.done = true;
        self.output = None;
        self.errors = None;
        if self.channel_gone.is_none() {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.write.close()).await;
        }
    }
}

enum Step {
    Output(io::Result<usize>),
    Errors(io::Result<usize>),
    Channel(Option<ChannelMsg>),
    Drained,
}

#[async_trait]
impl ProcessOutput for TakenOutput {
    async fn next_chunk(&mut self) -> io::Result<Option<OutputChunk>> {
        loop {
            if self.done {
                return Ok(None);
            }
            let outputs_done = self.output.is_none() && self.errors.is_none();
            if outputs_done && (self.exited() || self.channel_gone.is_some()) {
                self.finish().await;
                return Ok(None);
            }
            if self.terminal
                && self.exited()
                && let Some(output) = self.output.as_mut()
            {
                match output.read_now(&mut self.buf) {
                    Ok(n) if n > 0 => {
                        return Ok(Some(OutputChunk::Stdout(Bytes::copy_from_slice(
                            &self.buf[..n],
                        ))));
                    }
                    _ => self.output = None,
                }
                continue;
            }
            let drain_until = self.channel_gone.map(|gone| gone + DRAIN);
            let TakenOutput {
                output,
                errors,
                read,
                channel_gone,
                buf,
                error_buf,
                ..
            } = self;
            let step = tokio::select! {
                biased;
                result = read_some(output, buf) => Step::Output(result),
                result = read_some(errors, error_buf) => Step::Errors(result),
                message = read.wait(), if channel_gone.is_none() => Step::Channel(message),
                () = until(drain_until) => Step::Drained,
            };
            match step {
                Step::Output(Ok(0)) => self.output = None,
                Step::Output(Ok(n)) => {
                    let chunk = gather(self.output.as_mut(), &self.buf[..n]).await;
                    return Ok(Some(OutputChunk::Stdout(chunk)));
                }
                Step::Errors(Ok(0)) => self.errors = None,
                Step::Errors(Ok(n)) => {
                    let chunk = gather(self.errors.as_mut(), &self.error_buf[..n]).await;
                    if self.keep_errors {
                        return Ok(Some(OutputChunk::Stderr(chunk)));
                    }
                }
                Step::Output(Err(error)) | Step::Errors(Err(error)) => {
                    self.finish().await;
                    return Err(error);
                }
                Step::Channel(Some(ChannelMsg::Close) | None) => {
                    self.channel_gone = Some(tokio::time::Instant::now());
                }
                Step::Channel(Some(message)) => {
                    // Exit status or signal; the window is zero, so no data comes.
                    let _ = note(&self.status, message);
                }
                Step::Drained => {
                    self.output = None;
                    self.errors = None;
                }
            }
        }
    }
}

/// `first`, and when it filled a read, what `reader` has ready after it (up to
/// [`CHUNK`]). Bulk output (a read filled) is also given a turn of the runtime to
/// come in, at most [`TURNS`] times while it keeps coming: the program writing it
/// runs beside Hermes, and one chunk downstream costs as much as several reads.
async fn gather(reader: Option<&mut Reader>, first: &[u8]) -> Bytes {
    let Some(reader) = reader.filter(|_| first.len() == READ) else {
        return Bytes::copy_from_slice(first);
    };
    let mut chunk = BytesMut::with_capacity(CHUNK);
    chunk.extend_from_slice(first);
    let mut turns = 0;
    while chunk.len() + READ <= CHUNK {
        let start = chunk.len();
        chunk.resize(start + READ, 0);
        match reader.read_now(&mut chunk[start..]) {
            Ok(n) if n > 0 => chunk.truncate(start + n),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock && turns < TURNS => {
                chunk.truncate(start);
                turns += 1;
                tokio::task::yield_now().await;
            }
            // Nothing more now, its end, or an error the next read reports.
            _ => {
                chunk.truncate(start);
                break;
            }
        }
    }
    chunk.freeze()
}

/// Turns of the runtime bulk output gets to fill a chunk.
const TURNS: u32 = 2;

/// Reads into `buf` from `reader`, or waits forever when there is none.
async fn read_some(reader: &mut Option<Reader>, buf: &mut [u8]) -> io::Result<usize> {
    match reader {
        Some(reader) => reader.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The program's input: written to the taken terminal or stdin; its end closes
/// Hermes's copy and sends the channel's EOF, so that sshd closes its own copy too
/// (the program then reads the end of its input, as with sshd alone).
pub(crate) struct TakenBoxInput {
    input: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    eof: Pin<Box<dyn AsyncWrite + Send>>,
}

impl TakenBoxInput {
    pub(crate) fn new(
        input: Option<Box<dyn AsyncWrite + Send + Unpin>>,
        write: &ChannelWriteHalf<Msg>,
    ) -> Self {
        TakenBoxInput {
            input,
            eof: Box::pin(write.make_writer()),
        }
    }
}

impl AsyncWrite for TakenBoxInput {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.input.as_mut() {
            Some(input) => Pin::new(input).poll_write(cx, data),
            // The program ended before its input was taken: sshd drops such input.
            None => Poll::Ready(Ok(data.len())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.input.as_mut() {
            Some(input) => Pin::new(input).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(input) = self.input.as_mut() {
            std::task::ready!(Pin::new(input).poll_shutdown(cx))?;
            self.input = None;
        }
        self.eof.as_mut().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use tokio::io::{AsyncRead, ReadBuf};

    use super::*;

    /// Pieces ready to be read, then nothing (WouldBlock).
    struct Ready(VecDeque<Vec<u8>>);

    impl AsyncRead for Ready {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl TakenRead for Ready {
        fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some(piece) = self.0.pop_front() else {
                return Err(io::ErrorKind::WouldBlock.into());
            };
            buf[..piece.len()].copy_from_slice(&piece);
            Ok(piece.len())
        }
    }

    fn reader(pieces: &[usize]) -> Reader {
        Box::new(Ready(pieces.iter().map(|n| vec![b'x'; *n]).collect()))
    }

    #[tokio::test]
    async fn a_short_read_is_handed_on_alone() {
        let mut more = reader(&[READ]);
        let chunk = gather(Some(&mut more), b"echo\r\n").await;
        assert_eq!(&chunk[..], b"echo\r\n");
    }

    #[tokio::test]
    async fn a_full_read_takes_what_is_ready_up_to_a_chunk() {
        let mut more = reader(&[READ, READ, 100, READ]);
        let chunk = gather(Some(&mut more), &[b'x'; READ]).await;
        assert_eq!(chunk.len(), 4 * READ + 100);
        let mut flood = reader(&[READ; 20]);
        assert_eq!(gather(Some(&mut flood), &[b'x'; READ]).await.len(), CHUNK);
        let mut nothing = reader(&[]);
        assert_eq!(gather(Some(&mut nothing), &[b'x'; READ]).await.len(), READ);
    }
}
