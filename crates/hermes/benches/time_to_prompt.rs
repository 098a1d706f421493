//! Time from "password accepted" to the first byte of the shell prompt:
//! - warm pool (a ready container is waiting);
//! - empty pool (the container is created on demand);
//! - returning source (its stopped container is started again);
//! - returning source whose box still lingers (`reuse.linger`), running or frozen.
//!
//! `cargo bench -p hermes --bench time_to_prompt` (needs Docker and the target image).
//! Starts Hermes on loopback, logs in with russh, prints the figures; nothing is
//! asserted.

use hermes_test_support::{client, harness};
use std::time::{Duration, Instant};

use harness::{Hermes, Options};

const LOGINS: usize = 20;
const ON_DEMAND_LOGINS: usize = 10;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn print(name: &str, values: &mut [f64]) {
    if values.is_empty() {
        println!("{name:<44} no samples");
        return;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{name:<44} n={} median={:.1} ms p95={:.1} ms min={:.1} ms max={:.1} ms",
        values.len(),
        percentile(values, 50.0),
        percentile(values, 95.0),
        values[0],
        values[values.len() - 1]
    );
}

/// Logs in, opens a shell, returns (time to the first prompt byte, session kept open).
async fn login_to_prompt(port: u16) -> (f64, client::Client, client::Shell) {
    let client = client::Client::login(port, "root", "toor").await;
    let accepted = Instant::now();
    let mut shell = client.shell(80, 24).await;
    assert!(
        shell.wait_for_bytes(0, Duration::from_secs(30)).await,
        "no prompt"
    );
    let took = accepted.elapsed().as_secs_f64() * 1000.0;
    (took, client, shell)
}

async fn close(mut shell: client::Shell, client: client::Client) {
    shell.send("exit\n").await;
    let _ = shell.read_to_close(Duration::from_secs(10)).await;
    drop(shell);
    drop(client);
}

fn main() {
    hermes_test_support::require_docker!();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    // Warm pool.
    let hermes = Hermes::start(Options {
        pool_size: 3,
        ..Options::default()
    });
    let mut warm = Vec::new();
    runtime.block_on(async {
        for _ in 0..LOGINS {
            let (took, client, shell) = login_to_prompt(hermes.port).await;
            warm.push(took);
            close(shell, client).await;
            // Let the pool refill: the figure is for a warm pool.
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    });
    drop(hermes);

    // Empty pool: with one ready container, a second login right behind the first
    // finds none (the refill takes longer than a login).
    let hermes = Hermes::start(Options {
        pool_size: 1,
        ..Options::default()
    });
    let mut empty = Vec::new();
    runtime.block_on(async {
        for _ in 0..ON_DEMAND_LOGINS {
            let first = client::Client::login(hermes.port, "root", "toor").await;
            let (took, client, shell) = login_to_prompt(hermes.port).await;
            let on_demand = hermes
                .events_of("hermes.container.allocate")
                .last()
                .is_some_and(|e| e["source"] == "on_demand");
            if on_demand {
                empty.push(took);
            }
            close(shell, client).await;
            drop(first);
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    });
    drop(hermes);

    // Returning source: its container is stopped between visits and started again.
    let hermes = Hermes::start(Options {
        pool_size: 1,
        reuse: true,
        ..Options::default()
    });
    let mut returning = Vec::new();
    runtime.block_on(async {
        let (_, client, shell) = login_to_prompt(hermes.port).await;
        close(shell, client).await;
        for _ in 0..LOGINS {
            // Wait until the container is stopped, so each visit starts it again.
            let deadline = Instant::now() + Duration::from_secs(20);
            while hermes.containers(Some("exited")).is_empty() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let (took, client, shell) = login_to_prompt(hermes.port).await;
            returning.push(took);
            close(shell, client).await;
        }
    });

    // Returning source within the linger time: its box runs on (or waits frozen).
    let mut lingering = Vec::new();
    let mut frozen = Vec::new();
    for (freeze, figures) in [(false, &mut lingering), (true, &mut frozen)] {
        let hermes = Hermes::start(
            Options {
                pool_size: 1,
                reuse: true,
                ..Options::default()
            }
            .configure(move |c| {
                c.container_pool.reuse.linger = hermes_core::config::Seconds::new(600);
                c.container_pool.reuse.freeze_lingering = freeze;
            }),
        );
        runtime.block_on(async {
            let (_, client, shell) = login_to_prompt(hermes.port).await;
            close(shell, client).await;
            for _ in 0..LOGINS {
                // The session's end (its capture pass, the freeze) is over.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let (took, client, shell) = login_to_prompt(hermes.port).await;
                figures.push(took);
                close(shell, client).await;
            }
        });
    }

    print("password accepted -> prompt, warm pool", &mut warm);
    print("password accepted -> prompt, empty pool", &mut empty);
    print(
        "password accepted -> prompt, returning source",
        &mut returning,
    );
    print(
        "password accepted -> prompt, returning, box lingering",
        &mut lingering,
    );
    print(
        "password accepted -> prompt, returning, box frozen",
        &mut frozen,
    );
}
