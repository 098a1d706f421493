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

#[tokio::test(start_paused = true)]
async fn the_session_timeout_ends_the_session_at_its_time_and_not_before() {
    let rig = rig(TestLimits {
        session_timeout: Duration::from_secs(60),
        ..TestLimits::default()
    });
    let session = rig.connect();
    let logged_in = Instant::now();
    let (channel, process) = shell(&rig, &session).await;
    process.stdout(b"root@web-prod-01:~# ");
    // Typing does not put it off: the limit is absolute.
    for at in [10, 30, 50] {
        sleep_until(logged_in + Duration::from_secs(at)).await;
        channel.send(ChannelRequest::Data(b"\n".to_vec()));
    }

    sleep_until(logged_in + Duration::from_millis(59_990)).await;
    assert_eq!(session.client.disconnects(), 0, "not before the timeout");
    assert_eq!(end_reason(&session), EndReason::Running);

    disconnected(&session).await;
    let at = Instant::now() - logged_in;
    assert!(
        at >= Duration::from_secs(60) && at < Duration::from_millis(60_100),
        "ended {at:?} after login"
    );
    assert_eq!(
        channel.client.stdout_text(),
        format!("root@web-prod-01:~# {}", told(EndReason::Timeout))
    );
    assert_eq!(end_reason(&session), EndReason::Timeout);
    leave(&rig, &session, channel).await;
    assert_eq!(end_reason(&session), EndReason::Timeout);
    assert_eq!(rig.events.count(EventId::SessionClosed), 1);
    assert_eq!(rig.events.count(EventId::SessionError), 0);
    assert_eq!(rig.sandbox.released().len(), 1);
    nothing_leaked(&rig);
}

#[tokio::test(start_paused = true)]
async fn the_idle_timeout_ends_an_idle_session_and_input_puts_it_off() {
    let rig = rig(TestLimits {
        idle_timeout: Duration::from_secs(30),
        ..TestLimits::default()
    });
    let session = rig.connect();
    let logged_in = Instant::now();
    let (channel, process) = shell(&rig, &session).await;

    // A keystroke every 20 s for 100 s keeps it open: each one puts the end off.
    let mut typed = logged_in;
    for n in 1..=5 {
        sleep_until(logged_in + Duration::from_secs(20 * n)).await;
        assert_eq!(session.client.disconnects(), 0, "closed while typing");
        channel.send(ChannelRequest::Data(b"l".to_vec()));
        typed = Instant::now();
    }
    settle().await;
    assert_eq!(process.input(), b"lllll");

    // 30 s after the last input it ends, not before.
    sleep_until(typed + Duration::from_millis(29_990)).await;
    assert_eq!(
        session.client.disconnects(),
        0,
        "input put the idle end off"
    );
    disconnected(&session).await;
    let idle = Instant::now() - typed;
    assert!(
        idle >= Duration::from_secs(30) && idle < Duration::from_millis(30_100),
        "ended {idle:?} after the last input"
    );
    assert!(
        channel
            .client
            .stdout_text()
            .ends_with(&told(EndReason::IdleTimeout)),
        "{:?}",
        channel.client.stdout_text()
    );
    assert_eq!(end_reason(&session), EndReason::IdleTimeout);
    leave(&rig, &session, channel).await;
    assert_eq!(rig.events.count(EventId::SessionClosed), 1);
    nothing_leaked(&rig);
}

