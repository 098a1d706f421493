//! The box's resources as a small VPS shows them: with LXCFS, `free`, /proc/meminfo,
//! /proc/swaps, `nproc`, /proc/cpuinfo and /proc/uptime are the box's own (256 MiB,
//! no swap, the CPU it gets, its own uptime), and a restarted LXCFS is survived.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hermes_core::config::{CpuPinning, LxcfsMode};

use crate::harness::{Hermes, Options, succeeded};

/// Where scripts/ensure-lxcfs.sh mounts LXCFS.
const LXCFS: &str = "/var/lib/lxcfs";
const LIMIT: u64 = 256 << 20;

/// True when LXCFS serves at `/var/lib/lxcfs`; under `CI=true` its absence fails.
fn require_lxcfs() -> bool {
    match hermes_sandbox::lxcfs::probe_blocking(Path::new(LXCFS)) {
        Ok(_) => true,
        Err(problem) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("LXCFS missing ({problem}): scripts/test.sh starts it (scripts/ensure-lxcfs.sh)")
        }
        Err(problem) => {
            eprintln!("SKIPPED: LXCFS not running ({problem}); scripts/ensure-lxcfs.sh starts it");
            false
        }
    }
}

/// What the box says about itself, one login with the real OpenSSH client.
struct Seen {
    free_total: u64,
    swap_lines: usize,
    nproc: usize,
    processors: usize,
    uptime: f64,
    mem_total_kb: u64,
    online: String,
}

const PROBE: &str = "free -b | awk '/^Mem:/{print \"free \" $2}'; \
    echo \"swaps $(wc -l < /proc/swaps)\"; echo \"nproc $(nproc)\"; \
    echo \"processors $(grep -c ^processor /proc/cpuinfo)\"; \
    echo \"uptime $(cut -d' ' -f1 /proc/uptime)\"; \
    awk '/^MemTotal:/{print \"memtotal \" $2}' /proc/meminfo; \
    echo \"online $(cat /sys/devices/system/cpu/online)\"";

fn look(hermes: &Hermes) -> Seen {
    let out = succeeded(hermes.ssh("root", &["toor"], "password").arg(PROBE));
    let field = |name: &str| -> String {
        out.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in:\n{out}"))
            .trim()
            .to_owned()
    };
    let number = |name: &str| -> u64 {
        field(name)
            .parse()
            .unwrap_or_else(|_| panic!("{name} not a number in:\n{out}"))
    };
    Seen {
        free_total: number("free"),
        swap_lines: number("swaps") as usize,
        nproc: number("nproc") as usize,
        processors: number("processors") as usize,
        uptime: field("uptime").parse().expect("uptime"),
        mem_total_kb: number("memtotal"),
        online: field("online"),
    }
}

fn host_uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .expect("host uptime")
}

fn host_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The box's memory, swap and uptime are its own; `check` tells the CPU side.
fn assert_own_resources(seen: &Seen) {
    assert_eq!(seen.free_total, LIMIT, "free -b total is the memory limit");
    assert_eq!(seen.mem_total_kb, LIMIT / 1024, "MemTotal is the limit");
    assert_eq!(seen.swap_lines, 1, "/proc/swaps has its header only");
    let host = host_uptime();
    assert!(
        seen.uptime < 300.0 && seen.uptime < host,
        "the box's uptime {} (host {host})",
        seen.uptime
    );
}

