//! The container's lease: one that comes late, one shared by a source's sessions or
//! started again for it, and the session's end run more than once.

use super::*;
use crate::record::Replace;

#[tokio::test(start_paused = true)]
async fn a_lease_that_arrives_after_the_client_left_is_released_and_starts_nothing() {
    let rig = rig(TestLimits::default());
    rig.sandbox.hold_leases();
    let session = rig.connect();
    assert!(session.login().await);
    settle().await;
    assert_eq!(rig.sandbox.lease_requests(), 1);
    session.finish();
    rig.finalized().await;
    assert_eq!(rig.events.count(EventId::SessionClosed), 1);
    assert!(rig.sandbox.released().is_empty(), "nothing to release yet");

    rig.sandbox.let_leases_through();
    settle().await;
    assert_eq!(rig.sandbox.leased().len(), 1);
    nothing_leaked(&rig);
    assert_eq!(rig.events.count(EventId::ContainerAllocate), 0);
    assert!(rig.sandbox.spawned().is_empty());
    assert_eq!(end_reason(&session), EndReason::ClientClosed);
}

#[tokio::test(start_paused = true)]
async fn with_reuse_a_late_lease_frees_the_machine_for_the_sources_next_login() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = rig(TestLimits {
        reuse_state: Some(dir.path().join("containers.json")),
        ..TestLimits::default()
    });
    rig.sandbox.hold_leases();
    let gone = rig.connect();
    assert!(gone.login().await);
    settle().await;
    gone.finish();
    rig.finalized().await;
    rig.sandbox.let_leases_through();
    settle().await;
    let first = rig.sandbox.leased();
    assert_eq!(first.len(), 1);
    nothing_leaked(&rig);

    // The same source comes back: its machine is started again, not joined as if a
    // session still ran there, and not replaced by a new one.
    let back = rig.connect();
    let (channel, _process) = shell(&rig, &back).await;
    assert_eq!(rig.sandbox.resumed(), [first[0].container_id.clone()]);
    assert_eq!(
        rig.events.fields(EventId::ContainerReuse, "source"),
        ["reused"]
    );
    assert_eq!(rig.sandbox.lease_requests(), 1);
    leave(&rig, &back, channel).await;
    assert_eq!(rig.sandbox.released().len(), 2, "stopped after each use");
}

#[tokio::test(start_paused = true)]
async fn two_sessions_of_one_source_share_its_machine_and_the_last_one_stops_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = rig(TestLimits {
        reuse_state: Some(dir.path().join("containers.json")),
        ..TestLimits::default()
    });
    let first = rig.connect_from("198.51.100.7:50000");
    let (first_channel, _p1) = shell(&rig, &first).await;
    let second = rig.connect_from("198.51.100.7:50001");
    let (second_channel, _p2) = shell(&rig, &second).await;
    assert_eq!(rig.sandbox.leased().len(), 1);
    assert_eq!(
        rig.events.fields(EventId::ContainerReuse, "source"),
        ["shared"]
    );
    let spawned = rig.sandbox.spawned();
    assert_eq!(spawned[0].0, spawned[1].0, "one container");

    leave(&rig, &first, first_channel).await;
    assert!(
        rig.sandbox.released().is_empty(),
        "the other session uses it"
    );
    leave(&rig, &second, second_channel).await;
    nothing_leaked(&rig);
}

#[tokio::test(start_paused = true)]
async fn a_login_racing_the_end_of_its_sources_last_session_never_gets_a_stopping_container() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = rig(TestLimits {
        reuse_state: Some(dir.path().join("containers.json")),
        ..TestLimits::default()
    });
    let first = rig.connect_from("198.51.100.7:50000");
    let (first_channel, _p1) = shell(&rig, &first).await;
    let container = rig.sandbox.leased()[0].container_id.clone();
    first_channel.close().await;
    // The end and the new login in the same instant.
    let second = rig.connect_from("198.51.100.7:50001");
    first.finish();
    assert!(second.login().await);
    let channel = second.open_channel().expect("channel");
    channel.terminal_shell();
    within(SOON, "the second shell", rig.sandbox.process(1)).await;
    rig.finalized().await;
    let released = rig.sandbox.released();
    let resumed = rig.sandbox.resumed();
    // Either the new session joined the running container (and it is not stopped),
    // or it waited for the stop and started it again.
    match released.len() {
        0 => assert!(resumed.is_empty(), "joined: {resumed:?}"),
        1 => assert_eq!(
            resumed,
            std::slice::from_ref(&container),
            "stopped, then resumed"
        ),
        n => panic!("{n} releases"),
    }
    leave(&rig, &second, channel).await;
    assert_eq!(
        rig.sandbox
            .released()
            .last()
            .map(|l| l.container_id.clone()),
        Some(container)
    );
}

