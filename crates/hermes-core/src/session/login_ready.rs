//! An accepted password is answered once the box's own sshd has accepted it too. sshd
//! answers a right password only after PAM has checked it; answering at once would
//! give a honeypot's tell (a success faster than any hash), and the login to the box
//! would then fall between the client's success and its prompt, where sshd only
//! opens the session. The wait is bounded: a box that is slow to come (a pool run
//! dry, a stopped box started again) leaves the rest of its wait after the answer, as
//! before.

use std::time::Duration;

use tokio::sync::watch;

use super::Connection;

/// Longest an accepted password waits for the box's sshd before it is answered: about
/// what a wrong one waits for its answer under Debian's PAM (`pam_faildelay`, 2 s),
/// so a right password is never answered much later than a wrong one.
pub const BOX_LOGIN_WAIT: Duration = Duration::from_secs(2);

/// Whether the session's login to its box has settled (made, failed, or not to be
/// made), shared by the connection and the tasks that get it there.
pub(super) struct LoginReady(watch::Sender<bool>);

impl Default for LoginReady {
    fn default() -> Self {
        LoginReady(watch::channel(false).0)
    }
}

impl LoginReady {
    /// A guard that settles the login when dropped: whatever path the lease and the
    /// login take, and wherever they end, dropping it is the one thing that must
    /// happen.
    pub(super) fn settles(&self) -> Settles {
        Settles(self.0.clone())
    }

    /// Waits until the login has settled, for at most `limit`.
    pub(super) async fn wait(&self, limit: Duration) {
        let mut settled = self.0.subscribe();
        let _ = tokio::time::timeout(limit, settled.wait_for(|settled| *settled)).await;
    }
}

/// Settles a [`LoginReady`] when dropped.
pub(super) struct Settles(watch::Sender<bool>);

impl Drop for Settles {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

impl Connection {
    /// Before an accepted password is answered: waits (bounded) until the session's
    /// login to its box's sshd is made, when sessions go through the box's sshd.
    pub(super) async fn box_login_settled(&self) {
        if self.services.uses_box_sshd() {
            self.login_ready.wait(BOX_LOGIN_WAIT).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_when_the_guard_is_dropped() {
        let ready = LoginReady::default();
        let guard = ready.settles();
        let began = tokio::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(guard);
        });
        ready.wait(BOX_LOGIN_WAIT).await;
        assert_eq!(began.elapsed(), Duration::from_millis(300));
        // Settled stays settled.
        ready.wait(BOX_LOGIN_WAIT).await;
        assert_eq!(began.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_bounded_while_the_guard_lives() {
        let ready = LoginReady::default();
        let _guard = ready.settles();
        let began = tokio::time::Instant::now();
        ready.wait(BOX_LOGIN_WAIT).await;
        assert_eq!(began.elapsed(), BOX_LOGIN_WAIT);
    }
}