#[tokio::test(start_paused = true)]
async fn the_disk_limit_ends_the_session_at_the_first_check_past_it() {
    let rig = rig(TestLimits {
        disk_limit: 1 << 20,
        ..TestLimits::default()
    });
    // Exactly at the limit is within it.
    rig.sandbox.set_usage(true, 1 << 20);
    let session = rig.connect();
    let (channel, _process) = shell(&rig, &session).await;
    sleep(Duration::from_secs(10)).await;
    assert!(rig.sandbox.usage_checks() >= 3, "the usage is checked");
    assert_eq!(
        session.client.disconnects(),
        0,
        "at the limit is not past it"
    );

    rig.sandbox.set_usage(true, (1 << 20) + 1);
    let filled = Instant::now();
    disconnected(&session).await;
    assert!(
        Instant::now() - filled <= Duration::from_secs(3),
        "ended at the next check (every 3 s)"
    );
    assert_eq!(
        rig.events.fields(EventId::SessionError, "stage"),
        ["disk_limit"]
    );
    assert!(
        channel
            .client
            .stdout_text()
            .ends_with(&told(EndReason::DiskLimit))
    );
    assert_eq!(end_reason(&session), EndReason::DiskLimit);
    leave(&rig, &session, channel).await;
    assert_eq!(end_reason(&session), EndReason::DiskLimit);
    nothing_leaked(&rig);
    assert_eq!(rig.sandbox.released().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_session_channel_past_max_sessions_is_refused_with_an_event() {
    let rig = rig(TestLimits {
        max_sessions: 2,
        ..TestLimits::default()
    });
    let session = rig.connect();
    assert!(session.login().await);
    let first = session.open_channel().expect("first channel");
    let second = session.open_channel().expect("second channel");
    assert!(session.open_channel().is_none(), "the third is refused");
    assert_eq!(
        rig.events.fields(EventId::ChannelRefused, "channel_type"),
        ["session"]
    );
    assert_eq!(
        rig.events.fields(EventId::ChannelRefused, "reason"),
        ["persona.max_sessions (2) reached"]
    );
    // A closed channel gives its place back.
    first.close().await;
    let third = session.open_channel().expect("a place was given back");
    assert_eq!(rig.events.count(EventId::ChannelRefused), 1);
    second.close().await;
    leave(&rig, &session, third).await;
    nothing_leaked(&rig);
}

#[tokio::test(start_paused = true)]
async fn past_max_concurrent_sessions_a_login_is_told_too_many_logins_and_gets_no_container() {
    let rig = rig(TestLimits {
        max_concurrent_sessions: 1,
        ..TestLimits::default()
    });
    let first = rig.connect();
    let (first_channel, first_process) = shell(&rig, &first).await;

    let second = rig.connect_from("198.51.100.8:50000");
    assert!(
        second.login_as(OTHER_LOGIN).await,
        "the login itself succeeds"
    );
    let channel = second.open_channel().expect("channel");
    channel.terminal_shell();
    disconnected(&second).await;
    assert_eq!(
        channel.client.stdout_text(),
        "Too many logins for 'admin'.\r\n"
    );
    assert_eq!(
        rig.events.fields(EventId::SessionError, "stage"),
        ["capacity"]
    );
    assert_eq!(end_reason(&second), EndReason::Capacity);
    assert_eq!(rig.sandbox.lease_requests(), 1, "no container for it");
    leave(&rig, &second, channel).await;
    // The first session is untouched.
    first_process.stdout(b"first-6\r\n");
    settle().await;
    assert_eq!(first_channel.client.stdout_text(), "first-6\r\n");
    assert_eq!(first.client.disconnects(), 0);
    assert_eq!(end_reason(&first), EndReason::Running);

    // The first session's end gives its place back.
    leave(&rig, &first, first_channel).await;
    let third = rig.connect_from("198.51.100.9:50000");
    let (channel, _process) = shell(&rig, &third).await;
    assert_eq!(rig.sandbox.lease_requests(), 2);
    leave(&rig, &third, channel).await;
    nothing_leaked(&rig);
}

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
    within(SOON, "the channel's close", async {
        while channel.client.closes() == 0 {
            settle().await;
        }
    })
    .await;
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

#[tokio::test(start_paused = true)]
async fn a_shell_waiting_for_its_container_shows_nothing_and_gets_what_was_typed() {
    let rig = rig(TestLimits::default());
    rig.sandbox.hold_leases();
    let session = rig.connect();
    assert!(session.login().await);
    let channel = session.open_channel().expect("channel");
    channel.terminal_shell();
    channel.send(ChannelRequest::Data(b"id\n".to_vec()));
    sleep(Duration::from_secs(20)).await;
    assert!(channel.client.ops().is_empty(), "nothing while waiting");
    assert!(rig.sandbox.spawned().is_empty());

    rig.sandbox.let_leases_through();
    let process = within(SOON, "the shell's start", rig.sandbox.process(0)).await;
    settle().await;
    assert_eq!(process.input(), b"id\n");
    assert_eq!(rig.events.count(EventId::ContainerAllocate), 1);
    assert!(
        channel.client.ops().is_empty(),
        "no message of Hermes's own"
    );
    leave(&rig, &session, channel).await;
    nothing_leaked(&rig);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_tells_the_terminal_the_system_powers_off() {
    let rig = rig(TestLimits::default());
    let session = rig.connect();
    let (channel, _process) = shell(&rig, &session).await;
    rig.shut_down();
    disconnected(&session).await;
    let text = channel.client.stdout_text();
    assert!(
        text.starts_with("\r\nBroadcast message from root@web-prod-01 on pts/1 (")
            && text.ends_with("The system will power off now!\r\n\r\n"),
        "{text:?}"
    );
    assert_eq!(end_reason(&session), EndReason::Shutdown);
    leave(&rig, &session, channel).await;
    assert_eq!(end_reason(&session), EndReason::Shutdown);
    nothing_leaked(&rig);
}

#[tokio::test(start_paused = true)]
async fn a_command_without_a_terminal_gets_its_exit_status_and_no_message() {
    let rig = rig(TestLimits::default());
    let session = rig.connect();
    assert!(session.login().await);
    let channel = session.open_channel().expect("channel");
    channel.send(ChannelRequest::Exec("uname".into()));
    let process = within(SOON, "the command's start", rig.sandbox.process(0)).await;
    assert_eq!(process.spec().tty, None);
    process.stderr(b"warning\n");
    process.stdout(b"Linux\n");
    process.exit(Some(0));
    within(SOON, "the channel's close", async {
        while channel.client.closes() == 0 {
            settle().await;
        }
    })
    .await;
    assert_eq!(
        channel.client.ops(),
        [
            ClientOp::Stderr("warning\n".into()),
            ClientOp::Data("Linux\n".into()),
            ClientOp::ExitStatus(0),
            ClientOp::Eof,
            ClientOp::Close
        ]
    );
    assert_eq!(rig.events.fields(EventId::CommandInput, "input"), ["uname"]);
    leave(&rig, &session, channel).await;
    assert_eq!(end_reason(&session), EndReason::Exited);
    assert_eq!(
        session.client.disconnects(),
        0,
        "the client closes, not Hermes"
    );
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
