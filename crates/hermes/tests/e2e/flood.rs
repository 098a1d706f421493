//! Floods of unauthenticated connections, bounded in count and time: Hermes keeps
//! serving a legitimate client within a second and its memory stays bounded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::client::Client;
use crate::harness::{Hermes, Options, raise_fd_limit, require_docker};

const FLOOD: usize = 2000;
const FLOOD_SOURCE: [u8; 4] = [127, 0, 0, 2];

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
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind((FLOOD_SOURCE, 0).into())
            .expect("bind 127.0.0.2");
        if let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(2), socket.connect(target)).await
        {
            if !first.is_empty() {
                let _ = stream.write_all(first).await;
            }
            open.push(stream);
        }
    }
    open
}

async fn legitimate_login_time(port: u16) -> Duration {
    let started = Instant::now();
    let client = Client::login(port, "root", "toor").await;
    let took = started.elapsed();
    drop(client);
    took
}

async fn run_flood(first: &'static [u8], what: &str) {
    raise_fd_limit();
    let hermes = Hermes::start(Options::default());
    let idle_rss = hermes.rss_kib();
    let streams = flood(hermes.port, FLOOD, first, Duration::from_secs(30)).await;
    let opened = streams.len();
    let during_rss = hermes.rss_kib();
    let took = legitimate_login_time(hermes.port).await;
    let events = tokio::task::block_in_place(|| {
        hermes.wait_for_events("the drops", |events| {
            events
                .iter()
                .filter(|e| e["eventid"] == "hermes.connection.drop")
                .count()
                + 8
                >= opened
        })
    });
    let drops = events
        .iter()
        .filter(|e| e["eventid"] == "hermes.connection.drop")
        .count();
    println!(
        "flood ({what}): {opened} connections opened from 127.0.0.2, {drops} dropped by admission control; \
         legitimate login took {took:?}; Hermes RSS {idle_rss} KiB idle, {during_rss} KiB during the flood"
    );
    assert_eq!(opened, FLOOD, "the flood itself was bounded in time");
    assert!(
        took < Duration::from_secs(1),
        "legitimate client waited {took:?}"
    );
    assert!(
        drops >= FLOOD - 8,
        "one source holds at most per_source_max_startups (8)"
    );
    assert!(
        events
            .iter()
            .filter(|e| e["eventid"] == "hermes.connection.drop")
            .all(|e| e["reason"] == "per_source_max_startups" && e["src_ip"] == "127.0.0.2")
    );
    drop(streams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_silent_connections_leave_hermes_serving() {
    if !require_docker() {
        return;
    }
    run_flood(b"", "silent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_trickling_connections_leave_hermes_serving() {
    if !require_docker() {
        return;
    }
    // Each sends one byte of an identification line and then nothing: a slow-loris
    // that would hold sshd's startup slots until LoginGraceTime.
    run_flood(b"S", "one byte each").await;
}
