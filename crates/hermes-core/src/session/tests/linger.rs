//! Boxes that run on after their source's last session (`reuse.linger`): taken again
//! by the source, stopped when the time passes, at shutdown, or to make room.

use super::*;

const LINGER: Duration = Duration::from_secs(600);

fn lingering_rig(dir: &std::path::Path, freeze: bool) -> Rig {
    rig(TestLimits {
        reuse_state: Some(dir.join("containers.json")),
        linger: LINGER,
        freeze_lingering: freeze,
        ..TestLimits::default()
    })
}

/// The ids of the containers given back, in order.
fn released_ids(rig: &Rig) -> Vec<String> {
    rig.sandbox
        .released()
        .into_iter()
        .map(|lease| lease.container_id)
        .collect()
}

/// One visit of `src`: a shell, then the client leaves. Returns the box.
async fn visit(rig: &Rig, src: &str) -> String {
    let session = rig.connect_from(src);
    let (channel, _process) = shell(rig, &session).await;
    let id = rig.sandbox.spawned().last().expect("a process").0.clone();
    leave(rig, &session, channel).await;
    id
}

#[tokio::test(start_paused = true)]
async fn the_box_runs_on_for_the_linger_time_then_is_stopped_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = lingering_rig(dir.path(), false);
    let id = visit(&rig, "198.51.100.7:50000").await;
    assert!(rig.sandbox.released().is_empty(), "stopped at logout");
    assert_eq!(
        rig.events.fields(EventId::ContainerLinger, "container_id"),
        std::slice::from_ref(&id)
    );
    assert!(rig.sandbox.frozen().is_empty());
    sleep(LINGER - Duration::from_secs(1)).await;
    settle().await;
    assert!(rig.sandbox.released().is_empty(), "stopped before its time");
    sleep(Duration::from_secs(2)).await;
    settle().await;
    let released = released_ids(&rig);
    assert_eq!(released, [id]);
    nothing_leaked(&rig);
}

#[tokio::test(start_paused = true)]
async fn a_source_back_within_the_linger_gets_its_running_box_and_the_old_timer_stops_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = lingering_rig(dir.path(), true);
    let id = visit(&rig, "198.51.100.7:50000").await;
    assert_eq!(
        rig.sandbox.frozen(),
        std::slice::from_ref(&id),
        "frozen while it lingers"
    );
    sleep(LINGER / 2).await;

    let back = rig.connect_from("198.51.100.7:50001");
    let (channel, _process) = shell(&rig, &back).await;
    assert_eq!(rig.sandbox.spawned().last().expect("a process").0, id);
    assert_eq!(
        rig.sandbox.resumed(),
        std::slice::from_ref(&id),
        "checked, not replaced"
    );
    assert!(rig.sandbox.frozen().is_empty(), "thawed for its source");
    assert_eq!(rig.sandbox.lease_requests(), 1);
    assert_eq!(
        rig.events.fields(EventId::ContainerReuse, "source"),
        ["reused"]
    );
    // The first linger's time passes while the source is back: nothing stops.
    sleep(LINGER).await;
    settle().await;
    assert!(rig.sandbox.released().is_empty());

    leave(&rig, &back, channel).await;
    assert_eq!(rig.events.count(EventId::ContainerLinger), 2);
    sleep(LINGER + Duration::from_secs(1)).await;
    settle().await;
    let released = released_ids(&rig);
    assert_eq!(
        released,
        [id],
        "stopped once, at the end of the second linger"
    );
    assert_eq!(rig.events.count(EventId::ContainerRelease), 1);
    assert!(rig.sandbox.frozen().is_empty());
}

#[tokio::test(start_paused = true)]
async fn at_max_containers_a_login_stops_the_box_that_lingered_longest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = lingering_rig(dir.path(), false);
    rig.sandbox.set_capacity(2);
    let oldest = visit(&rig, "198.51.100.7:50000").await;
    sleep(Duration::from_secs(10)).await;
    let newer = visit(&rig, "198.51.100.8:50000").await;
    assert!(rig.sandbox.released().is_empty());

    // A third source: both places are taken by lingering boxes.
    let third = rig.connect_from("198.51.100.9:50000");
    let (channel, _process) = shell(&rig, &third).await;
    let released = released_ids(&rig);
    assert_eq!(
        released,
        std::slice::from_ref(&oldest),
        "the longest lingering goes first"
    );
    let got = rig.sandbox.spawned().last().expect("a process").0.clone();
    assert!(
        got != oldest && got != newer,
        "a new box for the new source"
    );
    leave(&rig, &third, channel).await;

    // The evicted box's own timer, later, stops nothing more.
    sleep(LINGER * 2).await;
    settle().await;
    nothing_leaked(&rig);
}

