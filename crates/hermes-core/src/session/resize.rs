//! Terminal resizes coalesced: a client may send window-change requests as fast as
//! its link allows, and each one handed on is an engine call. The latest size wins,
//! and at most one resize per [`MIN_INTERVAL`] reaches the process; the channel never
//! waits for the engine.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ids::SessionId;
use crate::sandbox::{ProcessControl, TtySize};

/// The shortest time between two resizes of one terminal.
pub const MIN_INTERVAL: Duration = crate::sandbox::MIN_RESIZE_INTERVAL;

/// Hands a channel's terminal sizes to its process, coalesced. Dropping it stops the
/// task that does so.
pub(super) struct TerminalResizer {
    wanted: watch::Sender<TtySize>,
    task: JoinHandle<()>,
}

impl TerminalResizer {
    /// Starts resizing `control`'s terminal; `current` is the size it has now.
    pub(super) fn start(
        control: Arc<dyn ProcessControl>,
        current: TtySize,
        session: SessionId,
    ) -> Self {
        let (wanted, mut changes) = watch::channel(current);
        let task = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let size = *changes.borrow_and_update();
                if let Err(error) = control.resize(size).await {
                    tracing::warn!(target: "hermes::session", session_id = %session, %error, "terminal resize failed");
                }
                tokio::time::sleep(MIN_INTERVAL).await;
            }
        });
        TerminalResizer { wanted, task }
    }

    /// Asks for `size`; a size asked for while a resize is pending replaces it.
    pub(super) fn request(&self, size: TtySize) {
        self.wanted.send_if_modified(|wanted| {
            let changed = *wanted != size;
            *wanted = size;
            changed
        });
    }
}

impl Drop for TerminalResizer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::SandboxError;
    use async_trait::async_trait;
    use std::sync::Mutex;

    /// Remembers every resize it is asked for, each taking `latency`.
    struct Recorded {
        sizes: Mutex<Vec<TtySize>>,
        latency: Duration,
    }

    #[async_trait]
    impl ProcessControl for Recorded {
        async fn resize(&self, size: TtySize) -> Result<(), SandboxError> {
            tokio::time::sleep(self.latency).await;
            self.sizes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(size);
            Ok(())
        }
        async fn exit_status(&self) -> Result<Option<i64>, SandboxError> {
            Ok(None)
        }
        async fn container_running(&self) -> Result<bool, SandboxError> {
            Ok(true)
        }
        async fn signal(&self, _signal: &str) -> Result<bool, SandboxError> {
            Ok(false)
        }
    }

    fn size(width: u32) -> TtySize {
        TtySize { width, height: 24 }
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_sizes_becomes_a_few_resizes_ending_at_the_last_size() {
        let control = Arc::new(Recorded {
            sizes: Mutex::new(Vec::new()),
            latency: Duration::from_millis(5),
        });
        let resizer =
            TerminalResizer::start(control.clone(), TtySize::DEFAULT, SessionId::random());
        // 20,000 changes in 0.3 s, as a hostile client sends them.
        let started = tokio::time::Instant::now();
        for i in 0..20_000u32 {
            resizer.request(size(100 + i % 500));
            if i % 1000 == 999 {
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }
        resizer.request(size(1234));
        let flood = started.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let sizes = control
            .sizes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let bound = (flood.as_millis() / MIN_INTERVAL.as_millis()) as usize + 2;
        assert!(
            !sizes.is_empty() && sizes.len() <= bound,
            "{} resizes for a {flood:?} flood (at most {bound})",
            sizes.len()
        );
        assert_eq!(sizes.last(), Some(&size(1234)));
    }

    #[tokio::test(start_paused = true)]
    async fn one_change_is_applied_at_once_and_an_unchanged_size_not_at_all() {
        let control = Arc::new(Recorded {
            sizes: Mutex::new(Vec::new()),
            latency: Duration::ZERO,
        });
        let resizer =
            TerminalResizer::start(control.clone(), TtySize::DEFAULT, SessionId::random());
        resizer.request(TtySize::DEFAULT);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(
            control
                .sizes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
        );
        resizer.request(size(132));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            *control.sizes.lock().unwrap_or_else(|p| p.into_inner()),
            vec![size(132)]
        );
        drop(resizer);
    }
}
