//! SIGTERM with connections in every phase: each connection that was logged as
//! connected is logged as closed, and a slow client before login does not hold the
//! shutdown for the whole drain period.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{self, root_shell};
use crate::events::Events;
use crate::harness::{Hermes, Options};

/// What Hermes waits at most for open connections to end after SIGTERM (`DRAIN` in
/// `run.rs`).
const DRAIN: Duration = Duration::from_secs(10);

/// Connects and reads the server's banner line.
async fn banner_read(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("banner in time")
            .expect("read");
        assert_eq!(n, 1, "closed before the banner");
        seen.push(byte[0]);
    }
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_phase_with_its_events_and_no_slow_client_holds_it() {
    require_docker!();
    let mut hermes = Hermes::start(Options::default());
    // Identification phase: silent after the banner.
    let _silent = banner_read(hermes.port).await;
    // Identification phase: a slow loris, one byte of its line now and then.
    let mut slow = banner_read(hermes.port).await;
    slow.write_all(b"SSH-2.0-").await.expect("write");
    let loris = tokio::spawn(async move {
        for byte in b"slowly-typed-client".iter().cycle().take(60) {
            if slow.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    // Key exchange done, not logged in.
    let _unauthenticated = client::connect(hermes.port).await.expect("connect");
    // Logged in, with a shell.
    let (_client, _shell) = root_shell(hermes.port).await;
    hermes.wait_for_at_least("cowrie.session.connect", 4);

    let asked = Instant::now();
    let status = tokio::task::block_in_place(|| hermes.terminate());
    let took = asked.elapsed();
    loris.abort();
    eprintln!("exit after SIGTERM took {took:?}");
    assert!(status.success(), "{status:?}");
    assert!(took < DRAIN, "shutdown waited {took:?}");

    let events = hermes.events();
    let sessions = |id: &str| -> HashSet<String> {
        events
            .of(id)
            .into_iter()
            .filter_map(|e| e["session"].as_str().map(str::to_owned))
            .collect()
    };
    let connected = sessions("cowrie.session.connect");
    let closed = sessions("cowrie.session.closed");
    assert_eq!(connected.len(), 4, "{connected:?}");
    assert_eq!(connected, closed, "connections without their closing event");
}
