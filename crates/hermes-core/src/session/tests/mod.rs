//! The session's logic against fakes of the engine and the SSH client, on tokio's
//! paused clock: timeouts, limits, leases, engine failures at each stage, and what the
//! client is told.

use std::time::Duration;

use tokio::time::{Instant, sleep, sleep_until};

use super::messages::end_message;
use crate::events::EventId;
use crate::record::EndReason;
use crate::sandbox::{Lease, SandboxError};
use crate::testing::{
    ChannelDriver, ChannelRequest, ClientOp, FakeProcess, FakeSession, OTHER_LOGIN, Rig, Stage,
    TestLimits, config, settle, within,
};

mod box_login;
mod failures;
mod forwards;
mod leases;
mod limits;
mod linger;
mod stages;

/// Long enough for anything the session does at once; short against every limit.
const SOON: Duration = Duration::from_secs(5);

fn rig(limits: TestLimits) -> Rig {
    Rig::new(config(&limits))
}

fn end_reason(session: &FakeSession) -> EndReason {
    session.conn.state().metadata.end_reason
}

/// The stage's message as a terminal shows it.
fn told(reason: EndReason) -> String {
    end_message(
        reason,
        "root",
        &crate::config::PersonaConfig::default().hostname,
    )
}

/// Logs in and starts a shell on a terminal; returns its channel and process.
async fn shell(rig: &Rig, session: &FakeSession) -> (ChannelDriver, FakeProcess) {
    assert!(session.login().await, "root/root logs in");
    let channel = session.open_channel().expect("a first channel is accepted");
    channel.terminal_shell();
    let index = rig.sandbox.spawned().len();
    let process = within(SOON, "the shell's start", rig.sandbox.process(index)).await;
    (channel, process)
}

/// The client is disconnected by the core, soon.
async fn disconnected(session: &FakeSession) {
    within(SOON, "the disconnect", session.client.wait_disconnected()).await;
    assert_eq!(session.client.disconnects(), 1);
}

/// Waits until the client was told the channel closed.
async fn channel_closed(channel: &ChannelDriver) {
    within(SOON, "the channel's close", async {
        while channel.client.closes() == 0 {
            settle().await;
        }
    })
    .await;
}

/// The client's side goes away (channel, then connection, as the SSH adapter does),
/// and the session's end runs to completion.
async fn leave(rig: &Rig, session: &FakeSession, channel: ChannelDriver) {
    within(SOON, "the channel's close", channel.close()).await;
    session.finish();
    rig.finalized().await;
}

/// Every lease handed out was given back exactly once, and announced once.
fn nothing_leaked(rig: &Rig) {
    let mut leased = rig.sandbox.leased();
    let mut released = rig.sandbox.released();
    leased.sort_by(|a, b| a.container_id.cmp(&b.container_id));
    leased.dedup();
    released.sort_by(|a, b| a.container_id.cmp(&b.container_id));
    let ids = |leases: &[Lease]| -> Vec<String> {
        leases.iter().map(|l| l.container_id.clone()).collect()
    };
    assert_eq!(ids(&released), ids(&leased), "each container released once");
    assert_eq!(
        rig.events.fields(EventId::ContainerRelease, "container_id"),
        ids(&rig.sandbox.released()),
        "one hermes.container.release per release"
    );
}
