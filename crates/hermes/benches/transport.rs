//! Transport figures for Hermes and a real Debian sshd on loopback:
//! - the failure delay of 20 failed password attempts (Hermes with its default timing,
//!   sshd with Debian's PAM configuration);
//! - Hermes's memory with 2,000 idle unauthenticated connections held;
//! - failed password attempts per second with 64 parallel clients, failure delay 0,
//!   and the server's CPU time per attempt.
//!
//! `cargo bench -p hermes --bench transport` (needs Docker, the target image and
//! openssh-server). Every load is bounded in count and time; nothing is asserted.

#[path = "../tests/e2e/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "../tests/e2e/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../tests/e2e/reference.rs"]
#[allow(dead_code)]
mod reference;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness::{Hermes, Options};
use reference::ReferenceSshd;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

const DELAY_SAMPLES: usize = 20;
const IDLE_CONNECTIONS: usize = 2000;
const PARALLEL: usize = 64;
const LOAD_SECONDS: u64 = 10;

/// Admission caps raised so that the benchmark's single source is not refused.
const OPEN_ADMISSION: &str = "  max_startups: \"10000:30:10000\"\n  per_source_max_startups: 10000\n  max_connections_per_source: 10000\n  max_connections: 10000\n";

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line (12 and 13 after the name).
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz.max(1.0)
}

fn sshd_pid(port: u16) -> Option<u32> {
    let output = std::process::Command::new("pgrep")
        .args(["-f", &format!("sshd -D -e -f .* -p {port} ")])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

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

/// Holds `count` connections that never send a byte (or only a version line).
async fn hold_idle(port: u16, count: usize, version_line: bool) -> Vec<tokio::net::TcpStream> {
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut held = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(60);
    while held.len() < count && Instant::now() < deadline {
        let Ok(socket) = TcpSocket::new_v4() else {
            break;
        };
        if let Ok(mut stream) = socket.connect(target).await {
            if version_line {
                let _ = stream.write_all(b"SSH-2.0-idle_1.0\r\n").await;
            }
            held.push(stream);
        }
    }
    held
}

/// Failed attempts per second from `PARALLEL` clients for `LOAD_SECONDS`.
async fn auth_load(port: u16) -> u64 {
    let attempts = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(LOAD_SECONDS);
    let mut tasks = Vec::new();
    for _ in 0..PARALLEL {
        let attempts = Arc::clone(&attempts);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let Ok(mut handle) = client::connect(port).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                // Five failures, then the server's MaxAuthTries disconnect.
                for _ in 0..5 {
                    match handle.authenticate_password("root", "wrong-password").await {
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
    attempts.load(Ordering::Relaxed)
}

fn main() {
    if !harness::require_docker() {
        return;
    }
    harness::raise_fd_limit();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    // 1. Failure delay distribution.
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

    // 2. Memory with idle unauthenticated connections.
    let hermes = Hermes::start(Options {
        server_extra: OPEN_ADMISSION,
        ..Options::default()
    });
    let idle = hermes.rss_kib();
    let held = runtime.block_on(hold_idle(hermes.port, IDLE_CONNECTIONS, false));
    std::thread::sleep(Duration::from_millis(500));
    let silent = hermes.rss_kib();
    let silent_count = held.len();
    drop(held);
    std::thread::sleep(Duration::from_millis(500));
    let held = runtime.block_on(hold_idle(hermes.port, IDLE_CONNECTIONS, true));
    std::thread::sleep(Duration::from_millis(1000));
    let versioned = hermes.rss_kib();
    println!(
        "Hermes RSS: {idle} KiB idle; {silent} KiB with {silent_count} silent connections ({:.1} KiB each); \
         {versioned} KiB with {} connections past their version line ({:.1} KiB each)",
        silent.saturating_sub(idle) as f64 / silent_count.max(1) as f64,
        held.len(),
        versioned.saturating_sub(idle) as f64 / held.len().max(1) as f64,
    );
    drop(held);
    drop(hermes);

    // 3. Authentication throughput and CPU per attempt, failure delay 0.
    let hermes = Hermes::start(Options {
        server_extra: OPEN_ADMISSION,
        failure_delay_ms: 0,
        ..Options::default()
    });
    let cpu_before = cpu_seconds(hermes.pid());
    let started = Instant::now();
    let attempts = runtime.block_on(auth_load(hermes.port));
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(hermes.pid()) - cpu_before;
    println!(
        "Hermes: {attempts} failed attempts in {elapsed:.1} s from {PARALLEL} clients = {:.0}/s; server CPU {cpu:.2} s = {:.0} us per attempt",
        attempts as f64 / elapsed,
        cpu * 1e6 / attempts.max(1) as f64
    );
    drop(hermes);
    if let Some(sshd) = ReferenceSshd::start() {
        let pid = sshd_pid(sshd.port);
        let started = Instant::now();
        let attempts = runtime.block_on(auth_load(sshd.port));
        let elapsed = started.elapsed().as_secs_f64();
        // sshd forks per connection; the listener's own CPU is not the whole cost.
        let listener_cpu = pid.map(cpu_seconds).unwrap_or(0.0);
        println!(
            "sshd (UsePAM no): {attempts} failed attempts in {elapsed:.1} s from {PARALLEL} clients = {:.0}/s (listener CPU {listener_cpu:.2} s; per-connection children not counted)",
            attempts as f64 / elapsed
        );
    }
}
