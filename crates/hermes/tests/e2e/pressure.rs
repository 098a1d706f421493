//! Windowing and back-pressure: a client that stops reading holds the container back
//! instead of filling Hermes's memory, and a container that floods output does not
//! starve the other sessions. The figures are printed; the bounds asserted are loose
//! (tens of times what a quiet machine measures).

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::client::{Shell, root_shell};
use crate::events::Events;
use crate::harness::{Hermes, Options};

#[test]
fn a_client_that_stops_reading_does_not_make_hermes_buffer() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let before = hermes.rss_kib();
    // stdout is a pipe nobody reads: the OpenSSH client stops taking data once it
    // and its channel window are full.
    let mut child = hermes
        .ssh("root", &["toor"], "password")
        .arg("cat /dev/zero")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ssh");
    // The flood is flowing: the first MiB arrives before the client stops reading.
    let mut out = child.stdout.take().expect("ssh stdout");
    let mut first = vec![0u8; 1 << 20];
    let started = std::io::Read::read_exact(&mut out, &mut first);
    assert!(started.is_ok(), "the flood did not start: {started:?}");
    let mut samples = Vec::new();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_secs(1));
        samples.push(hermes.rss_kib());
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(out);
    let peak = samples.iter().copied().max().unwrap_or(0);
    println!(
        "non-reading client: Hermes RSS {before} KiB before, samples {samples:?} KiB, growth {} KiB",
        peak.saturating_sub(before)
    );
    // A flood of /dev/zero for 8 s is gigabytes; held back, it is a few windows.
    assert!(
        peak < before + 64 * 1024,
        "Hermes grew from {before} to {peak} KiB"
    );
    let later = samples[samples.len() - 1];
    let earlier = samples[2];
    assert!(
        later < earlier + 16 * 1024,
        "still growing: {earlier} -> {later} KiB"
    );
    // The session still ends cleanly once the client goes.
    hermes.wait_for("cowrie.session.closed");
}

/// Round trips of `echo` in an interactive shell, in microseconds, sorted.
async fn echo_round_trips(shell: &mut Shell, count: usize) -> Vec<u128> {
    let mut times = Vec::new();
    for n in 0..count {
        let mark = shell.received.len();
        let needle = format!("pong{}", n + 1000);
        let started = Instant::now();
        shell.send(&format!("echo pong$(({n}+1000))\n")).await;
        assert!(
            shell
                .read_until(&needle, mark, Duration::from_secs(10))
                .await,
            "no answer within 10 s"
        );
        times.push(started.elapsed().as_micros());
    }
    times.sort_unstable();
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_flooding_output_does_not_starve_another_session() {
    require_docker!();
    let hermes = Hermes::start(Options {
        pool_size: 2,
        ..Options::default()
    });
    let (_quiet_client, mut quiet) = root_shell(hermes.port).await;
    let baseline = echo_round_trips(&mut quiet, 10).await;

    // Another connection reads a flood as fast as it can.
    let mut flood = hermes
        .ssh("root", &["toor"], "password")
        .arg("cat /dev/zero")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ssh");
    let mut flood_out = flood.stdout.take().expect("flood stdout");
    let counter = std::thread::spawn(move || {
        let mut buffer = vec![0u8; 1 << 16];
        let mut total = 0usize;
        while let Ok(n) = std::io::Read::read(&mut flood_out, &mut buffer) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    // The flood's first 10 MiB of zeros go into its recording as JSON escapes (six
    // bytes each, up to the 64 MiB cap), which holds a debug build near 5 MB/s: give it
    // three seconds to be in full flow before measuring.
    std::thread::sleep(Duration::from_secs(3));
    let measured = Instant::now();
    let under_flood = echo_round_trips(&mut quiet, 20).await;
    let flood_seconds = measured.elapsed().as_secs_f64() + 3.0;
    let _ = flood.kill();
    let _ = flood.wait();
    let flooded = counter.join().unwrap_or(0);
    println!(
        "echo round trip: median {} us alone, {} us beside a session flooding {:.0} MB/s (max {} us)",
        baseline[baseline.len() / 2],
        under_flood[under_flood.len() / 2],
        flooded as f64 / flood_seconds / 1e6,
        under_flood[under_flood.len() - 1]
    );
    assert!(
        flooded > 10 << 20,
        "the flood did not flow: {flooded} bytes"
    );
    // Not starved: the quiet session's echoes come back promptly beside the flood.
    let median = under_flood[under_flood.len() / 2];
    let max = under_flood[under_flood.len() - 1];
    assert!(
        median < 100_000,
        "echo round trip beside the flood: median {median} us"
    );
    assert!(
        max < 1_000_000,
        "echo round trip beside the flood: max {max} us"
    );
    let events = hermes.events();
    assert_eq!(
        events.count_of("hermes.container.allocate"),
        2,
        "two sessions, two containers"
    );
}
