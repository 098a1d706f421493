//! The pool through caps, failures, retention, an engine restart and a filtering TCP
//! proxy in front of the engine.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::Client;
use crate::events::Events;
use crate::harness::{Hermes, Options, image, read_cast};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_containers_caps_running_containers_and_refuses_with_a_message() {
    require_docker!();
    let hermes = Hermes::start(
        Options {
            pool_size: 1,
            ..Options::default()
        }
        .configure(|c| c.container_pool.max_containers = 2),
    );
    let a = Client::login(hermes.port, "root", "toor").await;
    let mut shell_a = a.shell(80, 24).await;
    assert!(shell_a.read_until("# ", 0, Duration::from_secs(20)).await);
    let b = Client::login(hermes.port, "admin", "admin").await;
    let mut shell_b = b.shell(80, 24).await;
    assert!(
        shell_b.read_until("$ ", 0, Duration::from_secs(20)).await,
        "{}",
        shell_b.text()
    );
    assert_eq!(hermes.containers(Some("running")).len(), 2, "the cap holds");
    // A third: logged in, then told the machine is out of processes, then closed.
    let c = Client::login(hermes.port, "admin", "s3cret").await;
    let mut shell_c = c.shell(80, 24).await;
    assert!(
        shell_c
            .read_until(
                "-bash: fork: retry: Resource temporarily unavailable",
                0,
                Duration::from_secs(20)
            )
            .await,
        "{}",
        shell_c.text()
    );
    assert!(shell_c.read_to_close(Duration::from_secs(10)).await);
    let events = tokio::task::block_in_place(|| {
        hermes.wait_for_events("the refusal", |events| {
            events.of("hermes.session.error").into_iter().any(|e| {
                e["error"]
                    .as_str()
                    .is_some_and(|m| m.contains("max_containers (2) reached"))
            })
        })
    });
    assert_eq!(events.count_of("hermes.container.allocate"), 2);
    assert_eq!(hermes.containers(Some("running")).len(), 2);
}

/// An image whose command does not exist: every container creates and fails to start.
/// Made once and reused (each `docker import` makes a new image and leaves the one it
/// untags dangling); a lock keeps tests running at once from importing it twice.
pub fn broken_image() -> String {
    const TAG: &str = "hermes-test-broken:latest";
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("placeholder"), "x").expect("file");
    let lock = std::env::temp_dir().join("hermes-test-broken.lock");
    let status = Command::new("flock")
        .arg(&lock)
        .args(["bash", "-c"])
        .arg(format!(
            "docker image inspect {TAG} > /dev/null 2>&1 || tar -C {} -c . | docker import --change 'CMD [\"/nonexistent\"]' - {TAG} > /dev/null",
            dir.path().display()
        ))
        .status()
        .expect("docker import");
    assert!(status.success());
    TAG.to_owned()
}

