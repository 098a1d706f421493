//! What the client sees: nothing of Hermes's own while it waits for its container, the
//! shutdown's wall message, a command's exit status.

use super::*;

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
    channel_closed(&channel).await;
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

#[tokio::test(start_paused = true)]
async fn a_shutdown_while_the_shell_waits_for_its_container_still_tells_the_terminal() {
    let rig = rig(TestLimits::default());
    rig.sandbox.hold_leases();
    let session = rig.connect();
    assert!(session.login().await);
    let channel = session.open_channel().expect("channel");
    channel.terminal_shell();
    sleep(Duration::from_secs(5)).await;
    assert!(channel.client.ops().is_empty(), "nothing while waiting");
    rig.shut_down();
    disconnected(&session).await;
    let text = channel.client.stdout_text();
    assert!(
        text.starts_with("\r\nBroadcast message from root@web-prod-01 on pts/1 (")
            && text.ends_with("The system will power off now!\r\n\r\n"),
        "{text:?}"
    );
    assert!(
        rig.sandbox.spawned().is_empty(),
        "no shell for a session that ended"
    );
    assert_eq!(end_reason(&session), EndReason::Shutdown);
    rig.sandbox.let_leases_through();
    leave(&rig, &session, channel).await;
    nothing_leaked(&rig);
}
