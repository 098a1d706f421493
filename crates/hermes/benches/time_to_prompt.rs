//! Time from "password accepted" to the first byte of the shell prompt, warm pool.
//!
//! `cargo bench -p hermes --bench time_to_prompt` (needs Docker and the target image).
//! Starts Hermes on loopback, logs in LOGINS times one after another with russh, and
//! prints the figures; nothing is asserted.

#[path = "../tests/e2e/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "../tests/e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::{Duration, Instant};

use harness::{Hermes, Options};

const LOGINS: usize = 20;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() {
    if !harness::require_docker() {
        return;
    }
    let hermes = Hermes::start(Options {
        pool_size: 3,
        ..Options::default()
    });
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut to_prompt = Vec::new();
    let mut login = Vec::new();
    runtime.block_on(async {
        for _ in 0..LOGINS {
            let started = Instant::now();
            let client = client::Client::login(hermes.port, "root", "toor").await;
            let accepted = Instant::now();
            let mut shell = client.shell(80, 24).await;
            assert!(
                shell.wait_for_bytes(0, Duration::from_secs(20)).await,
                "no prompt"
            );
            to_prompt.push(accepted.elapsed().as_secs_f64() * 1000.0);
            login.push((accepted - started).as_secs_f64() * 1000.0);
            shell.send("exit\n").await;
            let _ = shell.read_to_close(Duration::from_secs(10)).await;
            drop(shell);
            drop(client);
            // Let the pool refill: the figure is for a warm pool.
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    });
    for (name, values) in [
        ("password accepted -> first prompt byte", &mut to_prompt),
        ("connect + handshake + auth", &mut login),
    ] {
        values.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{name:<40} n={} median={:.1} ms p95={:.1} ms min={:.1} ms max={:.1} ms",
            values.len(),
            percentile(values, 50.0),
            percentile(values, 95.0),
            values[0],
            values[values.len() - 1]
        );
    }
}
