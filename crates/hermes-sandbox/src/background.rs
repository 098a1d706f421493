//! Threads for what Hermes reads of boxes behind the sessions' backs (capture passes'
//! walks and file reads, disk checks, deleted-file scans). They run at a lower CPU
//! priority than the threads that carry keystrokes: when the cores are short (a
//! burst of commands from many sessions at once), a walk of a box's layer waits for
//! the relay instead of sharing the cores with it.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock, mpsc};

/// Threads: a pass may block on a large file's read; the others keep moving.
const THREADS: usize = 4;

/// Work the background threads lost: it panicked.
#[derive(Debug, thiserror::Error)]
#[error("background work panicked")]
pub(crate) struct Lost;

type Job = Box<dyn FnOnce() + Send>;

/// Where jobs are queued; None when no thread could be started.
fn queue() -> Option<&'static Mutex<mpsc::Sender<Job>>> {
    static QUEUE: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (sender, receiver) = mpsc::channel::<Job>();
            let receiver = Arc::new(Mutex::new(receiver));
            let started = (0..THREADS)
                .filter(|n| {
                    let receiver = Arc::clone(&receiver);
                    std::thread::Builder::new()
                        .name(format!("hermes-bg-{n}"))
                        .spawn(move || serve(&receiver))
                        .is_ok()
                })
                .count();
            (started > 0).then(|| Mutex::new(sender))
        })
        .as_ref()
}

fn serve(receiver: &Mutex<mpsc::Receiver<Job>>) {
    // Lowering one's own priority needs no privilege; if refused, the work still runs.
    // A new thread starts at the nice value of the thread that made it.
    let _ = hermes_core::priority::set_own_nice(hermes_core::priority::background_nice());
    loop {
        let job = match receiver.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        match job {
            // A panicking job loses its own answer, not the thread.
            Ok(job) => {
                let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
            }
            Err(_) => return,
        }
    }
}

/// Runs `work` on a background thread (on tokio's blocking pool if none could be
/// started) and waits for its answer.
pub(crate) async fn run<F, T>(work: F) -> Result<T, Lost>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (answer, answered) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = answer.send(work());
    });
    let queued = match queue() {
        Some(queue) => match queue.lock() {
            Ok(sender) => sender.send(job).map_err(|unsent| unsent.0),
            Err(_) => Err(job),
        },
        None => Err(job),
    };
    if let Err(job) = queued {
        drop(tokio::task::spawn_blocking(job));
    }
    answered.await.map_err(|_| Lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_core::priority::{BACKGROUND_NICER_BY, own_nice};

    #[tokio::test]
    async fn work_runs_at_a_lower_priority_and_a_panic_loses_only_its_own_answer() {
        let ours = own_nice();
        let nice = run(own_nice).await.expect("answered");
        assert_eq!(nice, ours.saturating_add(BACKGROUND_NICER_BY).min(19));
        let lost = run(|| -> u32 { panic!("a walk that panics") }).await;
        assert!(lost.is_err());
        // The threads still serve.
        let answers =
            futures_util::future::join_all((0..3 * THREADS as u32).map(|n| run(move || n * 2)))
                .await;
        let answers: Vec<u32> = answers.into_iter().map(|a| a.expect("answered")).collect();
        assert_eq!(
            answers,
            (0..3 * THREADS as u32).map(|n| n * 2).collect::<Vec<_>>()
        );
    }
}
