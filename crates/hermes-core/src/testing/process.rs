//! A process started by the [`FakeSandbox`](super::FakeSandbox): its output is what
//! the test feeds it, its exit is when the test says, its input is kept for the test
//! to read.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

use super::sandbox::{Failures, Stage, failure};
use crate::sandbox::{
    IoPath, OutputChunk, Process, ProcessControl, ProcessOutput, ProcessSpec, SandboxError, TtySize,
};

/// What a process's control was asked, and answers.
struct ControlState {
    exit_status: Option<i64>,
    container_running: bool,
    resizes: Vec<TtySize>,
    signals: Vec<String>,
}

/// The test's handle on a started process: feed its output, end it, read its input.
#[derive(Clone)]
pub struct FakeProcess {
    output: Arc<Mutex<Option<mpsc::UnboundedSender<io::Result<OutputChunk>>>>>,
    input: Arc<Mutex<InputState>>,
    control: Arc<Mutex<ControlState>>,
    failures: Failures,
    spec: ProcessSpec,
}

#[derive(Default)]
struct InputState {
    bytes: Vec<u8>,
    closed: bool,
}

impl FakeProcess {
    pub(super) fn start(failures: Failures, spec: ProcessSpec) -> (Process, FakeProcess) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let fake = FakeProcess {
            output: Arc::new(Mutex::new(Some(sender))),
            input: Arc::new(Mutex::new(InputState::default())),
            control: Arc::new(Mutex::new(ControlState {
                exit_status: None,
                container_running: true,
                resizes: Vec::new(),
                signals: Vec::new(),
            })),
            failures,
            spec,
        };
        let process = Process {
            output: Box::new(FakeOutput(receiver)),
            input: Box::new(FakeInput(Arc::clone(&fake.input))),
            control: Box::new(FakeControl {
                state: Arc::clone(&fake.control),
                failures: Arc::clone(&fake.failures),
            }),
            path: IoPath::Engine,
        };
        (process, fake)
    }

    fn control(&self) -> MutexGuard<'_, ControlState> {
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, chunk: io::Result<OutputChunk>) {
        if let Some(sender) = &*self.output.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = sender.send(chunk);
        }
    }

    /// The spec it was started with.
    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// The process writes `bytes` to stdout (or its terminal).
    pub fn stdout(&self, bytes: &[u8]) {
        self.send(Ok(OutputChunk::Stdout(Bytes::copy_from_slice(bytes))));
    }

    /// The process writes `bytes` to stderr.
    pub fn stderr(&self, bytes: &[u8]) {
        self.send(Ok(OutputChunk::Stderr(Bytes::copy_from_slice(bytes))));
    }

    /// The engine's stream breaks with `error`.
    pub fn break_stream(&self, error: &str) {
        self.send(Err(io::Error::other(error.to_owned())));
    }

    /// The process exits with `status` (None: the engine never learns it), after its
    /// output closes.
    pub fn exit(&self, status: Option<i64>) {
        self.control().exit_status = status;
        self.output.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Whether the container runs, as the process's control reports it.
    pub fn set_container_running(&self, running: bool) {
        self.control().container_running = running;
    }

    /// The client's input the process has read so far.
    pub fn input(&self) -> Vec<u8> {
        self.input
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .bytes
            .clone()
    }

    /// Whether its stdin was closed.
    pub fn input_closed(&self) -> bool {
        self.input.lock().unwrap_or_else(|p| p.into_inner()).closed
    }

    /// The terminal sizes it was given, in order.
    pub fn resizes(&self) -> Vec<TtySize> {
        self.control().resizes.clone()
    }

    /// The signals it was sent, in order.
    pub fn signals(&self) -> Vec<String> {
        self.control().signals.clone()
    }
}

struct FakeOutput(mpsc::UnboundedReceiver<io::Result<OutputChunk>>);

#[async_trait]
impl ProcessOutput for FakeOutput {
    async fn next_chunk(&mut self) -> io::Result<Option<OutputChunk>> {
        self.0.recv().await.transpose()
    }
}

struct FakeInput(Arc<Mutex<InputState>>);

impl AsyncWrite for FakeInput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut input = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if input.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        input.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        Poll::Ready(Ok(()))
    }
}

struct FakeControl {
    state: Arc<Mutex<ControlState>>,
    failures: Failures,
}

impl FakeControl {
    fn state(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failure(&self, stage: Stage) -> Result<(), SandboxError> {
        failure(&self.failures, stage)
    }
}

#[async_trait]
impl ProcessControl for FakeControl {
    async fn resize(&self, size: TtySize) -> Result<(), SandboxError> {
        self.state().resizes.push(size);
        self.failure(Stage::Resize)
    }

    async fn exit_status(&self) -> Result<Option<i64>, SandboxError> {
        self.failure(Stage::ExitStatus)?;
        Ok(self.state().exit_status)
    }

    async fn container_running(&self) -> Result<bool, SandboxError> {
        Ok(self.state().container_running)
    }

    async fn signal(&self, signal: &str) -> Result<bool, SandboxError> {
        self.failure(Stage::Signal)?;
        self.state().signals.push(signal.to_owned());
        Ok(true)
    }
}
