//! The engine failing at each stage: no container, no process, a broken stream, a
//! dead container, resizes, usage checks and the final file capture.

use super::*;

/// A session whose container cannot be had: what the client reads, on which stream.
async fn without_a_container(terminal: bool) {
    let rig = rig(TestLimits::default());
    rig.sandbox.fail(
        Stage::Lease,
        SandboxError::Unavailable("max_containers reached".into()),
    );
    let session = rig.connect();
    assert!(session.login().await);
    let channel = session.open_channel().expect("channel");
    if terminal {
        channel.terminal_shell();
    } else {
        channel.send(ChannelRequest::Exec("uname -a".into()));
    }
    disconnected(&session).await;
    let message = told(EndReason::ContainerUnavailable);
    if terminal {
        assert_eq!(channel.client.stdout_text(), message);
        assert_eq!(channel.client.stderr_text(), "");
    } else {
        assert_eq!(channel.client.stderr_text(), message.replace("\r\n", "\n"));
        assert_eq!(channel.client.stdout_text(), "");
    }
    assert_eq!(
        rig.events.fields(EventId::SessionError, "stage"),
        ["container_allocation"]
    );
    assert_eq!(
        rig.events.fields(EventId::SessionError, "error"),
        ["no container available: max_containers reached"]
    );
    assert_eq!(end_reason(&session), EndReason::ContainerUnavailable);
    leave(&rig, &session, channel).await;
    assert_eq!(end_reason(&session), EndReason::ContainerUnavailable);
    assert!(rig.sandbox.spawned().is_empty());
    assert!(rig.sandbox.released().is_empty());
    assert_eq!(rig.events.count(EventId::ContainerRelease), 0);
    assert_eq!(rig.events.count(EventId::SessionClosed), 1);
}

#[tokio::test(start_paused = true)]
async fn no_container_a_terminal_reads_bashs_fork_retry() {
    without_a_container(true).await;
}

#[tokio::test(start_paused = true)]
async fn no_container_a_command_reads_bashs_fork_retry_on_stderr() {
    without_a_container(false).await;
}

#[tokio::test(start_paused = true)]
async fn the_process_cannot_start_the_client_reads_fork_failed_and_the_container_goes_back() {
    let rig = rig(TestLimits::default());
    rig.sandbox.fail(
        Stage::Spawn,
        SandboxError::Engine("exec create: 500".into()),
    );
    let session = rig.connect();
    assert!(session.login().await);
    let channel = session.open_channel().expect("channel");
    channel.terminal_shell();
    disconnected(&session).await;
    assert_eq!(rig.sandbox.spawned().len(), 1, "it was tried");
    assert_eq!(channel.client.stdout_text(), told(EndReason::ExecFailed));
    assert_eq!(
        rig.events.fields(EventId::SessionError, "stage"),
        ["exec_start"]
    );
    assert_eq!(
        rig.events.fields(EventId::SessionError, "error"),
        ["container engine: exec create: 500"]
    );
    leave(&rig, &session, channel).await;
    assert_eq!(end_reason(&session), EndReason::ExecFailed);
    assert_eq!(rig.sandbox.released().len(), 1);
    nothing_leaked(&rig);
}

