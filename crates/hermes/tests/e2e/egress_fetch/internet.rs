//! The test's own "internet": a Docker network the test makes (labelled) with a
//! small web server of ours in it. Removed when dropped, also after a failure.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The label on everything a test internet makes.
const LABEL: &str = "hermes.test=egress-fetch";

/// A web server on a network of its own; gone when dropped.
pub struct TestInternet {
    network: String,
    container: String,
    /// The web server's address (port 80).
    pub server: Ipv4Addr,
    /// The host's address on the test network (its bridge).
    pub host_side: Ipv4Addr,
    files: tempfile::TempDir,
}

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().expect("docker");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl TestInternet {
    /// Serves `files` (name, contents) from a new network named after `tag`.
    pub fn start(tag: &str, files: &[(&str, Vec<u8>)]) -> TestInternet {
        TestInternet::start_with(tag, files, None)
    }

    /// As [`TestInternet::start`], and over HTTPS on port 443 with `tls`: a
    /// certificate and its key, PEM.
    pub fn start_with(
        tag: &str,
        files: &[(&str, Vec<u8>)],
        tls: Option<(&[u8], &[u8])>,
    ) -> TestInternet {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("files");
        std::fs::create_dir(&root).expect("files dir");
        for (name, contents) in files {
            std::fs::write(root.join(name), contents).expect("write file");
        }
        if let Some((cert, key)) = tls {
            let tls = dir.path().join("tls");
            std::fs::create_dir(&tls).expect("tls dir");
            std::fs::write(tls.join("leaf.pem"), cert).expect("write cert");
            std::fs::write(tls.join("leaf.key"), key).expect("write key");
        }
        std::fs::write(dir.path().join("server.py"), include_str!("server.py")).expect("server");
        make_readable(dir.path());
        let network = format!("hermes-test-{tag}-{}", std::process::id());
        docker(&["network", "create", "--label", LABEL, &network]);
        let mut internet = TestInternet {
            network: network.clone(),
            container: String::new(),
            server: Ipv4Addr::UNSPECIFIED,
            host_side: Ipv4Addr::UNSPECIFIED,
            files: dir,
        };
        let mount = format!("{}:/srv:ro", internet.files.path().display());
        internet.container = docker(&[
            "run",
            "-d",
            "--label",
            LABEL,
            "--network",
            &network,
            "-v",
            &mount,
            "--entrypoint",
            "/usr/bin/python3",
            &crate::harness::image(),
            "-u",
            "/srv/server.py",
        ]);
        let inspect: Value = serde_json::from_str(&docker(&[
            "network",
            "inspect",
            "--format",
            "{{json .}}",
            &network,
        ]))
        .expect("network json");
        internet.host_side = inspect["IPAM"]["Config"][0]["Gateway"]
            .as_str()
            .and_then(|ip| ip.parse().ok())
            .unwrap_or_else(|| panic!("no gateway address: {inspect}"));
        internet.server = docker(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &internet.container,
        ])
        .parse()
        .expect("server address");
        let deadline = Instant::now() + Duration::from_secs(30);
        let address = SocketAddr::from((internet.server, 80));
        while TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the test web server never listened"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        internet
    }

    /// The Docker network's name.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The server container's init process (its network namespace is the server's).
    pub fn server_pid(&self) -> u32 {
        docker(&["inspect", "--format", "{{.State.Pid}}", &self.container])
            .parse()
            .expect("server pid")
    }

    /// `GET path` straight from the host: status and body.
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        http_get(SocketAddr::from((self.server, 80)), path)
    }

    /// What the server saw: every request path, and the most `/slow/` requests
    /// waiting for their answer at once.
    pub fn stats(&self) -> (Vec<String>, u64) {
        let (_, body) = self.get("/stats");
        let stats: Value = serde_json::from_slice(&body).expect("stats json");
        let requests = stats["requests"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        (requests, stats["max_concurrent"].as_u64().unwrap_or(0))
    }
}

impl Drop for TestInternet {
    fn drop(&mut self) {
        if !self.container.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", &self.container])
                .output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

/// The server runs as the image's root, files are the test's: readable by anyone.
fn make_readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    for entry in walk(dir) {
        let mode = if entry.is_dir() { 0o755 } else { 0o644 };
        let _ = std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode));
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// A plain HTTP/1.0 GET (the server closes after the answer).
pub fn http_get(address: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(answer.len());
    let status = String::from_utf8_lossy(&answer[..end])
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, answer[end..].to_vec())
}
