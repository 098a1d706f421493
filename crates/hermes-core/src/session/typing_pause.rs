//! Waiting for a pause in a session's typing: work that walks the box or rewrites a
//! file after a command (capture passes, the metadata rewrite) is held until then,
//! so that it is not in the way of the keystrokes' echo of sessions typing at once.

use std::time::Duration;

use tokio::time::Instant;

/// A pause in the session's input is this long...
const INPUT_PAUSE: Duration = Duration::from_millis(300);
/// ...and is not waited for longer than this: a session that never pauses still
/// gets its work done.
pub(super) const MAX_POSTPONE: Duration = Duration::from_secs(3);

/// Returns once no input came for [`INPUT_PAUSE`] (`last_input` says when the
/// last did), or after `longest`.
pub(super) async fn until_input_pauses(last_input: impl Fn() -> Instant, longest: Duration) {
    let deadline = Instant::now() + longest;
    loop {
        let paused_at = last_input() + INPUT_PAUSE;
        if paused_at <= Instant::now() {
            return;
        }
        if paused_at >= deadline {
            tokio::time::sleep_until(deadline).await;
            return;
        }
        tokio::time::sleep_until(paused_at).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pass_waits_for_typing_to_pause() {
        let started = Instant::now();
        let last_input = Mutex::new(started);
        let typing = async {
            // A key every 50 ms for a second, then nothing.
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                *last_input.lock().unwrap() = Instant::now();
            }
        };
        let waiting = until_input_pauses(|| *last_input.lock().unwrap(), MAX_POSTPONE);
        let ((), ()) = tokio::join!(typing, waiting);
        assert_eq!(started.elapsed(), Duration::from_millis(1000) + INPUT_PAUSE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_that_never_pauses_still_gets_its_pass() {
        let started = Instant::now();
        until_input_pauses(Instant::now, MAX_POSTPONE).await;
        assert_eq!(started.elapsed(), MAX_POSTPONE);
        let quiet_since = Instant::now() - INPUT_PAUSE;
        let started = Instant::now();
        until_input_pauses(|| quiet_since, MAX_POSTPONE).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
