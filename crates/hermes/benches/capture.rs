//! What file capture costs:
//! - the final pass: time from the client's disconnect to `cowrie.session.closed`
//!   (which follows the last capture pass) for sessions that left 0, 10 and 100
//!   files of 4 KiB;
//! - the store: throughput of copying one 16 MiB file out of a container.
//!
//! `cargo bench -p hermes --bench capture` (needs Docker and the target image).
//! Prints the figures; nothing is asserted.

use hermes_test_support::{client, harness};
use std::time::{Duration, Instant};

use harness::{Hermes, Options};

const ROUNDS: usize = 5;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Runs `command` in a session, and returns the ms from its end to session.closed.
async fn closing_time(hermes: &Hermes, command: &str, closed_before: usize) -> f64 {
    let client = client::Client::login(hermes.port, "root", "toor").await;
    let mut exec = client.exec(command).await;
    assert!(exec.read_to_close(Duration::from_secs(60)).await);
    drop(exec);
    drop(client);
    let ended = Instant::now();
    loop {
        let closed = hermes.events_of("cowrie.session.closed").len();
        if closed > closed_before {
            return ended.elapsed().as_secs_f64() * 1000.0;
        }
        assert!(
            ended.elapsed() < Duration::from_secs(120),
            "no session.closed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn main() {
    hermes_test_support::require_docker!();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let hermes = Hermes::start(
        Options {
            pool_size: 2,
            ..Options::default()
        }
        .configure(|c| c.capture.max_files_per_session = 1000),
    );
    let mut closed = 0;
    runtime.block_on(async {
        for files in [0usize, 10, 100] {
            let command = format!(
                "mkdir -p /tmp/b; for i in $(seq 1 {files}); do head -c 4096 /dev/urandom > /tmp/b/f$i; done"
            );
            let mut times = Vec::new();
            for _ in 0..ROUNDS {
                times.push(closing_time(&hermes, &command, closed).await);
                closed += 1;
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            println!(
                "disconnect -> session.closed (final capture), {files:>3} new files: median {:.0} ms over {ROUNDS}",
                median(&mut times)
            );
        }
        let mut times = Vec::new();
        for _ in 0..ROUNDS {
            times.push(
                closing_time(&hermes, "head -c 16777216 /dev/urandom > /tmp/big", closed).await,
            );
            closed += 1;
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let ms = median(&mut times);
        println!("disconnect -> session.closed, one 16 MiB file: median {ms:.0} ms");
    });
}
