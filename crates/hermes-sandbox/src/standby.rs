//! A standby process waiting on its terminal in a ready container (see
//! [`hermes_core::sandbox::StandbySpec`]): started while the container sits in the
//! pool, handed a session's parameters at login, or told to exit when the session
//! starts something else.

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use hermes_core::sandbox::{IoPath, Process};

use crate::exec::{ExecControl, ResizeTurns, TtyOutput};
use crate::hijack::ExecStream;

/// How long an unused standby gets to exit before the session's own process starts.
const CANCEL_WAIT: Duration = Duration::from_millis(500);

pub(crate) struct Standby {
    exec_id: String,
    reader: ReadHalf<ExecStream>,
    writer: WriteHalf<ExecStream>,
}

impl Standby {
    pub(crate) fn new(exec_id: String, stream: ExecStream) -> Standby {
        let (reader, writer) = tokio::io::split(stream);
        Standby {
            exec_id,
            reader,
            writer,
        }
    }

    /// Waits until it has printed exactly `ready` (its terminal is then quiet): a
    /// line written earlier would be echoed back to the client. False when it printed
    /// something else, ended, or took longer than `timeout`.
    pub(crate) async fn wait_ready(&mut self, ready: &[u8], timeout: Duration) -> bool {
        let mut seen = Vec::with_capacity(ready.len());
        let read = tokio::time::timeout(timeout, async {
            let mut byte = [0u8; 1];
            while seen.len() < ready.len() {
                match self.reader.read(&mut byte).await {
                    Ok(1) => seen.push(byte[0]),
                    _ => return false,
                }
            }
            true
        })
        .await;
        matches!(read, Ok(true)) && seen == ready
    }

    /// Still waiting: its stream has neither ended (the process or its container is
    /// gone) nor carried output (a standby prints nothing). Never blocks.
    pub(crate) fn is_waiting(&mut self) -> bool {
        let mut probe = [0u8; 1];
        self.reader.read(&mut probe).now_or_never().is_none()
    }

    /// Hands it the session: writes `input`, and returns the process it becomes.
    /// None when it is gone or the write fails.
    pub(crate) async fn take_over(
        mut self,
        input: &[u8],
        docker: &Docker,
        container_id: &str,
        resizes: &Arc<ResizeTurns>,
    ) -> Option<Process> {
        if !self.is_waiting() {
            return None;
        }
        self.writer.write_all(input).await.ok()?;
        self.writer.flush().await.ok()?;
        Some(Process {
            output: Box::new(TtyOutput::new(self.reader)),
            input: Box::new(self.writer),
            control: Box::new(ExecControl {
                docker: docker.clone(),
                exec_id: self.exec_id,
                container_id: container_id.to_owned(),
                resizes: Arc::clone(resizes),
            }),
            path: IoPath::Engine,
        })
    }

    /// Makes it exit (`cancel` is its input for that) and waits until its stream
    /// ends, so nothing started after this can see it.
    pub(crate) async fn cancel(mut self, cancel: &[u8]) {
        if self.writer.write_all(cancel).await.is_err() {
            return;
        }
        let _ = self.writer.flush().await;
        let mut sink = [0u8; 256];
        let _ = tokio::time::timeout(CANCEL_WAIT, async {
            while matches!(self.reader.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}
