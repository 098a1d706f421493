//! An accepted password waits for the box's own sshd to accept it too, within a
//! bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use tokio::sync::watch;

use super::*;
use crate::box_sshd::{BoxConnecting, BoxLogin, BoxSession, BoxSshd, BoxSshdError};
use crate::session::login_ready::BOX_LOGIN_WAIT;

/// A box sshd whose password check takes until the test opens `gate`.
struct GatedSshd {
    gate: watch::Sender<bool>,
    checks: Arc<AtomicU32>,
}

struct GatedConnection {
    gate: watch::Receiver<bool>,
    checks: Arc<AtomicU32>,
}

#[async_trait]
impl BoxSshd for GatedSshd {
    async fn connect(
        &self,
        _container_id: &str,
        _source: SocketAddr,
    ) -> Result<Box<dyn BoxConnecting>, BoxSshdError> {
        Ok(Box::new(GatedConnection {
            gate: self.gate.subscribe(),
            checks: Arc::clone(&self.checks),
        }))
    }
}

#[async_trait]
impl BoxConnecting for GatedConnection {
    async fn authenticate(
        mut self: Box<Self>,
        login: &BoxLogin,
    ) -> Result<Arc<dyn BoxSession>, BoxSshdError> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        let _ = self.gate.wait_for(|open| *open).await;
        // What comes after the check is not this test's: the channels fail.
        Err(BoxSshdError::Refused(login.account.clone()))
    }
}

/// A rig whose sessions go through `GatedSshd`; returns its gate and check count.
fn gated_rig() -> (Rig, watch::Sender<bool>, Arc<AtomicU32>) {
    let rig = rig(TestLimits::default());
    let gate = watch::channel(false).0;
    let checks = Arc::new(AtomicU32::new(0));
    rig.services.set_box_sshd(Arc::new(GatedSshd {
        gate: gate.clone(),
        checks: Arc::clone(&checks),
    }));
    (rig, gate, checks)
}

/// The box's account is set by `chpasswd` in the box (the fake engine edits no
/// file from the host): lets it succeed.
async fn account_set(rig: &Rig) {
    let chpasswd = within(SOON, "setting the box's account", rig.sandbox.process(0)).await;
    chpasswd.exit(Some(0));
}

/// A session logging in with [`crate::testing::LOGIN`] in a task: when it began,
/// and the task (the session, whether it was accepted, when it was answered).
fn log_in(
    rig: &Rig,
) -> (
    Instant,
    tokio::task::JoinHandle<(FakeSession, bool, Instant)>,
) {
    let session = rig.connect();
    let began = Instant::now();
    let login = tokio::spawn(async move {
        let accepted = session.login().await;
        (session, accepted, Instant::now())
    });
    (began, login)
}

#[tokio::test(start_paused = true)]
async fn an_accepted_password_is_answered_once_the_boxs_sshd_accepted_it() {
    let (rig, gate, checks) = gated_rig();
    let (began, login) = log_in(&rig);
    account_set(&rig).await;
    within(SOON, "the box's check", async {
        while checks.load(Ordering::SeqCst) == 0 {
            settle().await;
        }
    })
    .await;
    sleep(Duration::from_millis(500)).await;
    assert!(!login.is_finished(), "answered before the box's sshd did");
    let opened = Instant::now();
    gate.send_replace(true);
    let (session, accepted, answered) = within(SOON, "the answer", login)
        .await
        .expect("the login task");
    assert!(accepted);
    assert!(answered >= opened && answered - opened < Duration::from_millis(50));
    assert!(answered - began < BOX_LOGIN_WAIT);
    session.finish();
    rig.finalized().await;
    nothing_leaked(&rig);
}

#[tokio::test(start_paused = true)]
async fn a_box_sshd_that_does_not_answer_holds_the_accept_no_longer_than_the_bound() {
    let (rig, gate, checks) = gated_rig();
    let (began, login) = log_in(&rig);
    account_set(&rig).await;
    let (session, accepted, answered) = within(SOON, "the answer", login)
        .await
        .expect("the login task");
    assert!(accepted);
    assert_eq!(checks.load(Ordering::SeqCst), 1, "the box's sshd was asked");
    let waited = answered - began;
    assert!(
        waited >= BOX_LOGIN_WAIT && waited < BOX_LOGIN_WAIT + Duration::from_millis(50),
        "answered after {waited:?}"
    );
    // The box's sshd answers in the end (the adapter bounds its wait too).
    gate.send_replace(true);
    session.finish();
    rig.finalized().await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_password_does_not_wait_for_any_box() {
    let (rig, _gate, checks) = gated_rig();
    let session = rig.connect();
    let began = Instant::now();
    assert!(!session.login_as(("root", "wrong")).await);
    assert!(began.elapsed() < Duration::from_millis(50) + failure_delay(&rig));
    assert_eq!(rig.sandbox.lease_requests(), 0);
    assert_eq!(checks.load(Ordering::SeqCst), 0);
    session.finish();
    rig.finalized().await;
}

/// The rig's delay before a failed password's answer.
fn failure_delay(rig: &Rig) -> Duration {
    rig.services
        .timing
        .failure_delay("root", crate::auth::FailedMethod::Password)
}
