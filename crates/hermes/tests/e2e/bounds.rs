//! What one connection can make Hermes hold or do is bounded: floods of `env` and
//! `tcpip-forward` requests do not grow its memory or its event lines, and a flood of
//! window changes costs the engine at most one resize per container per 50 ms.

use std::time::{Duration, Instant};

use crate::client::{Client, ROOT_PROMPT, root_shell};
use crate::events::Events;
use crate::harness::{Hermes, Options};
use crate::lifecycle::hermes_behind_proxy;

/// The longest line of the event log, and how many lines it has.
fn event_lines(hermes: &Hermes) -> (usize, usize) {
    let text = std::fs::read_to_string(hermes.log_dir().join("hermes.json")).unwrap_or_default();
    let longest = text.lines().map(str::len).max().unwrap_or(0);
    (longest, text.lines().count())
}

/// Waits past Hermes's periodic return of freed memory (every 10 s), then reads RSS.
async fn settled_rss_kib(hermes: &Hermes) -> u64 {
    tokio::time::sleep(Duration::from_secs(11)).await;
    hermes.rss_kib()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_and_forward_floods_leave_memory_and_event_lines_bounded() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let client = Client::login(hermes.port, "root", "toor").await;
    // One warm-up request of each kind, so what is measured is the flood alone.
    let warm = client.exec("true").await;
    drop(warm);
    let before = settled_rss_kib(&hermes).await;

    // 500 env requests of 200 KB on one channel (100 MB in all), then the command.
    let channel = client.handle.channel_open_session().await.expect("open");
    channel.set_env(false, "LC_SMALL", "ok").await.expect("env");
    let value = "v".repeat(200_000);
    for i in 0..500 {
        channel
            .set_env(false, format!("LC_FLOOD{i}"), value.clone())
            .await
            .expect("env");
    }
    channel
        .exec(true, "echo ENV-$((40+2)) $LC_SMALL ${#LC_FLOOD0}")
        .await
        .expect("exec");
    let mut shell = crate::client::Shell::new(channel);
    assert!(shell.read_to_close(Duration::from_secs(60)).await);
    let text = shell.text();
    assert!(text.contains("ENV-42 ok 0"), "{text:?}");
    let events = hermes.wait_for_at_least("cowrie.client.var", 501);
    let vars: Vec<_> = events.of("cowrie.client.var");
    assert_eq!(vars.len(), 501, "every request is logged");
    // At most 64 KiB of environment is applied: the small one only.
    let accepted: Vec<_> = vars.iter().filter(|e| e["accepted"] == true).collect();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(accepted[0]["name"], "LC_SMALL");
    assert!(
        vars.iter()
            .filter(|e| e["name"] != "LC_SMALL")
            .all(|e| e["value"]
                .as_str()
                .is_some_and(|v| v.len() <= 4096 && v.ends_with("...[truncated, 200000 bytes]"))),
        "values cut with their length"
    );
    let after_env = settled_rss_kib(&hermes).await;

    // 2,000 remote forwards: 1,000 naming a 30 KB address, 1,000 distinct ports.
    let long_address = "a".repeat(30_000);
    let mut granted = 0;
    for i in 0..2000u32 {
        let result = if i % 2 == 0 {
            client.handle.tcpip_forward(long_address.clone(), 0).await
        } else {
            client.handle.tcpip_forward("0.0.0.0", 20_000 + i).await
        };
        granted += usize::from(result.is_ok());
    }
    assert_eq!(granted, 64, "a connection holds at most 64 forwards");
    let after_forwards = settled_rss_kib(&hermes).await;
    let (longest, lines) = event_lines(&hermes);
    eprintln!(
        "RSS: {before} KiB before, {after_env} KiB after 500 env requests of 200 KB, \
         {after_forwards} KiB after 2,000 forward requests; longest event line {longest} bytes of {lines}"
    );
    assert!(lines >= 2500, "the floods were logged: {lines} lines");
    assert!(
        after_env.saturating_sub(before) < 16 * 1024,
        "env flood grew RSS from {before} to {after_env} KiB"
    );
    assert!(
        after_forwards.saturating_sub(after_env) < 8 * 1024,
        "forward flood grew RSS from {after_env} to {after_forwards} KiB"
    );
    assert!(longest <= 12 * 1024, "an event line of {longest} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_change_flood_costs_the_engine_one_resize_per_50ms() {
    require_docker!();
    let (hermes, seen, _) = hermes_behind_proxy(Options::default()).await;
    let (_client, mut shell) = root_shell(hermes.port).await;
    let resizes = || {
        seen.lock()
            .map(|s| {
                s.iter()
                    .filter(|(m, p)| m == "POST" && p.contains("/resize"))
                    .count()
            })
            .unwrap_or(0)
    };
    let before = resizes();
    let started = Instant::now();
    for i in 0..20_000u32 {
        shell
            .channel
            .window_change(80 + i % 100, 24 + i % 30, 0, 0)
            .await
            .expect("window change");
    }
    shell
        .channel
        .window_change(133, 41, 0, 0)
        .await
        .expect("window change");
    let flood = started.elapsed();
    // The shell answers at once: the changes ahead of the command are taken in order
    // without waiting for the engine.
    let answered = Instant::now();
    shell.run("true", ROOT_PROMPT).await;
    let lag = answered.elapsed();
    // And it ends with the last size, applied within a resize interval or two.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let size = shell.run("stty size", ROOT_PROMPT).await;
    let sent = resizes() - before;
    let window = started.elapsed();
    eprintln!(
        "20,001 window changes in {flood:?}: {sent} engine resizes in {window:?}; the next command answered in {lag:?}"
    );
    assert!(size.contains("41 133"), "{size:?}");
    let bound = (window.as_millis() / 50) as usize + 2;
    assert!(sent >= 1 && sent <= bound, "{sent} resizes in {window:?}");
    assert!(lag < Duration::from_secs(5), "echo lagged {lag:?}");
}
