//! Timeouts with a short configured value, through a real client and engine: its own
//! message to the client and its own end reason in the metadata. The session timeout
//! is the smoke test of the whole path; the timing rules of the session and idle
//! timeouts are unit tests on a paused clock (hermes-core `session::tests`).
//! (LoginGraceTime, before authentication, is in `transport.rs`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hermes_core::config::Seconds;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::client::root_shell;
use crate::events::Events;
use crate::harness::{Hermes, Options};

/// The metadata of the one session of this Hermes, once it has ended.
fn ended_metadata(hermes: &Hermes) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<Value> = hermes
            .metadata_files()
            .into_iter()
            .filter_map(|path| std::fs::read(path).ok())
            .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
            .filter(|m| m["end_reason"] != "running" && m["end_reason"].is_string())
            .collect();
        if let Some(metadata) = found.into_iter().next() {
            return metadata;
        }
        assert!(Instant::now() < deadline, "no ended session");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_timeout_ends_a_busy_session_with_its_message() {
    require_docker!();
    let hermes =
        Hermes::start(Options::default().configure(|c| c.server.session_timeout = Seconds::new(3)));
    let started = Instant::now();
    let (_client, mut shell) = root_shell(hermes.port).await;
    // Typing does not keep it alive: the limit is absolute.
    while started.elapsed() < Duration::from_secs(2) {
        shell.send("true\n").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(shell.read_to_close(Duration::from_secs(15)).await);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(2500) && elapsed < Duration::from_secs(12),
        "ended after {elapsed:?}"
    );
    assert!(
        shell
            .text()
            .ends_with("\r\nSession terminated, killing shell... ...killed.\r\n"),
        "{:?}",
        shell.text()
    );
    let metadata = ended_metadata(&hermes);
    assert_eq!(metadata["end_reason"], "timeout");
}

/// A loopback relay to `port` whose client-to-server direction can be frozen: the
/// client then looks like one that went away without closing.
async fn freezable_relay(port: u16) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let relay_port = listener.local_addr().expect("addr").port();
    let frozen = Arc::new(AtomicBool::new(false));
    let flag = frozen.clone();
    tokio::spawn(async move {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let Ok(server) = TcpStream::connect(("127.0.0.1", port)).await else {
            return;
        };
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            let _ = client_write.shutdown().await;
        });
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            if flag.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            match tokio::time::timeout(Duration::from_millis(50), client_read.read(&mut buffer))
                .await
            {
                Err(_) => continue,
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => {
                    if server_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    (relay_port, frozen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_end_a_session_whose_client_stopped_answering() {
    require_docker!();
    let hermes = Hermes::start(Options::default().configure(|c| {
        c.persona.client_alive_interval = Seconds::new(1);
        c.persona.client_alive_count_max = 2;
    }));
    let (relay, frozen) = freezable_relay(hermes.port).await;
    let (_client, mut shell) = root_shell(relay).await;
    // A client that answers keepalives stays, idle or not.
    assert!(
        !shell
            .read_until("__never__", 0, Duration::from_secs(4))
            .await
    );
    assert!(!shell.closed, "an answering client was dropped");

    frozen.store(true, Ordering::SeqCst);
    let since = Instant::now();
    assert!(shell.read_to_close(Duration::from_secs(20)).await);
    let waited = since.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(12),
        "dropped {waited:?} after the client went quiet"
    );
    let metadata = ended_metadata(&hermes);
    assert_eq!(metadata["end_reason"], "client_not_responding");
    let events = hermes.wait_for("cowrie.session.closed");
    assert!(events.has("cowrie.log.closed"));
}