/// A running shell whose engine side fails through `fail`: the client reads the
/// broken pipe, the session ends as a stream error, the container goes back once.
async fn stream_fails(fail: impl FnOnce(&Rig, &FakeProcess), error: &str) {
    let rig = rig(TestLimits::default());
    let session = rig.connect();
    let (channel, process) = shell(&rig, &session).await;
    process.stdout(b"$ ");
    fail(&rig, &process);
    disconnected(&session).await;
    assert_eq!(
        channel.client.stdout_text(),
        format!("$ {}", told(EndReason::StreamError))
    );
    assert_eq!(
        rig.events.fields(EventId::SessionError, "stage"),
        ["stream"]
    );
    assert_eq!(rig.events.fields(EventId::SessionError, "error"), [error]);
    assert_eq!(end_reason(&session), EndReason::StreamError);
    leave(&rig, &session, channel).await;
    assert_eq!(end_reason(&session), EndReason::StreamError);
    assert_eq!(rig.sandbox.released().len(), 1);
    nothing_leaked(&rig);
    assert_eq!(rig.events.count(EventId::SessionClosed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_broken_output_stream_ends_the_session_with_a_broken_pipe() {
    stream_fails(
        |_, p| p.break_stream("connection reset"),
        "connection reset",
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_exit_status_ends_the_session_with_a_broken_pipe() {
    stream_fails(
        |rig, p| {
            rig.sandbox.fail(
                Stage::ExitStatus,
                SandboxError::Engine("inspect: 500".into()),
            );
            p.exit(Some(0));
        },
        "container engine: inspect: 500",
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_process_killed_with_its_container_ends_the_session_with_a_broken_pipe() {
    stream_fails(
        |_, p| {
            p.set_container_running(false);
            p.exit(Some(137));
        },
        "the container stopped",
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_container_that_dies_under_an_idle_shell_ends_the_session() {
    stream_fails(
        |rig, _| rig.sandbox.set_usage(false, 0),
        "the container stopped",
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn failed_resizes_and_usage_checks_do_not_end_the_session() {
    let rig = rig(TestLimits::default());
    rig.sandbox
        .fail(Stage::Resize, SandboxError::Engine("resize: 500".into()));
    rig.sandbox.fail(Stage::Usage, SandboxError::Timeout(10));
    let session = rig.connect();
    let (channel, process) = shell(&rig, &session).await;
    channel.send(ChannelRequest::WindowChange {
        width: 132,
        height: 43,
    });
    sleep(Duration::from_secs(30)).await;
    assert_eq!(
        process.resizes(),
        [crate::sandbox::TtySize {
            width: 132,
            height: 43
        }],
        "the resize was tried"
    );
    assert!(rig.sandbox.usage_checks() >= 5, "the usage was checked");
    assert_eq!(session.client.disconnects(), 0);
    assert_eq!(rig.events.count(EventId::SessionError), 0);
    process.stdout(b"still here");
    settle().await;
    assert_eq!(channel.client.stdout_text(), "still here");
    leave(&rig, &session, channel).await;
    assert_eq!(end_reason(&session), EndReason::ClientClosed);
    nothing_leaked(&rig);
}

/// A session with file capture on whose engine fails or stalls the capture's
/// listing: the session still ends, once, and its container goes back once.
async fn capture_trouble(stall: bool) -> Rig {
    let store = tempfile::tempdir().expect("tempdir");
    let rig = Rig::with_capture(config(&TestLimits::default()), store.path());
    let session = rig.connect();
    let (channel, _process) = shell(&rig, &session).await;
    if stall {
        rig.sandbox.hold(Stage::ChangedPaths);
    } else {
        rig.sandbox.fail(
            Stage::ChangedPaths,
            SandboxError::Engine("diff: 500".into()),
        );
    }
    let left = Instant::now();
    leave(&rig, &session, channel).await;
    let took = Instant::now() - left;
    assert!(
        rig.sandbox.listings() >= 1,
        "the final capture listed the files"
    );
    assert_eq!(
        rig.events.fields(EventId::SessionError, "stage"),
        ["capture"]
    );
    if stall {
        assert!(
            took >= Duration::from_secs(60) && took < Duration::from_secs(61),
            "the final capture is cut at 60 s, took {took:?}"
        );
    } else {
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }
    assert_eq!(end_reason(&session), EndReason::ClientClosed);
    assert_eq!(rig.events.count(EventId::SessionClosed), 1);
    assert_eq!(rig.sandbox.released().len(), 1);
    nothing_leaked(&rig);
    rig
}

#[tokio::test(start_paused = true)]
async fn a_failing_final_capture_is_reported_and_the_container_still_goes_back() {
    let rig = capture_trouble(false).await;
    assert_eq!(
        rig.events.fields(EventId::SessionError, "error"),
        ["container engine: diff: 500"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_final_capture_is_cut_short_and_the_container_still_goes_back() {
    let rig = capture_trouble(true).await;
    assert_eq!(
        rig.events.fields(EventId::SessionError, "error"),
        ["the final file capture took longer than 60 s and was cut short"]
    );
}