#[tokio::test(start_paused = true)]
async fn finish_run_twice_closes_the_session_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = rig(TestLimits {
        recordings: Some(dir.path().to_owned()),
        ..TestLimits::default()
    });
    let session = rig.connect();
    let (channel, process) = shell(&rig, &session).await;
    process.stdout(b"bye\r\n");
    process.exit(Some(3));
    channel_closed(&channel).await;
    assert_eq!(
        channel.client.ops(),
        [
            ClientOp::Data("bye\r\n".into()),
            ClientOp::ExitStatus(3),
            ClientOp::Eof,
            ClientOp::Close
        ]
    );
    let metadata = session.conn.metadata_path().expect("recording is on");
    let journal = dir
        .path()
        .join(crate::record::JOURNAL_DIR)
        .join(format!("{}.open", session.conn.session_id()));
    assert!(journal.exists(), "journaled while open");

    leave(&rig, &session, channel).await;
    session.finish();
    drop(session.conn.finish_on_drop());
    rig.finalized().await;
    assert_eq!(rig.events.count(EventId::SessionClosed), 1);
    nothing_leaked(&rig);
    assert_eq!(rig.sandbox.released().len(), 1);
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&metadata).expect("metadata")).expect("json");
    assert_eq!(written["end_reason"], "exited");
    assert_eq!(written["exit_status"], 3);
    assert!(!journal.exists(), "the journal entry goes at the close");

    // A later finish writes nothing more.
    std::fs::write(&metadata, b"untouched").expect("write");
    session.finish();
    rig.finalized().await;
    assert_eq!(std::fs::read(&metadata).expect("metadata"), b"untouched");
    assert_eq!(rig.events.count(EventId::SessionClosed), 1);
}

/// A session with recordings on, in a shell (its process kept), and its metadata
/// file's path.
async fn recorded_shell() -> (
    tempfile::TempDir,
    Rig,
    FakeSession,
    ChannelDriver,
    FakeProcess,
    std::path::PathBuf,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = rig(TestLimits {
        recordings: Some(dir.path().to_owned()),
        ..TestLimits::default()
    });
    let session = rig.connect();
    let (channel, process) = shell(&rig, &session).await;
    let metadata = session.conn.metadata_path().expect("recording is on");
    (dir, rig, session, channel, process, metadata)
}

/// The metadata rewrites while a session runs are written on blocking threads; one
/// that lands after a newer version (taken later, written first) leaves the newer.
#[tokio::test(start_paused = true)]
async fn a_metadata_rewrite_that_lands_late_never_replaces_a_newer_one() {
    let (_dir, rig, session, channel, _process, metadata) = recorded_shell().await;
    let older = session
        .conn
        .metadata_write(Replace::Interim)
        .expect("recording is on");
    session.conn.state().metadata.exit_status = Some(5);
    let newer = session
        .conn
        .metadata_write(Replace::Interim)
        .expect("recording is on");
    newer();
    older();
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&metadata).expect("metadata")).expect("json");
    assert_eq!(written["exit_status"], 5);
    leave(&rig, &session, channel).await;
    session.finish();
    drop(session.conn.finish_on_drop());
    rig.finalized().await;
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&metadata).expect("metadata")).expect("json");
    assert_ne!(
        written["end_reason"], "running",
        "the final version is on disk"
    );
}