fn metrics(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

fn with_lxcfs(mode: LxcfsMode, path: PathBuf, pinning: CpuPinning) -> Options {
    Options {
        metrics: true,
        ..Options::default()
    }
    .configure(move |config| {
        let security = &mut config.container_pool.security;
        security.lxcfs.mode = mode;
        security.lxcfs.path = path.clone();
        security.cpu_pinning = pinning;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_box_sees_its_own_memory_one_cpu_and_its_own_uptime() {
    require_docker!();
    if !require_lxcfs() {
        return;
    }
    let hermes = Hermes::start(with_lxcfs(
        LxcfsMode::Required,
        LXCFS.into(),
        CpuPinning::Core,
    ));
    let seen = look(&hermes);
    assert_own_resources(&seen);
    // One core: sched_getaffinity (nproc) and LXCFS's cpuinfo agree.
    assert_eq!((seen.nproc, seen.processors), (1, 1), "nproc, cpuinfo");
    assert_eq!(seen.online, "0", "the one core LXCFS shows");
    let metrics = metrics(hermes.metrics_port());
    assert!(
        metrics.contains("hermes_lxcfs_active{mode=\"required\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpinned_box_shows_its_quota_in_cpuinfo_and_the_hosts_cores_to_nproc() {
    require_docker!();
    if !require_lxcfs() {
        return;
    }
    let hermes = Hermes::start(with_lxcfs(LxcfsMode::Auto, LXCFS.into(), CpuPinning::Off));
    let seen = look(&hermes);
    assert_own_resources(&seen);
    // LXCFS --enable-cfs counts the 0.5-core quota as one CPU; the affinity mask is
    // the host's: the mismatch `cpu_pinning: core` avoids.
    assert_eq!(seen.processors, 1, "cpuinfo shows the quota");
    assert_eq!(seen.nproc, host_cores(), "nproc shows the host's cores");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_lxcfs_boxes_start_and_the_operator_is_told() {
    require_docker!();
    let empty = tempfile::tempdir().expect("tempdir");
    let hermes = Hermes::start(with_lxcfs(
        LxcfsMode::Auto,
        empty.path().to_path_buf(),
        CpuPinning::Core,
    ));
    let seen = look(&hermes);
    // The host's memory: the box started all the same.
    assert_ne!(seen.free_total, LIMIT, "no LXCFS, the host's memory");
    assert_eq!(seen.nproc, 1, "pinned all the same");
    let metrics = metrics(hermes.metrics_port());
    assert!(
        metrics.contains("hermes_lxcfs_active{mode=\"auto\"} 0"),
        "{metrics}"
    );
    assert!(
        hermes.output().contains("LXCFS not usable"),
        "{}",
        hermes.output()
    );
}

/// A private LXCFS on a temporary mount point, so restarting it disturbs nobody.
struct PrivateLxcfs {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateLxcfs {
    fn start() -> PrivateLxcfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut lxcfs = PrivateLxcfs { dir, child: None };
        lxcfs.spawn();
        lxcfs
    }

    fn spawn(&mut self) {
        let child = Command::new("lxcfs")
            .args(["--enable-cfs", "--enable-loadavg", "-p"])
            .arg(self.dir.path().with_extension("pid"))
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("lxcfs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while hermes_sandbox::lxcfs::probe_blocking(self.dir.path()).is_err() {
            assert!(Instant::now() < deadline, "lxcfs did not mount");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Killed hard: its mount stays, stale ("Transport endpoint is not connected").
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn unmount(&self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for PrivateLxcfs {
    fn drop(&mut self) {
        self.kill();
        self.unmount();
        let _ = std::fs::remove_file(self.dir.path().with_extension("pid"));
    }
}

fn running(hermes: &Hermes) -> Vec<String> {
    hermes.containers(Some("running"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_lxcfs_replaces_the_warm_box_and_new_boxes_use_it() {
    require_docker!();
    if !require_lxcfs() {
        return;
    }
    let mut lxcfs = PrivateLxcfs::start();
    let hermes = Hermes::start(with_lxcfs(
        LxcfsMode::Auto,
        lxcfs.dir.path().to_path_buf(),
        CpuPinning::Core,
    ));
    assert_own_resources(&look(&hermes));
    // The session's box stopped; the one running is the warm one.
    let deadline = Instant::now() + Duration::from_secs(60);
    while running(&hermes).len() != 1 || hermes.containers(Some("exited")).is_empty() {
        assert!(Instant::now() < deadline, "no warm box");
        std::thread::sleep(Duration::from_millis(200));
    }
    let warm = running(&hermes);

    lxcfs.kill();
    lxcfs.unmount();
    lxcfs.spawn();
    // The warm box's files went stale with the old mount: it is replaced.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = running(&hermes);
        if now.len() == 1 && now != warm {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "warm box not replaced: {warm:?} -> {now:?}\n{}",
            hermes.output()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_own_resources(&look(&hermes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_source_whose_kept_box_needs_a_stopped_lxcfs_gets_a_new_box() {
    require_docker!();
    if !require_lxcfs() {
        return;
    }
    let mut lxcfs = PrivateLxcfs::start();
    let hermes = Hermes::start(Options {
        reuse: true,
        ..with_lxcfs(
            LxcfsMode::Auto,
            lxcfs.dir.path().to_path_buf(),
            CpuPinning::Core,
        )
    });
    assert_own_resources(&look(&hermes));
    // The session's box is stopped and kept for the source.
    let deadline = Instant::now() + Duration::from_secs(60);
    while hermes.containers(Some("exited")).is_empty() {
        assert!(Instant::now() < deadline, "the box was not kept");
        std::thread::sleep(Duration::from_millis(200));
    }
    lxcfs.kill();
    lxcfs.unmount();
    // Its binds' sources are gone: it cannot start, and the source still logs in.
    let seen = look(&hermes);
    assert_ne!(seen.free_total, LIMIT, "a new box, without LXCFS");
    assert!(
        hermes
            .output()
            .contains("a kept box cannot start without LXCFS"),
        "{}",
        hermes.output()
    );
}