#[test]
fn a_failing_create_is_retried_with_backoff_and_leaves_nothing_half_made() {
    require_docker!();
    let image = broken_image();
    let hermes = Hermes::start_unready(Options {
        image,
        ..Options::default()
    });
    std::thread::sleep(Duration::from_secs(6));
    let output = hermes.output();
    let failures: Vec<u64> = output
        .lines()
        .filter(|l| l.contains("cannot create pool container"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["retry_in_ms"].as_str().and_then(|n| n.parse().ok()))
        .collect();
    assert!(failures.len() >= 3, "retried: {output}");
    assert!(
        failures.windows(2).all(|w| w[1] >= w[0]),
        "backing off: {failures:?}"
    );
    // Created, failed to start, removed: no container of this instance is left.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        hermes.containers(None),
        Vec::<String>::new(),
        "nothing half made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_only_the_newest_stopped_containers() {
    require_docker!();
    let hermes = Hermes::start(
        Options::default().configure(|c| c.container_pool.max_stopped_containers = 2),
    );
    for round in 1..=4 {
        let output = tokio::task::block_in_place(|| {
            hermes
                .ssh("root", &["toor"], "password")
                .arg("true")
                .output()
        })
        .expect("ssh");
        assert!(output.status.success());
        // The container is stopped after the session's final file capture: wait for
        // it, so the stop order is the session order the test reasons about.
        let events = tokio::task::block_in_place(|| {
            hermes.wait_for_count("hermes.container.release", round)
        });
        let released = events
            .of("hermes.container.release")
            .last()
            .and_then(|e| e["container_id"].as_str())
            .unwrap_or_default()
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        while hermes.containers(Some("running")).contains(&released) {
            assert!(Instant::now() < deadline, "round {round}: not stopped");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let events = tokio::task::block_in_place(|| {
        hermes.wait_for_events("two removals", |events| {
            events
                .of("hermes.container.remove")
                .into_iter()
                .filter(|e| e["reason"] == "retention_count")
                .count()
                == 2
        })
    });
    let allocated: Vec<&str> = events
        .of("hermes.container.allocate")
        .into_iter()
        .filter_map(|e| e["container_id"].as_str())
        .collect();
    let removed: Vec<&str> = events
        .of("hermes.container.remove")
        .into_iter()
        .filter_map(|e| e["container_id"].as_str())
        .collect();
    assert_eq!(removed, &allocated[..2], "the oldest two go");
    let mut kept = hermes.containers(Some("exited"));
    kept.sort();
    let mut newest: Vec<String> = allocated[2..].iter().map(|s| (*s).to_owned()).collect();
    newest.sort();
    assert_eq!(kept, newest);
}

/// A second Docker engine in a network namespace of its own (so its bridge
/// handling cannot touch the main engine's), for tests that stop it.
struct SecondEngine {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl SecondEngine {
    fn start() -> SecondEngine {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut engine = SecondEngine { dir, child: None };
        engine.spawn();
        engine
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn spawn(&mut self) {
        let base = self.dir.path();
        let log = std::fs::File::create(base.join("dockerd.log")).expect("log");
        let child = Command::new("unshare")
            .args(["--net", "dockerd"])
            .arg(format!("--host=unix://{}", self.socket().display()))
            .arg(format!("--data-root={}", base.join("data").display()))
            .arg(format!("--exec-root={}", base.join("exec").display()))
            .arg(format!("--pidfile={}", base.join("dockerd.pid").display()))
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.docker(&["version"]).success() {
            assert!(Instant::now() < deadline, "second dockerd did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn docker(&self, args: &[&str]) -> std::process::ExitStatus {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("docker")
    }

    fn load_image(&self) {
        let status = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "docker save {} | docker -H unix://{} load -q > /dev/null",
                image(),
                self.socket().display()
            ))
            .status()
            .expect("docker save | load");
        assert!(status.success());
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid =
                std::fs::read_to_string(self.dir.path().join("dockerd.pid")).unwrap_or_default();
            let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "docker -H unix://{0} rm -f $(docker -H unix://{0} ps -aq) > /dev/null 2>&1",
                    self.socket().display()
                ))
                .status();
        }
        self.stop();
    }
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_going_away_ends_sessions_cleanly_and_the_pool_comes_back() {
    require_docker!();
    let mut engine = tokio::task::block_in_place(SecondEngine::start);
    tokio::task::block_in_place(|| engine.load_image());
    let docker_url = format!("unix://{}", engine.socket().display());
    let hermes = Hermes::start(Options {
        docker_url: Some(docker_url),
        ..Options::default()
    });
    let client = Client::login(hermes.port, "root", "toor").await;
    let mut shell = client.shell(80, 24).await;
    assert!(
        shell.read_until("# ", 0, Duration::from_secs(30)).await,
        "{}",
        shell.text()
    );

    let stopped_at = Instant::now();
    tokio::task::block_in_place(|| engine.stop());
    assert!(
        shell
            .read_until(
                "-bash: write error: Broken pipe",
                0,
                Duration::from_secs(20)
            )
            .await,
        "the open session is told: {:?}",
        shell.text()
    );
    assert!(shell.read_to_close(Duration::from_secs(10)).await);
    println!(
        "engine stop: session told and closed {:?} after the stop began",
        stopped_at.elapsed()
    );
    drop(shell);
    drop(client);

    // While the engine is away: Hermes accepts, logs in, explains, and does not spin.
    let cpu_before = cpu_seconds(hermes.pid());
    let client = Client::login(hermes.port, "root", "toor").await;
    let mut refused = client.shell(80, 24).await;
    assert!(
        refused
            .read_until(
                "Resource temporarily unavailable",
                0,
                Duration::from_secs(20)
            )
            .await
    );
    drop(refused);
    drop(client);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = cpu_seconds(hermes.pid()) - cpu_before;
    assert!(
        cpu < 1.0,
        "Hermes used {cpu:.2} s of CPU in ~3 s with the engine down"
    );

    // The engine comes back: the pool refills and logins get shells again.
    tokio::task::block_in_place(|| engine.spawn());
    let back_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let client = Client::login(hermes.port, "root", "toor").await;
        let mut shell = client.shell(80, 24).await;
        if shell.read_until("# ", 0, Duration::from_secs(15)).await {
            println!(
                "engine back: first shell {:?} after the engine answered again; Hermes CPU while it was down: {cpu:.2} s in ~3 s",
                back_at.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no shell after the engine came back: {}",
            hermes.output()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // The broken session's recording and events are complete.
    let events = hermes.events();
    let broken = events
        .of("hermes.session.error")
        .into_iter()
        .find(|e| e["stage"] == "stream")
        .and_then(|e| e["session"].as_str())
        .expect("a stream error event")
        .to_owned();
    for id in ["cowrie.log.closed", "cowrie.session.closed"] {
        assert!(
            events
                .of(id)
                .iter()
                .any(|e| e["session"] == broken.as_str()),
            "{id} for the broken session"
        );
    }
    let (header, cast) = read_cast(&hermes.session_file(&broken.to_string(), "cast"));
    assert_eq!(header["version"], 2);
    assert!(
        cast.iter()
            .any(|(_, code, data)| code == "o" && data.contains("Broken pipe"))
    );
    let metadata: Value = serde_json::from_slice(
        &std::fs::read(hermes.session_file(&broken.to_string(), "json")).expect("metadata"),
    )
    .expect("json");
    assert_eq!(metadata["end_reason"], "stream_error");
}

/// The Docker API paths Hermes may use (README, "Docker API calls Hermes makes").
fn documented(method: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    let path = match path.strip_prefix("/v1.") {
        Some(rest) => rest
            .split_once('/')
            .map(|(_, p)| format!("/{p}"))
            .unwrap_or_default(),
        None => path.to_owned(),
    };
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(
        (method, parts.as_slice()),
        ("GET", ["version"])
            | ("GET", ["_ping"])
            | ("GET", ["info"])
            | ("POST", ["containers", _, "kill"])
            | ("GET", ["images", .., "json"])
            | ("GET", ["containers", "json"])
            | ("POST", ["containers", "create"])
            | (
                "POST",
                ["containers", _, "start" | "stop" | "exec" | "update"]
            )
            | ("POST", ["containers", _, "pause" | "unpause"])
            | ("GET", ["containers", _, "json"])
            | ("DELETE", ["containers", _])
            | ("POST", ["exec", _, "start" | "resize"])
            | ("GET", ["exec", _, "json"])
            | ("GET", ["containers", _, "changes"])
            | ("HEAD" | "GET", ["containers", _, "archive"])
            | ("PUT", ["containers", _, "archive"])
    )
}

/// Each box the pool makes costs the engine one upload (its first files in one
/// archive: every upload is a run of the engine's own binary), boots at a low CPU
/// weight and is given a session's once ready (one update), and has no network
/// sandbox of the engine's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_box_costs_one_upload_and_gets_a_sessions_cpu_weight_once_ready() {
    require_docker!();
    let (hermes, seen, _) = hermes_behind_proxy(Options::default()).await;
    let boxes = hermes.containers(Some("running"));
    assert!(!boxes.is_empty(), "the pool is full");
    let calls = seen.lock().map(|s| s.clone()).unwrap_or_default();
    for id in &boxes {
        let count = |wanted: &str, action: &str| {
            calls
                .iter()
                .filter(|(method, path)| {
                    let path = path.split('?').next().unwrap_or_default();
                    method == wanted && path.ends_with(&format!("/containers/{id}/{action}"))
                })
                .count()
        };
        assert_eq!(count("PUT", "archive"), 1, "{id}: {calls:?}");
        assert_eq!(count("POST", "update"), 1, "{id}: {calls:?}");
        let inspect = std::process::Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{.HostConfig.CpuShares}} {{.Config.NetworkDisabled}}",
                id,
            ])
            .output()
            .expect("docker inspect");
        assert_eq!(
            String::from_utf8_lossy(&inspect.stdout).trim(),
            format!("{} true", hermes_sandbox::SESSION_CPU_SHARES),
            "{id}"
        );
    }
}

/// Hermes with `options`, reaching the engine through a [`counting_proxy`]: the
/// requests it made, and the bytes the engine sent back.
pub async fn hermes_behind_proxy(
    options: Options,
) -> (
    Hermes,
    Arc<Mutex<Vec<(String, String)>>>,
    Arc<std::sync::atomic::AtomicU64>,
) {
    let (port, seen, from_engine) = counting_proxy("/var/run/docker.sock").await;
    let url = format!("tcp://127.0.0.1:{port}");
    let hermes = Hermes::start(Options {
        docker_url: Some(url),
        ..options
    });
    (hermes, seen, from_engine)
}

/// A TCP front for the Docker socket that records the request line of every request
/// and counts the bytes the engine sent back (answers and exec streams).
pub async fn counting_proxy(
    socket: &'static str,
) -> (
    u16,
    Arc<Mutex<Vec<(String, String)>>>,
    Arc<std::sync::atomic::AtomicU64>,
) {
    let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = Arc::clone(&counted);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let Ok(engine) = tokio::net::UnixStream::connect(socket).await else {
                    return;
                };
                let (mut engine_read, mut engine_write) = engine.into_split();
                let (mut client_read, mut client_write) = client.into_split();
                tokio::spawn(async move {
                    let mut piece = vec![0u8; 65536];
                    while let Ok(n) = engine_read.read(&mut piece).await {
                        if n == 0 || client_write.write_all(&piece[..n]).await.is_err() {
                            break;
                        }
                        count.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                });
                // Parse requests (bollard sends Content-Length bodies) until an upgrade.
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 16384];
                loop {
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match client_read.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
                    let mut words = head.split_whitespace();
                    let method = words.next().unwrap_or_default().to_owned();
                    let path = words.next().unwrap_or_default().to_owned();
                    if let Ok(mut log) = log.lock() {
                        log.push((method, path));
                    }
                    let lower = head.to_ascii_lowercase();
                    let length: usize = lower
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buffer.len() < end + 4 + length {
                        match client_read.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let request: Vec<u8> = buffer.drain(..end + 4 + length).collect();
                    if engine_write.write_all(&request).await.is_err() {
                        return;
                    }
                    if lower.contains("upgrade: tcp") {
                        let _ = engine_write.write_all(&buffer).await;
                        let _ = tokio::io::copy(&mut client_read, &mut engine_write).await;
                        return;
                    }
                }
            });
        }
    });
    (port, seen, counted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_hermes_uses_only_the_documented_docker_endpoints() {
    require_docker!();
    let (hermes, seen, _) = hermes_behind_proxy(Options::default()).await;
    let client = Client::login(hermes.port, "root", "toor").await;
    let mut shell = client.shell(80, 24).await;
    assert!(shell.read_until("# ", 0, Duration::from_secs(20)).await);
    shell
        .channel
        .window_change(100, 30, 0, 0)
        .await
        .expect("resize");
    shell.send("exit\n").await;
    assert!(shell.read_to_close(Duration::from_secs(10)).await);
    drop(shell);
    drop(client);
    let output = tokio::task::block_in_place(|| {
        hermes
            .ssh("root", &["toor"], "password")
            .arg("echo over-tcp")
            .output()
    })
    .expect("ssh");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "over-tcp\n");
    let requests = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(requests.len() > 5, "{requests:?}");
    for (method, path) in &requests {
        assert!(
            documented(method, path),
            "undocumented Docker call {method} {path}"
        );
    }
    let used = |m: &str, suffix: &str| {
        requests.iter().any(|(method, path)| {
            method == m && path.split('?').next().is_some_and(|p| p.ends_with(suffix))
        })
    };
    assert!(used("POST", "/start") && used("POST", "/exec") && used("POST", "/resize"));
}

