//! Floods of unauthenticated connections, bounded in count and time: Hermes keeps
//! serving a legitimate client within a second (and logs it in within a second more
//! than it may wait for the box's sshd), its memory stays bounded, and the
//! refused connections are summed into a few events whose counts are the metric.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hermes_core::config::Seconds;
use hermes_core::session::BOX_LOGIN_WAIT;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::events::Events;
use crate::harness::{Hermes, Options, raise_fd_limit};
use crate::operations::{metrics, sample};

const FLOOD: usize = 2000;
const FLOOD_SOURCE: [u8; 4] = [127, 0, 0, 2];
/// What Hermes's memory may grow by during a flood, in KiB: a few KiB per connection
/// held, nothing per connection refused or closed.
const FLOOD_RSS_GROWTH_KIB: u64 = 16 * 1024;

/// The refusal reasons the metric is labelled with.
const REASONS: [&str; 6] = [
    "max_startups",
    "per_source_max_startups",
    "max_connections",
    "max_connections_per_source",
    "per_source_penalty",
    "other",
];

/// Hermes with metrics on and refusals summed per second (instead of per minute), so
/// the test sees the summaries without waiting.
fn start_hermes() -> (Hermes, u16) {
    let hermes = Hermes::start(
        Options {
            metrics: true,
            ..Options::default()
        }
        .configure(|c| c.server.refused_event_interval = Seconds::new(1)),
    );
    let metrics_port = hermes.metrics_port();
    (hermes, metrics_port)
}

/// Opens `count` connections from 127.0.0.2, each sending `first` (possibly nothing),
/// within `budget`. Returns the streams still open.
async fn flood(port: u16, count: usize, first: &'static [u8], budget: Duration) -> Vec<TcpStream> {
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + budget;
    let mut open = Vec::with_capacity(count);
    for _ in 0..count {
        if Instant::now() > deadline {
            break;
        }
        if let Some(mut stream) = connect_from(FLOOD_SOURCE.into(), target).await {
            if !first.is_empty() {
                let _ = stream.write_all(first).await;
            }
            open.push(stream);
        }
    }
    open
}

/// A connection to `target` from the loopback address `source`.
async fn connect_from(source: Ipv4Addr, target: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind((source, 0).into())
        .expect("bind a loopback address");
    match tokio::time::timeout(Duration::from_secs(2), socket.connect(target)).await {
        Ok(Ok(stream)) => Some(stream),
        _ => None,
    }
}

/// How long the legitimate client took: to be admitted (connected, the key exchange
/// done and its first authentication request answered), and to be logged in (its
/// password accepted, which Hermes answers once the box's own sshd has accepted it
/// too, waiting at most [`BOX_LOGIN_WAIT`] for that).
struct LoginTimes {
    admitted: Duration,
    logged_in: Duration,
}

impl LoginTimes {
    /// Admission within a second whatever the flood; the login within a second more
    /// than the box's sshd may be waited for.
    fn assert_within_bounds(&self, when: &str) {
        assert!(
            self.admitted < Duration::from_secs(1),
            "legitimate client waited {:?} to be served {when}",
            self.admitted
        );
        assert!(
            self.logged_in < Duration::from_secs(1) + BOX_LOGIN_WAIT,
            "legitimate client waited {:?} to be logged in {when}",
            self.logged_in
        );
    }
}

impl std::fmt::Debug for LoginTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} to be served, {:?} to be logged in",
            self.admitted, self.logged_in
        )
    }
}

async fn legitimate_login_time(port: u16) -> LoginTimes {
    let started = Instant::now();
    let mut handle = crate::client::connect(port).await.expect("connect");
    let none = handle.authenticate_none("root").await.expect("auth none");
    assert!(!none.success(), "`none` never logs in");
    let admitted = started.elapsed();
    let result = handle
        .authenticate_password("root", "toor")
        .await
        .expect("auth exchange");
    assert!(result.success(), "login root/toor refused");
    let logged_in = started.elapsed();
    drop(handle);
    LoginTimes {
        admitted,
        logged_in,
    }
}

fn refusals(events: &[Value]) -> Vec<&Value> {
    events.of("hermes.connection.refused")
}

/// Connections refused, summed over the refusal events (with `reason`, if given).
fn refused_count(events: &[Value], reason: Option<&str>) -> u64 {
    refusals(events)
        .into_iter()
        .filter(|e| reason.is_none_or(|r| e["reason"] == r))
        .map(|e| e["count"].as_u64().expect("count"))
        .sum()
}

