//! A process started with `docker exec`: its output (raw for a TTY, demultiplexed
//! otherwise), its stdin, and its control calls.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bollard::Docker;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use hermes_core::sandbox::{
    MIN_RESIZE_INTERVAL, OutputChunk, ProcessControl, ProcessOutput, SandboxError, TtySize,
};

/// Bytes read from the engine per call for a terminal (a buffer this size stays with
/// each session).
const READ_SIZE: usize = 32 * 1024;
/// Bytes read per call for a command without a terminal: bulk output (scp, sftp) moves
/// in fewer, larger pieces.
const MUX_READ_SIZE: usize = 128 * 1024;

/// Output of a TTY exec: the bytes exactly as the terminal produced them.
pub(crate) struct TtyOutput<R> {
    reader: R,
    buffer: BytesMut,
}

impl<R> TtyOutput<R> {
    pub(crate) fn new(reader: R) -> Self {
        TtyOutput {
            reader,
            buffer: BytesMut::with_capacity(READ_SIZE),
        }
    }
}

#[async_trait]
impl<R: AsyncRead + Send + Unpin> ProcessOutput for TtyOutput<R> {
    async fn next_chunk(&mut self) -> io::Result<Option<OutputChunk>> {
        self.buffer.reserve(READ_SIZE);
        let n = self.reader.read_buf(&mut self.buffer).await?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(OutputChunk::Stdout(self.buffer.split().freeze())))
    }
}

/// Output of a non-TTY exec: Docker's multiplexed stream, 8-byte frame headers
/// (`[stream, 0, 0, 0, len_be32]`) followed by payload, split back into stdout and stderr.
pub(crate) struct MuxOutput<R> {
    reader: R,
    buffer: BytesMut,
    /// Stream (1 stdout, 2 stderr) and payload bytes left in the current frame.
    frame: Option<(u8, usize)>,
}

impl<R> MuxOutput<R> {
    pub(crate) fn new(reader: R) -> Self {
        MuxOutput {
            reader,
            buffer: BytesMut::with_capacity(MUX_READ_SIZE),
            frame: None,
        }
    }
}

impl<R: AsyncRead + Send + Unpin> MuxOutput<R> {
    /// Takes the next piece of payload out of the buffer, if there is one.
    fn take_chunk(&mut self) -> io::Result<Option<OutputChunk>> {
        loop {
            match self.frame {
                None => {
                    if self.buffer.len() < 8 {
                        return Ok(None);
                    }
                    let stream = self.buffer[0];
                    let len = u32::from_be_bytes([
                        self.buffer[4],
                        self.buffer[5],
                        self.buffer[6],
                        self.buffer[7],
                    ]) as usize;
                    if stream > 2 || self.buffer[1..4] != [0, 0, 0] {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("bad multiplexed stream header {:02x?}", &self.buffer[..8]),
                        ));
                    }
                    self.buffer.advance(8);
                    if len > 0 {
                        self.frame = Some((stream, len));
                    }
                }
                Some((stream, left)) => {
                    if self.buffer.is_empty() {
                        return Ok(None);
                    }
                    let take = left.min(self.buffer.len());
                    let payload = self.buffer.split_to(take).freeze();
                    self.frame = (left > take).then_some((stream, left - take));
                    return Ok(Some(if stream == 2 {
                        OutputChunk::Stderr(payload)
                    } else {
                        OutputChunk::Stdout(payload)
                    }));
                }
            }
        }
    }
}

#[async_trait]
impl<R: AsyncRead + Send + Unpin> ProcessOutput for MuxOutput<R> {
    async fn next_chunk(&mut self) -> io::Result<Option<OutputChunk>> {
        loop {
            if let Some(chunk) = self.take_chunk()? {
                return Ok(Some(chunk));
            }
            self.buffer.reserve(MUX_READ_SIZE);
            if self.reader.read_buf(&mut self.buffer).await? == 0 {
                if self.frame.is_some() || !self.buffer.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "exec stream ended inside a frame",
                    ));
                }
                return Ok(None);
            }
        }
    }
}

/// Output of a process whose stdout comes through its own pipe ([`crate::direct`])
/// and whose stderr still comes through the engine's multiplexed stream; ends when
/// both have ended.
pub(crate) struct DirectOutput<R> {
    stdout: Option<tokio::net::unix::pipe::Receiver>,
    stderr: Option<MuxOutput<R>>,
    buffer: BytesMut,
}

impl<R> DirectOutput<R> {
    pub(crate) fn new(stdout: tokio::net::unix::pipe::Receiver, stderr: R) -> Self {
        DirectOutput {
            stdout: Some(stdout),
            stderr: Some(MuxOutput::new(stderr)),
            buffer: BytesMut::with_capacity(MUX_READ_SIZE),
        }
    }
}

