//! Channel figures for Hermes and a real Debian sshd on loopback, both logged in with
//! the same key by the real OpenSSH client:
//! - exec round trip: `ssh host true`, wall time of the whole client run (connect, key
//!   exchange, authentication, exec, exit), 20 runs each; Hermes with a warm pool;
//! - scp throughput: a 100 MB file up and down (SFTP protocol, OpenSSH 9's default).
//!
//! `cargo bench -p hermes --bench channels` (needs Docker, the target image and
//! openssh-server). Bounded in count and time; nothing is asserted.

#[path = "../tests/e2e/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "../tests/e2e/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../tests/e2e/reference.rs"]
#[allow(dead_code)]
mod reference;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{Hermes, Options};
use reference::ReferenceSshd;

const EXEC_RUNS: usize = 20;
const FILE_BYTES: usize = 100 << 20;
const COPY_RUNS: usize = 3;

/// Client options shared by ssh and scp: the key, no host key checks, quiet.
fn client_options(command: &mut Command, key: &Path, port: u16) {
    command
        .args(["-F", "/dev/null", "-i"])
        .arg(key)
        .args(["-o", &format!("Port={port}")])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"])
        .args(["-o", "PreferredAuthentications=publickey"])
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null());
}

fn exec_true(key: &Path, port: u16) -> Option<f64> {
    let mut command = Command::new("ssh");
    client_options(&mut command, key, port);
    command.arg("root@127.0.0.1").arg("true");
    let started = Instant::now();
    let status = command.stderr(Stdio::null()).status().ok()?;
    status.success().then(|| started.elapsed().as_secs_f64())
}

fn scp(key: &Path, port: u16, from: &str, to: &str) -> Option<f64> {
    let mut command = Command::new("scp");
    client_options(&mut command, key, port);
    command.arg(from).arg(to);
    let started = Instant::now();
    let output = command.output().ok()?;
    if !output.status.success() {
        eprintln!(
            "scp {from} {to}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        return None;
    }
    Some(started.elapsed().as_secs_f64())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn report(name: &str, values: &mut [f64], unit: &str, scale: f64) {
    if values.is_empty() {
        println!("{name:<40} no successful run");
        return;
    }
    let med = median(values);
    println!(
        "{name:<40} n={} median={:.1}{unit} min={:.1}{unit} max={:.1}{unit}",
        values.len(),
        med * scale,
        values[0] * scale,
        values[values.len() - 1] * scale
    );
}

/// Up and down `COPY_RUNS` times; throughput in MB/s of each run (whole client run).
fn copy_rates(key: &Path, port: u16, local: &Path, dir: &Path) -> (Vec<f64>, Vec<f64>) {
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let megabytes = FILE_BYTES as f64 / 1e6;
    for run in 0..COPY_RUNS {
        let remote = format!("root@127.0.0.1:/tmp/bench-{run}.bin");
        if let Some(seconds) = scp(key, port, &local.to_string_lossy(), &remote) {
            up.push(megabytes / seconds);
        }
        let back: PathBuf = dir.join(format!("back-{run}.bin"));
        if let Some(seconds) = scp(key, port, &remote, &back.to_string_lossy()) {
            down.push(megabytes / seconds);
        }
        let same = std::fs::metadata(&back).is_ok_and(|m| m.len() as usize == FILE_BYTES);
        if !same {
            eprintln!("run {run}: the copy back is incomplete");
        }
        let _ = std::fs::remove_file(&back);
    }
    (up, down)
}

fn main() {
    harness::raise_fd_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("id_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let public = std::fs::read_to_string(dir.path().join("id_ed25519.pub")).expect("pub");
    let authorized = dir.path().join("authorized_keys");
    std::fs::write(&authorized, public).expect("authorized_keys");
    let local = dir.path().join("payload.bin");
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut bytes = Vec::with_capacity(FILE_BYTES);
    while bytes.len() < FILE_BYTES {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    std::fs::write(&local, &bytes).expect("payload");
    drop(bytes);

    // The reference: Debian's sshd, root by key from a file outside any home.
    let sshd = ReferenceSshd::start_with(
        false,
        &format!(
            "AuthorizedKeysFile {}\nStrictModes no\n",
            authorized.display()
        ),
    )
    .expect("openssh-server");
    // Hermes: any key logs in; a warm pool of four, each connection a fresh machine.
    let hermes = Hermes::start(Options {
        accept_public_keys: true,
        pool_size: 4,
        ..Options::default()
    });

    let mut sshd_exec: Vec<f64> = (0..EXEC_RUNS)
        .filter_map(|_| exec_true(&key, sshd.port))
        .collect();
    let mut hermes_exec = Vec::new();
    for _ in 0..EXEC_RUNS {
        // Let the pool refill: the figure is for a warm pool.
        std::thread::sleep(Duration::from_millis(1500));
        if let Some(seconds) = exec_true(&key, hermes.port) {
            hermes_exec.push(seconds);
        }
    }
    println!("exec round trip, `ssh host true` (whole client run, {EXEC_RUNS} runs):");
    report("  debian sshd", &mut sshd_exec, " ms", 1000.0);
    report("  hermes (warm pool)", &mut hermes_exec, " ms", 1000.0);

    let (mut sshd_up, mut sshd_down) = copy_rates(&key, sshd.port, &local, dir.path());
    // One connection's machine for the uploads and downloads: reuse per source.
    drop(hermes);
    let hermes = Hermes::start(Options {
        accept_public_keys: true,
        pool_size: 2,
        reuse: true,
        ..Options::default()
    });
    let (mut hermes_up, mut hermes_down) = copy_rates(&key, hermes.port, &local, dir.path());
    println!(
        "scp of {} MB, SFTP protocol (whole client run, {COPY_RUNS} runs):",
        FILE_BYTES >> 20
    );
    report("  debian sshd upload", &mut sshd_up, " MB/s", 1.0);
    report("  hermes upload", &mut hermes_up, " MB/s", 1.0);
    report("  debian sshd download", &mut sshd_down, " MB/s", 1.0);
    report("  hermes download", &mut hermes_down, " MB/s", 1.0);
    println!("hermes RSS after the copies: {} KiB", hermes.rss_kib());
}
