//! Limits: the session and idle timeouts, the disk limit, `max_sessions` and
//! `max_concurrent_sessions`.

use super::*;

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

/// The usage check walks the box's layer: while the client types without a pause it
/// waits, at most 3 s past its time, then is made.
#[tokio::test(start_paused = true)]
async fn the_usage_check_waits_for_a_pause_in_typing() {
    let rig = rig(TestLimits::default());
    let session = rig.connect();
    let (channel, _process) = shell(&rig, &session).await;
    // The first check comes at once.
    sleep(Duration::from_millis(500)).await;
    let first = rig.sandbox.usage_checks();
    assert!(first >= 1, "the usage is checked at the start");
    // A key every 100 ms for 5 s: the check due 3 s in waits.
    for _ in 0..50 {
        channel.send(ChannelRequest::Data(b"x".to_vec()));
        sleep(Duration::from_millis(100)).await;
        if Instant::now() - session.conn.started < Duration::from_secs(5) {
            assert_eq!(rig.sandbox.usage_checks(), first, "checked while typing");
        }
    }
    // Typing went on past the longest wait: checked 6 s in anyway.
    sleep(Duration::from_millis(1200)).await;
    assert!(rig.sandbox.usage_checks() > first, "never checked");
    leave(&rig, &session, channel).await;
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
