//! Type-ahead: what a client sends the moment its shell channel opens (before any
//! prompt, as bots do) reaches the shell and runs, whichever way the session's
//! container and login came about: a pool container's standby login, a container
//! made on demand because the pool was empty, or a returning source's own container.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Semaphore;

use crate::client::{Client, Shell};
use crate::events::Events;
use crate::harness::{Hermes, Options};

/// Sent right behind the shell request. Its output names the sum only when bash ran
/// it: the echo of the line itself shows `$((6*7))`.
const COMMAND: &str = "echo TA-$((6*7))-X";
const RAN: &str = "TA-42-X";

/// Sessions run at once.
const AT_ONCE: usize = 3;

/// One session: log in from `source`, open a terminal and a shell without waiting for
/// any answer, type the command at once. Ok when its output came, else what was seen.
async fn type_ahead(port: u16, source: Ipv4Addr) -> Result<(), String> {
    let client = Client::login_from(port, source, "root", "toor").await;
    let channel = client
        .handle
        .channel_open_session()
        .await
        .map_err(|e| format!("open: {e}"))?;
    channel
        .request_pty(false, "xterm-256color", 120, 40, 0, 0, &[])
        .await
        .map_err(|e| format!("pty: {e}"))?;
    channel
        .request_shell(false)
        .await
        .map_err(|e| format!("shell: {e}"))?;
    channel
        .data(format!("{COMMAND}\n").as_bytes())
        .await
        .map_err(|e| format!("data: {e}"))?;
    let mut shell = Shell::new(channel);
    let ran = shell.read_until(RAN, 0, Duration::from_secs(40)).await;
    let text = shell.text();
    if ran {
        shell.send("exit\n").await;
        shell.read_to_close(Duration::from_secs(10)).await;
        Ok(())
    } else {
        Err(format!("from {source}: {text:?}"))
    }
}

/// Runs `count` sessions, `AT_ONCE` at a time, from the sources `source(i)`; returns
/// the failures.
async fn run_sessions(port: u16, count: usize, source: impl Fn(usize) -> Ipv4Addr) -> Vec<String> {
    let gate = Arc::new(Semaphore::new(AT_ONCE));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let permit = Arc::clone(&gate).acquire_owned().await.expect("semaphore");
        let from = source(i);
        tasks.spawn(async move {
            let result = type_ahead(port, from).await;
            drop(permit);
            result
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => failures.push(failure),
            Err(panic) => failures.push(format!("session task: {panic}")),
        }
    }
    failures
}

/// Runs `sessions` type-ahead sessions from `source(i)` and asserts that each ran;
/// returns how their containers came.
async fn all_ran(
    hermes: &Hermes,
    what: &str,
    sessions: usize,
    source: impl Fn(usize) -> Ipv4Addr,
) -> HashMap<String, usize> {
    let failures = run_sessions(hermes.port, sessions, source).await;
    let sources = lease_sources(&hermes.events());
    eprintln!(
        "{what}: type-ahead ran in {} of {sessions}; containers: {sources:?}",
        sessions - failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    sources
}

/// A fresh source address for session `i` (127.0.0.0/8 is all loopback).
fn fresh(block: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, block, (i / 250) as u8, (i % 250) as u8 + 2)
}

/// How the sessions' containers came (`pool`, `on_demand`, `reused`, `shared`).
fn lease_sources(events: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for event in events.of("hermes.container.allocate").into_iter() {
        let source = event["source"].as_str().unwrap_or("?").to_owned();
        *counts.entry(source).or_insert(0) += 1;
    }
    counts
}

