//! The failure delay of 20 failed password attempts, Hermes (its default timing) beside
//! a real Debian sshd (Debian's PAM configuration): the distributions must look alike.
//! Throughput, CPU and memory figures are in the `compare` bench.
//!
//! `cargo bench -p hermes --bench transport` (needs Docker, the target image and
//! openssh-server). Bounded in count and time; nothing is asserted.

use hermes_test_support::{client, harness, reference};
use std::sync::Arc;
use std::time::Instant;

use harness::{Hermes, Options};
use reference::ReferenceSshd;

const DELAY_SAMPLES: usize = 20;

/// Times `count` failed password attempts (client side: request to answer).
async fn failure_delays(port: u16, count: usize) -> Vec<f64> {
    let mut delays = Vec::new();
    while delays.len() < count {
        let config = Arc::new(russh::client::Config {
            nodelay: true,
            ..Default::default()
        });
        let Ok(mut handle) =
            russh::client::connect(config, ("127.0.0.1", port), client::AcceptAnyKey).await
        else {
            continue;
        };
        // Four attempts per connection stay below MaxAuthTries.
        for _ in 0..4 {
            if delays.len() >= count {
                break;
            }
            let started = Instant::now();
            match handle.authenticate_password("root", "wrong-password").await {
                Ok(result) if !result.success() => delays.push(started.elapsed().as_secs_f64()),
                _ => break,
            }
        }
    }
    delays
}

fn summary(name: &str, values: &mut [f64], unit: &str) {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    let median = values[n / 2];
    let mean = values.iter().sum::<f64>() / n as f64;
    println!(
        "{name:<44} n={n} min={:.3}{unit} median={median:.3}{unit} mean={mean:.3}{unit} max={:.3}{unit}",
        values[0],
        values[n - 1]
    );
    println!(
        "{:<44} {}",
        "",
        values
            .iter()
            .map(|v| format!("{v:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

fn main() {
    hermes_test_support::require_docker!();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let hermes = Hermes::start(Options {
        failure_delay_ms: 2000,
        ..Options::default()
    });
    let mut hermes_delays = runtime.block_on(failure_delays(hermes.port, DELAY_SAMPLES));
    drop(hermes);
    summary("failure delay, Hermes (s)", &mut hermes_delays, "");
    if let Some(sshd) = ReferenceSshd::start_with_pam(true) {
        let mut sshd_delays = runtime.block_on(failure_delays(sshd.port, DELAY_SAMPLES));
        summary(
            "failure delay, Debian sshd with PAM (s)",
            &mut sshd_delays,
            "",
        );
    }
}
