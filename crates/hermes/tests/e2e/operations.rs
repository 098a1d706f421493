//! What an operator watches: Prometheus metrics that move with real sessions, and a
//! health check that turns unhealthy when the Docker engine cannot be reached and
//! healthy again when it can.

use std::path::PathBuf;
use std::time::Duration;

use hermes_core::config::load_file;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::client::{Client, connect};
use crate::events::Events;
use crate::harness::{Hermes, Options};

/// A TCP door to the Docker socket that can be shut (every connection through it
/// cut) and opened again on the same port: to Hermes, the engine going away.
fn open_door(listener: std::net::TcpListener) -> JoinHandle<()> {
    listener.set_nonblocking(true).expect("nonblocking");
    let listener = TcpListener::from_std(listener).expect("listener");
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((mut client, _)) = listener.accept().await {
            connections.spawn(async move {
                if let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock").await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                }
            });
        }
    })
}

fn bind(port: u16) -> std::net::TcpListener {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => return listener,
            Err(error) if std::time::Instant::now() > deadline => panic!("bind {port}: {error}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// One HTTP request to the metrics address: (status line, body).
async fn get(port: u16, request: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

pub(crate) async fn metrics(port: u16) -> String {
    let (status, body) = get(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    body
}

async fn health(port: u16) -> (String, String) {
    get(port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await
}

/// The value of one sample line (`name{labels} value`).
pub(crate) fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

/// Waits until the health check says `healthy` (true) or not.
async fn health_becomes(port: u16, healthy: bool) -> (String, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = health(port).await;
        if answer.0.contains("200") == healthy || tokio::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_a_session_and_health_follows_the_engine() {
    require_docker!();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the door");
    let door_port = listener.local_addr().expect("door address").port();
    let door = open_door(listener);
    let url = format!("tcp://127.0.0.1:{door_port}");
    let hermes = Hermes::start(Options {
        docker_url: Some(url),
        pool_size: 1,
        metrics: true,
        ..Options::default()
    });
    let metrics_port = hermes.metrics_port();

    let before = metrics(metrics_port).await;
    assert_eq!(sample(&before, "hermes_sessions_total"), 0.0);
    assert!(
        sample(&before, "hermes_container_create_seconds_count") >= 1.0,
        "{before}"
    );
    assert_eq!(
        sample(&before, "hermes_pool_containers{state=\"ready\"}"),
        1.0
    );

    // One failed password, one login that drops a file, then the close.
    let mut handle = connect(hermes.port).await.expect("connect");
    let failed = handle
        .authenticate_password("root", "wrong")
        .await
        .expect("auth");
    assert!(!failed.success());
    let ok = handle
        .authenticate_password("root", "toor")
        .await
        .expect("auth");
    assert!(ok.success());
    let client = Client { handle };
    let mut exec = client.exec("echo payload > /root/dropped.sh").await;
    assert!(exec.read_to_close(Duration::from_secs(20)).await);
    drop(exec);
    drop(client);
    hermes.wait_for_events("the close and the captured file", |events| {
        events.has("cowrie.session.closed") && events.has("cowrie.session.file_download")
    });
    let after = metrics(metrics_port).await;
    for (name, at_least) in [
        ("hermes_connections_total", 1.0),
        ("hermes_auth_attempts_total{result=\"failure\"}", 1.0),
        ("hermes_auth_attempts_total{result=\"success\"}", 1.0),
        ("hermes_sessions_total", 1.0),
        ("hermes_session_duration_seconds_count", 1.0),
        ("hermes_captured_files_total", 1.0),
        ("hermes_captured_bytes_total", 8.0),
        ("hermes_events_total", 5.0),
    ] {
        assert!(sample(&after, name) >= at_least, "{name} in\n{after}");
    }
    assert_eq!(sample(&after, "hermes_sessions_active"), 0.0);
    assert_eq!(sample(&after, "hermes_events_dropped_total"), 0.0);

    // Health: the engine answers, then it is gone, then it is back.
    let (status, body) = health(metrics_port).await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "ok\n")
    );
    door.abort();
    let _ = door.await;
    let (status, body) = health_becomes(metrics_port, false).await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{body}");
    assert!(body.starts_with("unhealthy: Docker engine"), "{body}");
    let errors_while_gone = sample(&metrics(metrics_port).await, "hermes_docker_errors_total");
    assert!(errors_while_gone >= 1.0);
    let door = open_door(bind(door_port));
    let (status, body) = health_becomes(metrics_port, true).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");

    // Anything else is answered plainly and the endpoint stays up.
    let (status, _) = get(metrics_port, "GET /nothing HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = get(metrics_port, "DELETE /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    let (status, _) = get(
        metrics_port,
        &format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20_000)),
    )
    .await;
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    let (status, _) = get(metrics_port, "\x00\x01\x02 junk\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    let (status, body) = get(metrics_port, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
    assert!(
        metrics(metrics_port)
            .await
            .contains("hermes_connections_total")
    );
    drop(hermes);
    door.abort();
}

/// Sends SIGHUP and waits for the log line that says how it went.
fn hang_up(hermes: &Hermes, expect: &str) {
    let before = hermes.output().matches(expect).count();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &hermes.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while hermes.output().matches(expect).count() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no {expect:?} after SIGHUP:\n{}",
            hermes.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn password_works(port: u16, password: &str) -> bool {
    let mut handle = connect(port).await.expect("connect");
    handle
        .authenticate_password("root", password)
        .await
        .expect("auth exchange")
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_credentials_for_new_logins_and_keeps_open_sessions() {
    require_docker!();
    let hermes = Hermes::start(Options {
        pool_size: 1,
        ..Options::default()
    });
    let (client, mut shell) = crate::client::root_shell(hermes.port).await;
    let mut config = load_file(&hermes.config_path).expect("the harness's config");
    let credentials = &mut config.authentication.static_credentials;
    assert!(
        credentials.iter().any(|c| c.password == "toor"),
        "{credentials:?}"
    );

    // New credentials, and a key that needs a restart.
    for credential in credentials.iter_mut().filter(|c| c.password == "toor") {
        credential.password = "n3w-Pass".to_owned();
    }
    config.persona.hostname = "db-07".to_owned();
    std::fs::write(&hermes.config_path, config.to_yaml()).expect("write");
    tokio::task::block_in_place(|| hang_up(&hermes, "configuration reloaded"));
    let log = hermes.output();
    assert!(log.contains("authentication.static_credentials"), "{log}");
    assert!(
        log.contains("take effect only after a restart") && log.contains("persona.hostname"),
        "{log}"
    );
    assert!(!password_works(hermes.port, "toor").await);
    assert!(password_works(hermes.port, "n3w-Pass").await);
    // The session opened before goes on, and still shows the old hostname.
    let out = shell
        .run("echo still-here; hostname", crate::client::ROOT_PROMPT)
        .await;
    assert!(
        out.contains("still-here") && !out.contains("db-07"),
        "{out}"
    );

    // A file that does not validate changes nothing.
    std::fs::write(&hermes.config_path, "server:\n  port: banana\n").expect("write");
    tokio::task::block_in_place(|| hang_up(&hermes, "configuration reload refused"));
    assert!(
        hermes.output().contains("server.port"),
        "{}",
        hermes.output()
    );
    assert!(password_works(hermes.port, "n3w-Pass").await);
    drop(shell);
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_so_when_the_pool_cannot_be_refilled() {
    require_docker!();
    let image = crate::lifecycle::broken_image();
    let hermes = tokio::task::block_in_place(|| {
        Hermes::start_unready(Options {
            image,
            metrics: true,
            ..Options::default()
        })
    });
    let metrics_port = hermes.metrics_port();
    let (status, body) = health_becomes(metrics_port, false).await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{body}");
    assert!(
        body.starts_with("unhealthy: the pool cannot be refilled"),
        "{body}"
    );
    let metrics = metrics(metrics_port).await;
    assert!(
        sample(&metrics, "hermes_pool_create_failures_in_a_row") >= 3.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "hermes_pool_containers{state=\"ready\"}"),
        0.0
    );
}

/// A second Docker engine of its own (own data root, socket and containerd
/// namespace) that a test may stop and start without touching the engine the other
/// tests use.
struct SecondEngine {
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl SecondEngine {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// The name of its bridge interface (at most 15 bytes).
    fn bridge(&self) -> String {
        let tag: String = self
            .dir
            .path()
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect()
            })
            .unwrap_or_default();
        format!("hb{}", &tag[tag.len().saturating_sub(10)..])
    }

    fn start(dir: tempfile::TempDir) -> SecondEngine {
        let engine = SecondEngine { dir, child: None };
        let bridge = engine.bridge();
        let octet = bridge.bytes().map(u32::from).sum::<u32>() % 200 + 20;
        for args in [
            vec!["link", "add", bridge.as_str(), "type", "bridge"],
            vec![
                "addr",
                "add",
                &format!("10.213.{octet}.1/24"),
                "dev",
                bridge.as_str(),
            ],
            vec!["link", "set", bridge.as_str(), "up"],
        ] {
            let out = std::process::Command::new("ip")
                .args(&args)
                .output()
                .expect("ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut engine = engine;
        engine.resume();
        engine
    }

    /// Starts dockerd on the same roots and waits until it answers.
    fn resume(&mut self) {
        let root = self.dir.path();
        let tag = root
            .file_name()
            .map(|n| n.to_string_lossy().replace('.', "-"))
            .unwrap_or_default();
        let log = std::fs::File::create(root.join("dockerd.log")).expect("log");
        let child = std::process::Command::new("dockerd")
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            // A bridge of its own: `--bridge=none` would make dockerd delete the
            // host's docker0, which the main engine's containers need.
            .arg(format!("--bridge={}", self.bridge()))
            .args(["--iptables=false", "--ip-masq=false"])
            .args(["--containerd-namespace", &format!("hermes-{tag}")])
            .args([
                "--containerd-plugins-namespace",
                &format!("hermes-{tag}-plugins"),
            ])
            .args(["--cgroup-parent", &format!("hermes-{tag}")])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("dockerd");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.docker(&["version"]).status.success() {
            assert!(
                std::time::Instant::now() < deadline,
                "the second dockerd did not start: {}",
                std::fs::read_to_string(root.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops dockerd (SIGTERM) and waits for it to exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() {
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .output()
            .expect("docker")
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = self.docker(&[&["rm", "-f"][..], &ids].concat());
            }
        }
        self.stop();
        let _ = std::process::Command::new("umount")
            .arg("-R")
            .arg(self.dir.path().join("exec"))
            .output();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .output();
    }
}

/// A tiny image (busybox) on the second engine, enough for containers to run.
fn tiny_image(engine: &SecondEngine) -> &'static str {
    const TAG: &str = "hermes-test-tiny:latest";
    let rootfs = engine.dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).expect("rootfs");
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox (busybox-static)");
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).expect("sh");
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "tar -C {} -c . | docker -H unix://{} import --change 'CMD [\"/bin/busybox\", \"sleep\", \"100000\"]' - {TAG} > /dev/null",
            rootfs.display(),
            engine.socket().display()
        ))
        .status()
        .expect("import");
    assert!(status.success());
    TAG
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_unhealthy_when_dockerd_stops_and_healthy_when_it_is_back() {
    require_docker!();
    let dir = tempfile::Builder::new()
        .prefix("hermes-dockerd.")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let mut engine = tokio::task::block_in_place(|| SecondEngine::start(dir));
    let image = tokio::task::block_in_place(|| tiny_image(&engine));
    let socket = engine.socket();
    let hermes = tokio::task::block_in_place(|| {
        Hermes::start(
            Options {
                image: image.into(),
                pool_size: 1,
                metrics: true,
                ..Options::default()
            }
            .configure(move |c| c.docker.socket_path = socket.clone()),
        )
    });
    let metrics_port = hermes.metrics_port();
    let (status, body) = health_becomes(metrics_port, true).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");

    tokio::task::block_in_place(|| engine.stop());
    let (status, body) = health_becomes(metrics_port, false).await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{body}");
    assert!(body.starts_with("unhealthy: Docker engine"), "{body}");

    tokio::task::block_in_place(|| engine.resume());
    let (status, body) = health_becomes(metrics_port, true).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    drop(hermes);
}

/// The SSH banner a port answers with.
async fn banner(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the SSH port");
    let mut line = vec![0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut line))
        .await
        .expect("banner in time")
        .expect("read banner");
    String::from_utf8_lossy(&line[..read]).into_owned()
}

/// With port 0 for SSH and metrics (the config the harness writes), each listener gets
/// a free port of its own, the log names the bound ports, and a restart reports afresh:
/// no test probes for a port that another could take before Hermes binds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_zero_listeners_bind_free_ports_and_log_them() {
    require_docker!();
    let mut hermes = tokio::task::block_in_place(|| {
        Hermes::start(Options {
            metrics: true,
            ..Options::default()
        })
    });
    let config = std::fs::read_to_string(&hermes.config_path).expect("config");
    assert!(config.contains("\n  port: 0\n"), "{config}");
    for run in ["first start", "after a restart"] {
        let (ssh, metrics) = (hermes.port, hermes.metrics_port());
        assert!(
            ssh != 0 && metrics != 0 && ssh != metrics,
            "{run}: {ssh} {metrics}"
        );
        let banner = banner(ssh).await;
        assert!(banner.starts_with("SSH-2.0-"), "{run}: {banner:?}");
        let (status, body) = health_becomes(metrics, true).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{run}: {body}");
        if run == "first start" {
            tokio::task::block_in_place(|| hermes.restart());
        }
    }
}