/// The metadata commands are in while a session runs: rewritten once typing pauses,
/// not at each Enter, and a command typed within the rewrite gap of the last one is
/// written too (after the gap), not only at the end.
#[tokio::test(start_paused = true)]
async fn a_running_sessions_commands_reach_its_metadata_once_typing_pauses() {
    let (_dir, rig, session, channel, _process, metadata) = recorded_shell().await;
    let on_disk = || -> Vec<String> {
        let Ok(text) = std::fs::read(&metadata) else {
            return Vec::new();
        };
        let written: serde_json::Value = serde_json::from_slice(&text).expect("json");
        written["commands"]
            .as_array()
            .map(|c| {
                c.iter()
                    .map(|c| c["input"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let typing_started = Instant::now();
    // Commands and keystrokes for 2 s without a 300 ms pause.
    for k in 0..20 {
        let line = if k % 5 == 0 {
            format!("id{k}\r")
        } else {
            "x".into()
        };
        channel.send(ChannelRequest::Data(line.into_bytes()));
        sleep(Duration::from_millis(100)).await;
        assert!(
            on_disk().is_empty(),
            "rewritten while typing went on ({:?} in)",
            typing_started.elapsed()
        );
    }
    sleep(Duration::from_millis(400)).await;
    let written = on_disk();
    assert_eq!(written.len(), 4, "{written:?}");
    assert!(written[0].starts_with("id0"), "{written:?}");
    // Another command at once: within the gap, written after it.
    channel.send(ChannelRequest::Data(b"uname\r".to_vec()));
    sleep(Duration::from_millis(1500)).await;
    assert_eq!(on_disk().len(), 5, "{:?}", on_disk());
    leave(&rig, &session, channel).await;
}

/// A source's first session comes and goes, leaving its machine stopped; returns the
/// rig (reuse on) and that container's id.
async fn a_source_came_before(dir: &std::path::Path) -> (Rig, String) {
    let rig = rig(TestLimits {
        reuse_state: Some(dir.join("containers.json")),
        ..TestLimits::default()
    });
    let first = rig.connect();
    let (channel, _process) = shell(&rig, &first).await;
    leave(&rig, &first, channel).await;
    let container = rig.sandbox.leased()[0].container_id.clone();
    assert_eq!(rig.sandbox.released().len(), 1);
    (rig, container)
}

#[tokio::test(start_paused = true)]
async fn a_returning_source_whose_container_is_gone_gets_a_new_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rig, container) = a_source_came_before(dir.path()).await;
    rig.sandbox.fail(
        Stage::Resume,
        SandboxError::ContainerGone(container.clone()),
    );
    let back = rig.connect();
    let (channel, _process) = shell(&rig, &back).await;
    assert_eq!(rig.sandbox.resumed(), std::slice::from_ref(&container));
    let leased = rig.sandbox.leased();
    assert_eq!(leased.len(), 2);
    assert_ne!(leased[1].container_id, container);
    assert_eq!(rig.sandbox.spawned()[1].0, leased[1].container_id);
    assert_eq!(rig.events.count(EventId::SessionError), 0);
    assert_eq!(rig.events.count(EventId::ContainerReuse), 0);
    leave(&rig, &back, channel).await;
    nothing_leaked(&rig);
}

#[tokio::test(start_paused = true)]
async fn a_returning_source_whose_container_cannot_start_is_told_fork_retry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rig, container) = a_source_came_before(dir.path()).await;
    rig.sandbox
        .fail(Stage::Resume, SandboxError::Engine("start: 500".into()));
    let back = rig.connect();
    assert!(back.login().await);
    let channel = back.open_channel().expect("channel");
    channel.terminal_shell();
    disconnected(&back).await;
    assert_eq!(rig.sandbox.resumed(), [container]);
    assert_eq!(
        channel.client.stdout_text(),
        told(EndReason::ContainerUnavailable)
    );
    assert_eq!(
        rig.events.fields(EventId::SessionError, "error"),
        ["container engine: start: 500"]
    );
    leave(&rig, &back, channel).await;
    assert_eq!(end_reason(&back), EndReason::ContainerUnavailable);
    assert_eq!(rig.sandbox.spawned().len(), 1, "only the first session's");
    nothing_leaked(&rig);
}

#[tokio::test(start_paused = true)]
async fn a_client_gone_while_its_shell_waits_for_the_container_leaks_nothing() {
    let rig = rig(TestLimits::default());
    rig.sandbox.hold_leases();
    let session = rig.connect();
    assert!(session.login().await);
    let channel = session.open_channel().expect("channel");
    channel.terminal_shell();
    settle().await;
    // The adapter's order: the channel goes, then (once its task is done) the
    // connection; the channel's task is still waiting for the container.
    channel.client.go_away();
    let client = std::sync::Arc::clone(&channel.client);
    let closing = tokio::spawn(channel.close());
    sleep(Duration::from_secs(10)).await;
    rig.sandbox.let_leases_through();
    within(SOON, "the channel's close", closing)
        .await
        .expect("channel task");
    session.finish();
    rig.finalized().await;
    assert!(client.ops().is_empty(), "nothing written to a gone client");
    assert_eq!(rig.events.count(EventId::SessionClosed), 1);
    assert_eq!(rig.sandbox.released().len(), 1);
    nothing_leaked(&rig);
}