#[async_trait]
impl<R: AsyncRead + Send + Unpin> ProcessOutput for DirectOutput<R> {
    async fn next_chunk(&mut self) -> io::Result<Option<OutputChunk>> {
        loop {
            match (&mut self.stdout, &mut self.stderr) {
                (None, None) => return Ok(None),
                (Some(stdout), None) => {
                    self.buffer.reserve(MUX_READ_SIZE);
                    if stdout.read_buf(&mut self.buffer).await? == 0 {
                        self.stdout = None;
                        continue;
                    }
                    return Ok(Some(OutputChunk::Stdout(self.buffer.split().freeze())));
                }
                (None, Some(stderr)) => match stderr.next_chunk().await? {
                    Some(chunk) => return Ok(Some(chunk)),
                    None => self.stderr = None,
                },
                (Some(stdout), Some(stderr)) => {
                    self.buffer.reserve(MUX_READ_SIZE);
                    // Both reads are cancel-safe: what one has read stays buffered.
                    tokio::select! {
                        read = stdout.read_buf(&mut self.buffer) => {
                            if read? == 0 {
                                self.stdout = None;
                                continue;
                            }
                            return Ok(Some(OutputChunk::Stdout(self.buffer.split().freeze())));
                        }
                        chunk = stderr.next_chunk() => match chunk? {
                            Some(chunk) => return Ok(Some(chunk)),
                            None => self.stderr = None,
                        },
                    }
                }
            }
        }
    }
}

/// Resize and exit status of one exec, through the Docker API.
pub(crate) struct ExecControl {
    pub(crate) docker: Docker,
    pub(crate) exec_id: String,
    pub(crate) container_id: String,
    pub(crate) resizes: Arc<ResizeTurns>,
}

/// Spaces the resize calls of each container by [`MIN_RESIZE_INTERVAL`], whichever of
/// its terminals they are for.
#[derive(Default)]
pub(crate) struct ResizeTurns {
    next: Mutex<HashMap<String, Instant>>,
}

impl ResizeTurns {
    /// Waits for the container's next turn to resize.
    async fn wait(&self, container_id: &str) {
        let turn = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let turn = next.get(container_id).map_or(now, |at| (*at).max(now));
            next.insert(container_id.to_owned(), turn + MIN_RESIZE_INTERVAL);
            turn
        };
        tokio::time::sleep_until(turn).await;
    }

    /// Forgets a removed container.
    pub(crate) fn forget(&self, container_id: &str) {
        self.next
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(container_id);
    }
}

#[async_trait]
impl ProcessControl for ExecControl {
    async fn resize(&self, size: TtySize) -> Result<(), SandboxError> {
        self.resizes.wait(&self.container_id).await;
        resize_exec(&self.docker, &self.exec_id, size).await
    }

    async fn exit_status(&self) -> Result<Option<i64>, SandboxError> {
        let inspect = self
            .docker
            .inspect_exec(&self.exec_id)
            .await
            .map_err(crate::error::engine)?;
        if inspect.running.unwrap_or(false) {
            return Ok(None);
        }
        Ok(inspect.exit_code)
    }

    async fn container_running(&self) -> Result<bool, SandboxError> {
        match self
            .docker
            .inspect_container(&self.container_id, None)
            .await
        {
            Ok(inspect) => Ok(inspect.state.and_then(|s| s.running).unwrap_or(false)),
            Err(error) if crate::error::is_not_found(&error) => Ok(false),
            Err(error) => Err(crate::error::engine(error)),
        }
    }

    async fn signal(&self, signal: &str) -> Result<bool, SandboxError> {
        crate::signal::deliver(&self.docker, &self.container_id, &self.exec_id, signal).await
    }
}

pub(crate) async fn resize_exec(
    docker: &Docker,
    exec_id: &str,
    size: TtySize,
) -> Result<(), SandboxError> {
    let clamp = |v: u32| i32::try_from(v.min(u32::from(u16::MAX))).unwrap_or(i32::from(u16::MAX));
    let options = bollard::query_parameters::ResizeExecOptionsBuilder::default()
        .w(clamp(size.width))
        .h(clamp(size.height))
        .build();
    docker
        .resize_exec(exec_id, options)
        .await
        .map_err(crate::error::engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![stream, 0, 0, 0];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    async fn collect(input: Vec<u8>) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let mut output = MuxOutput::new(&input[..]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(chunk) = output.next_chunk().await? {
            match chunk {
                OutputChunk::Stdout(b) => out.extend_from_slice(&b),
                OutputChunk::Stderr(b) => err.extend_from_slice(&b),
            }
        }
        Ok((out, err))
    }

    #[tokio::test]
    async fn demultiplexes_stdout_and_stderr() {
        let mut input = frame(1, b"\x00\x01\x02binary");
        input.extend(frame(2, b"oops\n"));
        input.extend(frame(1, b""));
        input.extend(frame(1, b"more"));
        let (out, err) = collect(input).await.expect("valid stream");
        assert_eq!(out, b"\x00\x01\x02binarymore");
        assert_eq!(err, b"oops\n");
    }

    #[tokio::test]
    async fn large_frames_arrive_whole() {
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (out, _) = collect(frame(1, &payload)).await.expect("valid");
        assert_eq!(out, payload);
    }

    #[tokio::test]
    async fn garbage_and_truncation_are_errors() {
        assert!(
            collect(b"\x07\x00\x00\x00\x00\x00\x00\x01x".to_vec())
                .await
                .is_err()
        );
        let mut cut = frame(1, b"abcdef");
        cut.truncate(10);
        assert!(collect(cut).await.is_err());
    }

    #[tokio::test]
    async fn tty_output_passes_every_byte() {
        let input: Vec<u8> = vec![0, 1, 2, b'h', b'i'];
        let mut output = TtyOutput::new(&input[..]);
        let mut seen = Vec::new();
        while let Some(OutputChunk::Stdout(b)) = output.next_chunk().await.expect("read") {
            seen.extend_from_slice(&b);
        }
        assert_eq!(seen, input);
    }
}
