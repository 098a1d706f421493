//! Authentication throughput and CPU cost: parallel clients, each connecting (key
//! exchange) and failing password attempts until the server disconnects, for a fixed
//! time; repeated runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::clients::connect;
use crate::procfs;
use crate::report::Figures;
use crate::stats::Samples;
use crate::target::{Target, loopback_source};

/// Failed attempts per connection: below MaxAuthTries (6), as bots do.
const ATTEMPTS_PER_CONNECTION: usize = 5;

async fn one_run(target: &Target, parallel: usize, seconds: u64) -> (u64, u64) {
    let (addr, _) = target.auth_endpoint();
    let attempts = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for client in 0..parallel {
        let attempts = Arc::clone(&attempts);
        let connections = Arc::clone(&connections);
        let source = target.on_loopback().then(|| loopback_source(client));
        let user = target.user.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let Some(mut handle) = connect(addr, source).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                connections.fetch_add(1, Ordering::Relaxed);
                for _ in 0..ATTEMPTS_PER_CONNECTION {
                    match handle
                        .authenticate_password(user.clone(), "wrong-password")
                        .await
                    {
                        Ok(result) if !result.success() => {
                            attempts.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => break,
                    }
                    if Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    (
        attempts.load(Ordering::Relaxed),
        connections.load(Ordering::Relaxed),
    )
}

/// Waits until the tree is back to its listener alone, so that the CPU of every
/// connection's process has been reaped into it.
fn wait_for_children(pid: u32, baseline: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while procfs::tree_size(pid) > baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub async fn measure(
    target: &Target,
    parallel: usize,
    seconds: u64,
    runs: usize,
    figures: &mut Figures,
) {
    let (_, pid) = target.auth_endpoint();
    let baseline = pid.map(procfs::tree_size).unwrap_or(0);
    let mut rates = Vec::new();
    let mut cpu_per_attempt = Vec::new();
    for run in 0..runs {
        let cpu_before = pid.map(procfs::tree_cpu_seconds);
        let started = Instant::now();
        let (attempts, connections) = one_run(target, parallel, seconds).await;
        let elapsed = started.elapsed().as_secs_f64();
        if let Some(pid) = pid {
            wait_for_children(pid, baseline);
        }
        let cpu = match (pid, cpu_before) {
            (Some(pid), Some(before)) => Some(procfs::tree_cpu_seconds(pid) - before),
            _ => None,
        };
        let rate = attempts as f64 / elapsed;
        rates.push(rate);
        if let Some(cpu) = cpu {
            cpu_per_attempt.push(cpu * 1e6 / attempts.max(1) as f64);
        }
        println!(
            "  {} run {}: {attempts} failed attempts over {connections} connections in {elapsed:.1} s = {rate:.0}/s{}",
            target.name,
            run + 1,
            cpu.map(|c| format!(", server CPU {c:.2} s"))
                .unwrap_or_default()
        );
    }
    figures.add("auth_rate", Samples::new(rates));
    if !cpu_per_attempt.is_empty() {
        figures.add("auth_cpu", Samples::new(cpu_per_attempt));
    }
}