/// `hermes_connections_dropped_total`, every reason together; waits (up to 5 s) for
/// it to reach `expected`, since the metrics sink follows the event file.
async fn dropped_metric(metrics_port: u16, expected: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(metrics_port).await;
        let total: f64 = REASONS
            .iter()
            .map(|r| {
                sample(
                    &text,
                    &format!("hermes_connections_dropped_total{{reason=\"{r}\"}}"),
                )
            })
            .sum();
        let total = total as u64;
        if total == expected || Instant::now() > deadline {
            return total;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run_flood(first: &'static [u8], what: &str) {
    raise_fd_limit();
    let (hermes, metrics_port) = start_hermes();
    let idle_rss = hermes.rss_kib();
    let streams = flood(hermes.port, FLOOD, first, Duration::from_secs(30)).await;
    let opened = streams.len();
    let during_rss = hermes.rss_kib();
    let took = legitimate_login_time(hermes.port).await;
    let events = tokio::task::block_in_place(|| {
        hermes.wait_for_events("the refusals", |events| {
            refused_count(events, None) as usize + 8 >= opened
        })
    });
    let drops = refused_count(&events, None);
    let lines = refusals(&events).len() as u64;
    let metric = dropped_metric(metrics_port, drops).await;
    println!(
        "flood ({what}): {opened} connections opened from 127.0.0.2, {drops} refused by admission control \
         in {lines} events; legitimate login took {took:?}; Hermes RSS {idle_rss} KiB idle, {during_rss} KiB during the flood"
    );
    assert_eq!(opened, FLOOD, "the flood itself was bounded in time");
    took.assert_within_bounds("during the flood");
    assert!(
        drops as usize >= FLOOD - 8,
        "one source holds at most per_source_max_startups (8)"
    );
    assert!(
        refusals(&events)
            .iter()
            .all(|e| e["reason"] == "per_source_max_startups" && e["src_ip"] == "127.0.0.2")
    );
    assert!(
        lines * 50 <= drops,
        "refusals are summed: {lines} events for {drops} refused connections"
    );
    assert_eq!(metric, drops, "the metric is the sum of the counts");
    assert!(
        during_rss < idle_rss + FLOOD_RSS_GROWTH_KIB,
        "Hermes grew from {idle_rss} to {during_rss} KiB during the flood"
    );
    drop(streams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_silent_connections_leave_hermes_serving() {
    require_docker!();
    run_flood(b"", "silent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_trickling_connections_leave_hermes_serving() {
    require_docker!();
    // Each sends one byte of an identification line and then nothing: a slow-loris
    // that would hold sshd's startup slots until LoginGraceTime.
    run_flood(b"S", "one byte each").await;
}

/// Idle connections from many sources.
const IDLE: usize = 2000;
/// Slow-loris connections (a byte of an identification line every 2 s).
const SLOW: usize = 200;
/// `max_startups`' full mark (the default "10:30:100").
const STARTUPS_FULL: usize = 100;
/// One source that opens far more than its share.
const GREEDY: Ipv4Addr = Ipv4Addr::new(127, 3, 0, 1);
const GREEDY_BURST: usize = 300;
/// `per_source_max_startups` (default).
const PER_SOURCE: usize = 8;
/// Idle connections that keep arriving during the second login.
const MORE: usize = 1000;
const LINE: &[u8] = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3 trickling";

/// A flood connection, as a plain non-blocking socket.
struct Held {
    stream: std::net::TcpStream,
    /// Bytes of [`LINE`] sent (slow-loris), or None (idle).
    sent: Option<usize>,
}

impl Held {
    /// Still open on Hermes's side: reading gives no end of stream (the banner is
    /// read and discarded).
    fn alive(&mut self) -> bool {
        let mut buf = [0u8; 512];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }

    /// The slow-loris sends its next byte (never the line's end).
    fn trickle(&mut self) {
        if let Some(sent) = self.sent.as_mut()
            && *sent < LINE.len()
            && self.stream.write(&LINE[*sent..*sent + 1]).is_ok()
        {
            *sent += 1;
        }
    }
}

/// The `n`th flood source: 127.1.0.1, 127.1.0.2, ... (250 per third octet).
fn flood_source(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250 + 1) as u8)
}

async fn connect_held(source: Ipv4Addr, target: SocketAddr) -> Option<std::net::TcpStream> {
    let stream = connect_from(source, target).await?;
    stream.into_std().ok()
}

/// Opens `count` connections from `source` (the greedy one) and returns how many
/// Hermes closed before its banner (refused) and the ones it kept.
async fn burst(source: Ipv4Addr, target: SocketAddr, count: usize) -> (usize, Vec<Held>) {
    let mut kept = Vec::new();
    let mut refused = 0;
    for _ in 0..count {
        let Some(stream) = connect_held(source, target).await else {
            continue;
        };
        kept.push(Held { stream, sent: None });
    }
    // A refused connection is closed at once: end of stream without a banner.
    tokio::time::sleep(Duration::from_millis(500)).await;
    kept.retain_mut(|held| {
        let open = held.alive();
        if !open {
            refused += 1;
        }
        open
    });
    (refused, kept)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_two_hundred_sources_cannot_lock_a_client_out() {
    require_docker!();
    raise_fd_limit();
    let (hermes, metrics_port) = start_hermes();
    let idle_rss = hermes.rss_kib();
    let target: SocketAddr = ([127, 0, 0, 1], hermes.port).into();
    let began = Instant::now();

    // One source takes its share of startup places and is refused past it.
    let (greedy_refused, greedy_kept) = burst(GREEDY, target, GREEDY_BURST).await;
    assert_eq!(
        greedy_kept.len(),
        PER_SOURCE,
        "the greedy source holds its share"
    );
    assert_eq!(greedy_refused, GREEDY_BURST - PER_SOURCE);

    // 2,000 idle and 200 slow-loris connections, each from its own address, mixed.
    let mut held: Vec<Held> = Vec::with_capacity(IDLE + SLOW);
    let mut last_trickle = Instant::now();
    for n in 0..IDLE + SLOW {
        assert!(
            began.elapsed() < Duration::from_secs(40),
            "the flood took too long: {n} connections in {:?}",
            began.elapsed()
        );
        let Some(stream) = connect_held(flood_source(n), target).await else {
            continue;
        };
        let slow = n % 11 == 0;
        let mut h = Held {
            stream,
            sent: slow.then_some(0),
        };
        h.trickle();
        held.push(h);
        if last_trickle.elapsed() > Duration::from_secs(2) {
            held.iter_mut().for_each(Held::trickle);
            last_trickle = Instant::now();
        }
    }
    let opened = held.len();
    let slow_opened = held.iter().filter(|h| h.sent.is_some()).count();
    let flood_took = began.elapsed();
    held.iter_mut().for_each(Held::trickle);
    // Closes of evicted connections reach us (2,200 came in well under a second; on
    // a busy machine the last evictions take a moment): count what Hermes still
    // holds once that count is down to its places, or has stopped falling for 1 s,
    // within 10 s.
    let mut alive: Vec<bool>;
    let settle_until = Instant::now() + Duration::from_secs(10);
    let mut last_fall = Instant::now();
    let mut previous = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        alive = held.iter_mut().map(Held::alive).collect();
        let count = alive.iter().filter(|a| **a).count();
        if count < previous {
            previous = count;
            last_fall = Instant::now();
        }
        if count < STARTUPS_FULL + 5
            || last_fall.elapsed() > Duration::from_secs(1)
            || Instant::now() > settle_until
        {
            break;
        }
    }
    let greedy_alive = greedy_kept
        .into_iter()
        .filter_map(|mut h| h.alive().then_some(h))
        .count();
    let alive_before = alive.iter().filter(|a| **a).count();
    let slow_alive = held
        .iter()
        .zip(&alive)
        .filter(|(h, a)| **a && h.sent.is_some())
        .count();
    let rss = hermes.rss_kib();

    // The legitimate client, while every startup place is taken.
    let took = legitimate_login_time(hermes.port).await;
    let alive_after = held.iter_mut().map(Held::alive).filter(|a| *a).count();

    // Again while the flood goes on: new idle connections from new addresses keep
    // arriving during the login (one every 2 ms), each closing another stalled one.
    let more = Arc::new(AtomicUsize::new(0));
    let going_on = tokio::spawn({
        let more = Arc::clone(&more);
        async move {
            let mut held = Vec::new();
            let mut pace = tokio::time::interval(Duration::from_millis(2));
            for n in 0..MORE {
                pace.tick().await;
                if let Some(stream) = connect_held(flood_source(IDLE + SLOW + n), target).await {
                    held.push(stream);
                    more.fetch_add(1, Ordering::Relaxed);
                }
            }
            held
        }
    });
    while more.load(Ordering::Relaxed) < MORE / 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let more_before = more.load(Ordering::Relaxed);
    let took_during = legitimate_login_time(hermes.port).await;
    let more_after = more.load(Ordering::Relaxed);
    let more_held = going_on.await.expect("flood task");

    // The greedy source was closed to make room 8 times (10 s penalty each): it is
    // refused now, whatever the places.
    let (penalised, _) = burst(GREEDY, target, 50).await;

    let events = tokio::task::block_in_place(|| {
        hermes.wait_for_events("the evictions and refusal summaries", |events| {
            let evicted = events.count_of("hermes.connection.evicted");
            // Every flood admission past the full mark closed one.
            evicted + STARTUPS_FULL >= opened + more_held.len() + PER_SOURCE
                && refused_count(events, Some("per_source_penalty")) >= 50
        })
    });
    let evicted: Vec<&Value> = events.of("hermes.connection.evicted");
    let connects = events.count_of("cowrie.session.connect");
    let refused = refused_count(&events, None);
    let lines = refusals(&events).len();
    let metric = dropped_metric(metrics_port, refused).await;
    let text = metrics(metrics_port).await;
    let accepted_metric = sample(&text, "hermes_connections_total") as usize;
    drop(held);
    let more_opened = more_held.len();
    drop(more_held);

    println!(
        "flood from {} addresses: {opened} connections opened ({slow_opened} slow-loris) in {flood_took:?}; \
         {alive_before} held by Hermes before the login ({slow_alive} slow-loris), {alive_after} after; legitimate login took {took:?}; \
         while {MORE} more arrived (opened {more_before}..{more_after} of them during it), {took_during:?}; \
         {} closed to make room; {connects} accepted; greedy source: {greedy_refused} refused past its share, \
         {penalised} of 50 refused under penalty; {refused} refusals in {lines} events (metric {metric}); Hermes RSS {idle_rss} KiB idle, {rss} KiB with the flood held",
        opened + 1,
        evicted.len(),
    );
    // The load was in place: every connection was opened, and Hermes held exactly its
    // startup places, all taken by the flood, when the client came.
    assert_eq!(opened, IDLE + SLOW, "every flood connection was opened");
    assert_eq!(slow_opened, SLOW);
    assert_eq!(
        greedy_alive, 0,
        "the greedy source's connections were the first closed"
    );
    assert!(
        (STARTUPS_FULL..STARTUPS_FULL + 5).contains(&alive_before),
        "Hermes should hold its {STARTUPS_FULL} startup places, all flood: {alive_before}"
    );
    assert!(
        accepted_metric > IDLE + SLOW + PER_SOURCE,
        "Hermes accepted {accepted_metric} connections"
    );
    // The bound.
    took.assert_within_bounds("during the flood");
    took_during.assert_within_bounds("while the flood went on");
    assert!(
        more_before >= MORE / 4 && more_after < MORE,
        "the flood went on during the login: {more_before}..{more_after} of {MORE}"
    );
    // It got in by closing a flood connection, and was never chosen itself.
    assert!(
        alive_after < alive_before,
        "{alive_after} vs {alive_before}"
    );
    assert!(evicted.iter().all(|e| e["src_ip"] != "127.0.0.1"));
    assert!(evicted.iter().all(|e| e["reason"] == "max_startups"));
    assert!(evicted.len() + STARTUPS_FULL >= opened + MORE + PER_SOURCE);
    assert_eq!(more_opened, MORE);
    // Penalties: a source closed to make room again and again is refused for a while.
    assert_eq!(penalised, 50);
    assert_eq!(refused_count(&events, Some("per_source_penalty")), 50);
    assert_eq!(
        refused_count(&events, Some("per_source_max_startups")),
        (GREEDY_BURST - PER_SOURCE) as u64
    );
    // Refusals are summed, and the metric is exactly their sum.
    assert_eq!(refused, (GREEDY_BURST - PER_SOURCE + 50) as u64);
    assert!(
        lines * 20 <= refused as usize,
        "{lines} refusal events for {refused} refused connections"
    );
    assert_eq!(metric, refused, "the metric is the sum of the counts");
    assert!(
        rss < idle_rss + FLOOD_RSS_GROWTH_KIB,
        "Hermes grew from {idle_rss} to {rss} KiB with the flood held"
    );
    assert!(began.elapsed() < Duration::from_secs(90));
}