/// The session's checks (every 3 s) leave the engine alone where the box is on
/// Hermes's host: the layer is counted by Hermes (the engine's count walks it in
/// dockerd), and whether the box runs is read from /proc once the engine has named
/// its first process. A layer deeper than Hermes's walk is left to the engine's count:
/// a fill hidden 70 directories down still ends the session at `disk_limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_checks_leave_the_engine_alone_but_for_a_layer_too_deep() {
    require_docker!();
    use hermes_core::config::ByteSize;
    let (hermes, seen, _) = hermes_behind_proxy(Options::default().configure(|c| {
        c.container_pool.security.disk_limit = ByteSize::mib(40);
        c.container_pool.security.max_file_size = ByteSize::mib(16);
    }))
    .await;
    let (_client, mut shell) = crate::client::root_shell(hermes.port).await;
    let container = hermes
        .events_of("hermes.container.allocate")
        .first()
        .and_then(|e| e["container_id"].as_str().map(str::to_owned))
        .expect("allocated container");
    // Inspects of the box: with the layer's size counted by the engine, or without
    // (any other look, such as the one that names the box's first process).
    let inspects = |sized: bool| {
        seen.lock()
            .map(|s| s.clone())
            .unwrap_or_default()
            .iter()
            .filter(|(method, path)| {
                let (path, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
                method == "GET"
                    && path.ends_with(&format!("/containers/{container}/json"))
                    && query.contains("size=true") == sized
            })
            .count()
    };
    // The box's first process is named by the first look that needs it (the login's
    // password written from the host, or the first check); two checks follow in 7 s.
    shell
        .run(
            "head -c 5000000 /dev/zero > /root/small; sleep 4",
            crate::client::ROOT_PROMPT,
        )
        .await;
    let before = inspects(false);
    assert!(before >= 1, "no check named the box's first process");
    shell.run("sleep 7", crate::client::ROOT_PROMPT).await;
    assert_eq!(
        inspects(false),
        before,
        "a check asked the engine whether the box runs: {:?}",
        seen.lock().map(|s| s.clone()).unwrap_or_default()
    );
    assert_eq!(
        inspects(true),
        0,
        "the engine counted a layer Hermes can count"
    );
    let deep = format!("/root/{}", "d/".repeat(70));
    crate::isolation::fill_past_the_disk_limit(&hermes, &mut shell, &deep).await;
    assert!(
        inspects(true) >= 1,
        "the engine never counted the deep layer"
    );
}
