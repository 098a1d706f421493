//! A channel's output pump: the process's output to the client and the recording
//! until the process exits or the session ends early, then the exit status or the
//! stage's message.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::recording::{SharedRecorder, finish_recording, with_recorder};
use super::{ClientChannel, Connection};
use crate::commands::CommandTracker;
use crate::record::EndReason;
use crate::sandbox::{OutputChunk, ProcessControl, ProcessOutput, SandboxError};

/// What the channel's input and output are read for (command lines), shared with it.
pub(super) type SharedTracker = Arc<std::sync::Mutex<Option<CommandTracker>>>;

pub(super) struct PumpContext {
    pub(super) conn: Arc<Connection>,
    pub(super) client: Arc<dyn ClientChannel>,
    pub(super) recorder: SharedRecorder,
    pub(super) tracker: SharedTracker,
    pub(super) control: Arc<dyn ProcessControl>,
    pub(super) output: Box<dyn ProcessOutput>,
    /// No terminal: stage messages go to stderr.
    pub(super) stderr_messages: bool,
    /// Held until the pump's last words are written (see `Connection::terminate`).
    pub(super) _telling: TaskTrackerToken,
}

enum PumpEnd {
    Exited,
    Terminated(EndReason),
    StreamError(std::io::Error),
    ClientGone,
}

/// Container output to the client until the process exits or the session ends.
pub(super) async fn pump_output(mut ctx: PumpContext) {
    let mut terminated = ctx.conn.terminated.subscribe();
    let end = loop {
        tokio::select! {
            biased;
            reason = async { terminated.wait_for(|t| t.is_some()).await.ok().and_then(|r| *r) } => {
                break PumpEnd::Terminated(reason.unwrap_or(EndReason::ClientClosed));
            }
            chunk = ctx.output.next_chunk() => match chunk {
                Ok(Some(OutputChunk::Stdout(bytes))) => {
                    with_recorder(&ctx.conn, &ctx.recorder, |rec| rec.output(&bytes));
                    if let Ok(mut tracker) = ctx.tracker.lock()
                        && let Some(tracker) = tracker.as_mut()
                    {
                        tracker.output(&bytes);
                    }
                    if ctx.client.data(bytes).await.is_err() {
                        break PumpEnd::ClientGone;
                    }
                }
                Ok(Some(OutputChunk::Stderr(bytes))) => {
                    with_recorder(&ctx.conn, &ctx.recorder, |rec| rec.output(&bytes));
                    if ctx.client.stderr(bytes).await.is_err() {
                        break PumpEnd::ClientGone;
                    }
                }
                Ok(None) => break PumpEnd::Exited,
                Err(error) => break PumpEnd::StreamError(error),
            },
        }
    };
    let teller = Teller {
        conn: &ctx.conn,
        client: ctx.client.as_ref(),
        recorder: &ctx.recorder,
        on_stderr: ctx.stderr_messages,
    };
    let broke = match end {
        PumpEnd::Exited => match wait_exit_status(ctx.control.as_ref()).await {
            Ok(status) if killed_with_its_container(ctx.control.as_ref(), status).await => {
                stream_broke(teller, "the container stopped").await;
                true
            }
            Ok(status) => {
                match status {
                    Some(code) => {
                        ctx.conn.update_metadata(|m| m.exit_status = Some(code));
                        let _ = ctx.client.exit_status(code).await;
                    }
                    None => {
                        tracing::warn!(target: "hermes::session", session_id = %ctx.conn.session_id(), "exit status unknown");
                    }
                }
                finish_recording(&ctx.conn, &ctx.recorder);
                let _ = ctx.client.eof().await;
                let _ = ctx.client.close().await;
                false
            }
            // The output ended because the engine went away, not the process.
            Err(error) => {
                stream_broke(teller, &error.to_string()).await;
                true
            }
        },
        PumpEnd::Terminated(reason) => {
            tell(teller, reason).await;
            finish_recording(&ctx.conn, &ctx.recorder);
            false
        }
        PumpEnd::StreamError(error) => {
            stream_broke(teller, &error.to_string()).await;
            true
        }
        PumpEnd::ClientGone => {
            finish_recording(&ctx.conn, &ctx.recorder);
            false
        }
    };
    if broke {
        let conn = Arc::clone(&ctx.conn);
        // Its message is written: its token goes before the session ends, which
        // waits for every pump's.
        drop(ctx);
        conn.terminate(EndReason::StreamError).await;
    }
}

/// The container's stream broke or its engine went away: tell the client and keep the
/// recording complete; the caller then ends the session.
async fn stream_broke(to: Teller<'_>, error: &str) {
    let conn = to.conn;
    tracing::error!(target: "hermes::session", session_id = %conn.session_id(), %error, "container stream broke");
    conn.emit_session_error("stream", error);
    tell(to, EndReason::StreamError).await;
    finish_recording(conn, to.recorder);
}

/// Where a stage message goes.
#[derive(Clone, Copy)]
pub(super) struct Teller<'a> {
    pub(super) conn: &'a Connection,
    pub(super) client: &'a dyn ClientChannel,
    pub(super) recorder: &'a SharedRecorder,
    pub(super) on_stderr: bool,
}

/// A process killed by a signal may have died with its whole container (killed, out
/// of memory); the engine needs a moment to notice the container is down.
async fn killed_with_its_container(control: &dyn ProcessControl, status: Option<u32>) -> bool {
    if status.is_some_and(|code| code < 128) {
        return false;
    }
    for _ in 0..10 {
        if matches!(control.container_running().await, Ok(false)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The engine may report the process as running for a moment after its output
/// closed; an engine that cannot be asked at all is an error.
pub(super) async fn wait_exit_status(
    control: &dyn ProcessControl,
) -> Result<Option<u32>, SandboxError> {
    for _ in 0..100 {
        match control.exit_status().await? {
            Some(code) => return Ok(Some(u32::try_from(code).unwrap_or(255))),
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    Ok(None)
}

/// Writes the stage's end message to the client (and the recording, when there is
/// one): on the terminal, or on stderr without one, where bash's messages go.
pub(super) async fn tell(to: Teller<'_>, reason: EndReason) {
    let mut message = to.conn.end_message(reason);
    if message.is_empty() {
        return;
    }
    if to.on_stderr {
        message = message.replace("\r\n", "\n");
    }
    with_recorder(to.conn, to.recorder, |rec| rec.output(message.as_bytes()));
    let bytes = Bytes::from(message);
    let _ = if to.on_stderr {
        to.client.stderr(bytes).await
    } else {
        to.client.data(bytes).await
    };
}