/// Every session recorded the command exactly as typed, once: it is recorded because
/// the shell received it, and each of those shells printed its output (checked by the
/// caller). The Enter goes to the box before its event is written, so the client can
/// see the output first: this waits for the commands themselves (the sessions'
/// `exit` lines are command events too, and may all be there before the last one).
fn assert_recorded(hermes: &Hermes, sessions: usize) {
    let typed_commands = |events: &[Value]| -> Vec<String> {
        events
            .of("cowrie.command.input")
            .into_iter()
            .filter_map(|e| e["input"].as_str().map(str::to_owned))
            .collect()
    };
    let typed = |events: &[Value]| {
        typed_commands(events)
            .iter()
            .filter(|c| *c == COMMAND)
            .count()
    };
    let events = hermes.wait_for_events(&format!("{sessions} commands typed ahead"), |events| {
        typed(events) >= sessions
    });
    assert_eq!(typed(&events), sessions, "{:?}", typed_commands(&events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn type_ahead_runs_on_every_fresh_login_from_the_pools_standby() {
    require_docker!();
    // Eight ready boxes: a systemd box takes about a second to boot on two cores, and
    // the check below is about the standby's logins, not the pool's refill speed.
    const POOL: usize = 8;
    let hermes = Hermes::start(Options {
        pool_size: POOL as u32,
        metrics: true,
        ..Options::default()
    });
    // Two rounds, the pool full again before the second: the second round's first
    // logins are the refill's boxes, however fast this machine boots them.
    let round = 50;
    all_ran(&hermes, "fresh logins", round, |i| fresh(31, i)).await;
    pool_full_again(hermes.metrics_port(), POOL).await;
    let sources = all_ran(&hermes, "fresh logins after the refill", round, |i| {
        fresh(32, i)
    })
    .await;
    // Many were the pool's, not only boxes made on demand: the eight ready at the start
    // and the eight the refill made ready. How many more depends on how fast logins
    // come against how fast boxes boot: not asserted.
    assert!(
        sources.get("pool").copied().unwrap_or(0) >= 2 * POOL,
        "{sources:?}"
    );
    assert_recorded(&hermes, 2 * round);
}

/// Waits until the pool has `size` boxes ready (its metrics say so), at most two
/// minutes.
async fn pool_full_again(metrics_port: u16, size: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let text = crate::operations::metrics(metrics_port).await;
        let ready = crate::operations::sample(&text, "hermes_pool_containers{state=\"ready\"}");
        if ready >= size as f64 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pool did not refill to {size} within two minutes: {ready} ready"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn type_ahead_runs_when_the_pool_is_empty_and_for_a_returning_source() {
    require_docker!();
    // One ready container for three logins at a time: the others' containers are
    // made on demand, and their logins are started afresh, without a standby.
    let empty = Hermes::start(Options {
        pool_size: 1,
        ..Options::default()
    });
    let sessions = 30;
    let sources = all_ran(&empty, "empty pool", sessions, |i| fresh(32, i)).await;
    assert!(
        sources.get("on_demand").copied().unwrap_or(0) >= sessions / 3,
        "{sources:?}"
    );
    assert_recorded(&empty, sessions);
    drop(empty);

    // One source again and again: its own container, started again or shared.
    let returning = Hermes::start(Options {
        pool_size: 1,
        reuse: true,
        ..Options::default()
    });
    let source = Ipv4Addr::new(127, 33, 0, 9);
    let sources = all_ran(&returning, "returning source", sessions, |_| source).await;
    let again =
        sources.get("reused").copied().unwrap_or(0) + sources.get("shared").copied().unwrap_or(0);
    assert!(again >= sessions - 1, "{sources:?}");
    // And after its container was stopped between logins: started again.
    for round in 0..3 {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while returning.containers(Some("exited")).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the container never stopped"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let failures = run_sessions(returning.port, 1, |_| source).await;
        assert!(failures.is_empty(), "round {round}: {failures:?}");
    }
    let sources = lease_sources(&returning.events());
    eprintln!("returning source, then started again: containers: {sources:?}");
    assert_eq!(
        sources.get("reused").copied().unwrap_or(0),
        3,
        "{sources:?}"
    );
    assert_recorded(&returning, sessions + 3);
}