#[tokio::test(start_paused = true)]
async fn shutdown_cuts_the_linger_short_and_waits_for_the_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = lingering_rig(dir.path(), true);
    let id = visit(&rig, "198.51.100.7:50000").await;
    assert!(rig.sandbox.released().is_empty());
    rig.shut_down();
    let left = within(
        SOON,
        "shutdown's wait",
        rig.services.wait_finalized(Duration::from_secs(60)),
    )
    .await;
    assert_eq!(left, 0);
    let released = released_ids(&rig);
    assert_eq!(released, std::slice::from_ref(&id));
    assert_eq!(rig.sandbox.thawed(), [id], "thawed before its stop");
    nothing_leaked(&rig);
}

#[tokio::test(start_paused = true)]
async fn a_session_that_ends_at_shutdown_leaves_nothing_lingering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = lingering_rig(dir.path(), true);
    let session = rig.connect_from("198.51.100.7:50000");
    let (channel, _process) = shell(&rig, &session).await;
    rig.shut_down();
    leave(&rig, &session, channel).await;
    assert_eq!(rig.events.count(EventId::ContainerLinger), 0);
    assert_eq!(rig.sandbox.released().len(), 1, "stopped at once");
    assert!(rig.sandbox.frozen().is_empty(), "never frozen");
    nothing_leaked(&rig);
}

#[tokio::test(start_paused = true)]
async fn only_max_containers_stops_a_lingering_box_for_a_new_login() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = lingering_rig(dir.path(), false);
    visit(&rig, "198.51.100.7:50000").await;
    // The engine refuses for another reason (LXCFS missing, say): the lingering box
    // is no help, and stays.
    rig.sandbox.fail(
        Stage::Lease,
        SandboxError::Unavailable("LXCFS is not mounted".into()),
    );
    let other = rig.connect_from("198.51.100.8:50000");
    assert!(other.login().await);
    let channel = other.open_channel().expect("channel");
    channel.terminal_shell();
    disconnected(&other).await;
    other.finish();
    rig.finalized().await;
    assert!(rig.sandbox.released().is_empty(), "the lingering box stays");
}

#[tokio::test(start_paused = true)]
async fn a_box_gone_while_it_lingered_is_replaced_at_the_next_login() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = lingering_rig(dir.path(), false);
    let id = visit(&rig, "198.51.100.7:50000").await;
    rig.sandbox
        .fail(Stage::Resume, SandboxError::ContainerGone(id.clone()));
    let back = rig.connect_from("198.51.100.7:50001");
    let (channel, _process) = shell(&rig, &back).await;
    let got = rig.sandbox.spawned().last().expect("a process").0.clone();
    assert_ne!(got, id, "a new box");
    assert_eq!(rig.sandbox.lease_requests(), 2);
    rig.sandbox.heal(Stage::Resume);
    leave(&rig, &back, channel).await;
    // The gone box was given back at once (the engine still counted it); its timer
    // finds nothing more to stop; the new box lingers, then stops.
    sleep(LINGER + Duration::from_secs(1)).await;
    settle().await;
    let released = released_ids(&rig);
    assert_eq!(released, [id, got]);
}

#[tokio::test(start_paused = true)]
async fn a_login_that_leaves_before_using_the_lingering_box_leaves_it_to_the_session_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = lingering_rig(dir.path(), false);
    visit(&rig, "198.51.100.7:50000").await;
    let first_session = rig.events.fields(EventId::ContainerLinger, "session");
    // The source comes back, but is gone before its box is handed over.
    rig.sandbox.hold(Stage::Resume);
    let gone = rig.connect_from("198.51.100.7:50001");
    assert!(gone.login().await);
    settle().await;
    gone.finish();
    rig.finalized().await;
    rig.sandbox.let_through(Stage::Resume);
    settle().await;
    assert_eq!(rig.events.count(EventId::ContainerLinger), 2);
    assert!(rig.sandbox.released().is_empty());
    // When it stops, the session that used it last captures it and is named.
    sleep(LINGER + Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(rig.sandbox.released().len(), 1);
    assert_eq!(
        rig.events.fields(EventId::ContainerRelease, "session"),
        first_session
    );
}
