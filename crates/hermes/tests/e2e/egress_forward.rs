//! The SSH client's own forwards (`ssh -D`, `ssh -L`) under the egress policy: HTTP
//! through them is fetched by Hermes and kept like a box's download, everything else
//! is logged and refused or dropped, and nothing is connected where the policy says
//! no. The only upstream is the test's own web server on loopback.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hermes_core::address_block::AddressBlock;
use hermes_core::config::{EgressMode, RefusedAnswer};
use serde_json::Value;

use crate::harness::{Hermes, Options, sha256_hex};

const ROOT: (&str, &str) = ("root", "toor");

/// A web server of the test's own on 127.0.0.1: serves `body` to every GET and
/// keeps each request's head.
struct WebServer {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WebServer {
    fn start(body: Vec<u8>) -> WebServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind web server");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (Arc::clone(&requests), Arc::clone(&stop));
            std::thread::spawn(move || {
                // Bounded: the test stops it, or it gives up after two minutes.
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if let Some(head) = answer(stream, &body) {
                                requests.lock().expect("requests").push(head);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        WebServer {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests").clone()
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request head and answers it with `body`; returns the head.
fn answer(mut stream: TcpStream, body: &[u8]) -> Option<String> {
    stream.set_nonblocking(false).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(reply.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A listener on loopback where the policy must never let anything through.
struct Witness(TcpListener);

impl Witness {
    fn new() -> Witness {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind witness");
        listener.set_nonblocking(true).expect("nonblocking");
        Witness(listener)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().expect("address").port()
    }

    #[track_caller]
    fn assert_untouched(&self) {
        match self.0.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a forward reached the witness: {other:?}"),
        }
    }
}

/// Egress on with `static_only` names (nothing is ever asked upstream), `refused`,
/// and these names, extra upstream ports and allowed upstream blocks.
fn egress(
    mode: EgressMode,
    refused: RefusedAnswer,
    hosts: &[(&str, &str)],
    ports: &[u16],
    allow: &[&str],
) -> Options {
    let hosts: Vec<(String, IpAddr)> = hosts
        .iter()
        .map(|(name, ip)| ((*name).to_owned(), ip.parse().expect("ip")))
        .collect();
    let ports = ports.to_vec();
    let allow: Vec<AddressBlock> = allow
        .iter()
        .map(|block| AddressBlock::parse(block).expect("block"))
        .collect();
    Options::default().configure(move |c| {
        c.capture.enabled = true;
        c.egress.mode = mode;
        c.egress.refused = refused;
        c.egress.dns.static_only = true;
        c.egress.dns.static_hosts = hosts.iter().cloned().collect();
        c.egress.upstream_ports.extend(&ports);
        c.egress.upstream_allow = allow.clone();
    })
}

/// `ssh -N` with one local listener per forward spec (`-L 127.0.0.1:<port>:<to>`,
/// or `-D 127.0.0.1:<port>` when `to` is None), all listening: the child, its ports
/// and its stderr log. ssh cannot listen on port 0, so a port free a moment ago may
/// be taken before ssh binds it: ssh then exits (ExitOnForwardFailure) and other
/// ports are tried (bounded).
fn ssh_forwards(hermes: &Hermes, specs: &[Option<String>]) -> (Child, Vec<u16>, PathBuf) {
    for attempt in 0..5 {
        let ports: Vec<u16> = specs.iter().map(|_| crate::ports::free_port()).collect();
        let log = hermes
            .dir
            .path()
            .join(format!("ssh-forwards-{attempt}.log"));
        let mut command = hermes.ssh_info(ROOT.0, &[ROOT.1]);
        command.args(["-o", "ExitOnForwardFailure=yes", "-N"]);
        for (spec, port) in specs.iter().zip(&ports) {
            match spec {
                Some(to) => command.arg("-L").arg(format!("127.0.0.1:{port}:{to}")),
                None => command.arg("-D").arg(format!("127.0.0.1:{port}")),
            };
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("ssh log"))
            .spawn()
            .expect("ssh");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let listening = crate::ports::listening_ports(child.id());
            if ports.iter().all(|port| listening.contains(port)) {
                return (child, ports, log);
            }
            if let Ok(Some(status)) = child.try_wait() {
                let stderr = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(
                    stderr.contains("Address already in use"),
                    "ssh exited ({status}): {stderr}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "ssh did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("ssh could not listen on free ports in 5 tries");
}

fn stop(mut child: Child, log: &PathBuf) -> String {
    let _ = child.kill();
    let _ = child.wait();
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Connects to a local forward, sends `bytes` and reads until the forward closes
/// (refused) or `wait` passes (held open): what came back, and whether it closed.
fn exchange(port: u16, bytes: &[u8], wait: Duration) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the forward");
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let _ = stream.write_all(bytes);
    let mut got = Vec::new();
    let closed = match stream.read_to_end(&mut got) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    (got, closed)
}

fn forward_connection<'a>(events: &'a [Value], host: &str) -> Option<&'a Value> {
    events.iter().find(|e| {
        e["eventid"] == "hermes.egress.connection" && e["forward_host"].as_str() == Some(host)
    })
}

fn request_for<'a>(events: &'a [Value], host: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["eventid"] == "cowrie.direct-tcpip.request" && e["dst_ip"] == host)
        .unwrap_or_else(|| panic!("no cowrie.direct-tcpip.request for {host}"))
}

/// A payload with every byte value, so a text-mode mangling would show.
fn payload() -> Vec<u8> {
    let mut body = b"#!/bin/sh\necho fetched through ssh -D\n".to_vec();
    body.extend((0..4096u32).map(|i| (i * 7 % 256) as u8));
    body
}

#[test]
fn egress_forward_http_through_ssh_socks_proxy_is_fetched_and_kept() {
    require_docker!();
    let body = payload();
    let server = WebServer::start(body.clone());
    let hermes = Hermes::start(egress(
        EgressMode::Fetch,
        RefusedAnswer::Reject,
        &[("dropper.test", "127.0.0.1")],
        &[server.port],
        &["127.0.0.1/32"],
    ));
    let (child, ports, log) = ssh_forwards(&hermes, &[None]);
    let url = format!("http://dropper.test:{}/payload", server.port);
    let out = hermes.dir.path().join("curl.out");
    let curl = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--socks5-hostname"])
        .arg(format!("127.0.0.1:{}", ports[0]))
        .arg("-o")
        .arg(&out)
        .arg(&url)
        .output()
        .expect("curl");
    let events = hermes.wait_for("cowrie.session.file_download");
    let stderr = stop(child, &log);
    assert!(curl.status.success(), "curl: {curl:?}\nssh: {stderr}");
    assert_eq!(std::fs::read(&out).expect("curl output"), body);

    // Fetched once, upstream, by Hermes (the name resolved by its static map).
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].starts_with("GET /payload HTTP/1.1\r\n"),
        "{requests:?}"
    );
    assert!(
        requests[0].contains(&format!("Host: dropper.test:{}\r\n", server.port)),
        "{requests:?}"
    );

    // Kept: the event names the URL and the stored file is what the server sent.
    let download = events
        .iter()
        .find(|e| e["eventid"] == "cowrie.session.file_download")
        .expect("file_download");
    let sha = sha256_hex(&body);
    assert_eq!(download["url"], url);
    assert_eq!(download["shasum"], sha);
    assert_eq!(download["size"], body.len());
    assert_eq!(download["upstream"], format!("127.0.0.1:{}", server.port));
    let outfile = PathBuf::from(download["outfile"].as_str().expect("outfile"));
    assert_eq!(
        sha256_hex(&std::fs::read(&outfile).expect("stored file")),
        sha
    );

    // The forward itself, logged as before, for the same session.
    let request = request_for(&events, "dropper.test");
    assert_eq!(request["dst_port"], server.port);
    assert_eq!(request["accepted"], true);
    assert_eq!(request["session"], download["session"]);
    let lookup = events
        .iter()
        .find(|e| e["eventid"] == "hermes.egress.dns" && e["query"] == "dropper.test")
        .expect("the forward's lookup is logged");
    assert_eq!(lookup["answers"][0], "127.0.0.1");
    assert_eq!(lookup["source"], "static");
    assert_eq!(lookup["session"], download["session"]);
    let data: String = events
        .iter()
        .filter(|e| e["eventid"] == "cowrie.direct-tcpip.data")
        .filter_map(|e| e["data"].as_str())
        .collect();
    assert!(data.starts_with("GET /payload HTTP/1.1"), "{data}");
    assert!(forward_connection(&events, "dropper.test").is_none());
}

#[test]
fn egress_forward_refusals_are_logged_and_nothing_connects() {
    require_docker!();
    // Where "loopback.test" points, on a port the gateway fetches from: the SSRF
    // policy (no allowlist here) must keep it untouched.
    let witness = Witness::new();
    let hermes = Hermes::start(egress(
        EgressMode::Fetch,
        RefusedAnswer::Reject,
        &[
            ("metadata.test", "169.254.169.254"),
            ("loopback.test", "127.0.0.1"),
            ("mail.test", "203.0.113.25"),
        ],
        &[witness.port()],
        &[],
    ));
    let specs = [
        Some("metadata.test:80".to_owned()),
        Some(format!("loopback.test:{}", witness.port())),
        Some("mail.test:25".to_owned()),
        Some("nowhere.test:80".to_owned()),
    ];
    let (child, ports, log) = ssh_forwards(&hermes, &specs);
    let sent: [&[u8]; 4] = [
        b"GET /latest/meta-data/iam/ HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"EHLO spam.example\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ];
    for (port, bytes) in ports.iter().zip(sent) {
        let started = Instant::now();
        let (got, closed) = exchange(*port, bytes, Duration::from_secs(10));
        assert!(closed && got.is_empty(), "port {port}: {got:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let events = hermes.wait_for_events("the refused forwards", |events| {
        ["metadata.test", "loopback.test", "mail.test"]
            .iter()
            .all(|host| forward_connection(events, host).is_some())
            && events
                .iter()
                .filter(|e| e["eventid"] == "cowrie.direct-tcpip.request")
                .count()
                == 4
    });
    let stderr = stop(child, &log);
    // What the OpenSSH client prints against sshd when the connect fails.
    assert_eq!(
        stderr
            .matches("open failed: connect failed: Connection refused")
            .count(),
        3,
        "{stderr}"
    );
    assert!(
        stderr.contains("open failed: connect failed: Name or service not known"),
        "{stderr}"
    );
    witness.assert_untouched();

    for (host, ip, port, protocol, reason) in [
        ("metadata.test", "169.254.169.254", 80, "http", "metadata"),
        // Refused before any byte: the guess has only the port.
        (
            "loopback.test",
            "127.0.0.1",
            witness.port(),
            "unknown",
            "loopback",
        ),
        ("mail.test", "203.0.113.25", 25, "smtp", "port"),
    ] {
        let event = forward_connection(&events, host).expect("logged");
        assert_eq!(event["dst_ip"], ip, "{event}");
        assert_eq!(event["dst_port"], port, "{event}");
        assert_eq!(event["app_protocol"], protocol, "{event}");
        assert_eq!(event["answer"], "reject", "{event}");
        assert_eq!(event["reason"], reason, "{event}");
        assert_eq!(event["container_id"], "", "{event}");
        assert_eq!(request_for(&events, host)["accepted"], false);
    }
    assert_eq!(request_for(&events, "nowhere.test")["accepted"], false);
    let lookup = events
        .iter()
        .find(|e| e["eventid"] == "hermes.egress.dns" && e["query"] == "nowhere.test")
        .expect("the failed lookup is logged");
    assert_eq!(lookup["rcode"], "NXDOMAIN");
    assert!(forward_connection(&events, "nowhere.test").is_none());
    assert!(
        !events
            .iter()
            .any(|e| e["eventid"] == "cowrie.session.file_download.failed"
                || e["eventid"] == "cowrie.session.file_download"),
        "nothing was fetched"
    );
}

#[test]
fn egress_forward_sinkhole_drop_holds_the_channel_and_logs_the_first_bytes() {
    require_docker!();
    let hermes = Hermes::start(egress(
        EgressMode::Sinkhole,
        RefusedAnswer::Drop,
        &[("mail.test", "203.0.113.25")],
        &[],
        &[],
    ));
    let (child, ports, log) = ssh_forwards(&hermes, &[Some("mail.test:25".to_owned())]);
    let mut stream = TcpStream::connect(("127.0.0.1", ports[0])).expect("connect");
    stream
        .write_all(b"EHLO spam.example\r\n")
        .expect("send to the forward");
    let event = hermes.wait_for_events("the dropped forward", |events| {
        forward_connection(events, "mail.test").is_some()
    });
    // Open, unanswered: a read waits (the hold is a minute long).
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    let read = stream.read(&mut byte);
    assert!(
        matches!(&read, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "{read:?}"
    );
    let stderr = stop(child, &log);
    assert!(!stderr.contains("open failed"), "{stderr}");
    let event = forward_connection(&event, "mail.test")
        .expect("logged")
        .clone();
    assert_eq!(event["dst_ip"], "203.0.113.25");
    assert_eq!(event["dst_port"], 25);
    assert_eq!(event["answer"], "drop");
    assert_eq!(event["app_protocol"], "smtp");
    assert!(
        event["first_bytes"]
            .as_str()
            .is_some_and(|b| b.starts_with("EHLO spam.example")),
        "{event}"
    );
    assert!(event.get("reason").is_none(), "{event}");
}

/// HTTPS through `ssh -D`: the client's own trust store has no certificate of ours,
/// so Hermes shows it a mirror of the server's (here self-signed) certificate. curl
/// -k through the SOCKS proxy gets the page, which is kept with the sha256 served
/// and reported with the SNI; plain curl fails its certificate check (exit 60) and
/// nothing of it is asked of the server.
#[test]
fn egress_forward_https_through_ssh_socks_proxy_is_captured_for_curl_k() {
    require_docker!();
    let pki = tempfile::tempdir().expect("dir");
    let (cert, key, der) = crate::egress_tls::self_signed(pki.path(), "secure.test");
    let body = payload();
    let internet = crate::egress_fetch::internet::TestInternet::start_with(
        "fwdtls",
        &[
            ("fwd.bin", body.clone()),
            ("never.bin", b"never\n".to_vec()),
        ],
        Some((&cert, &key)),
    );
    let server = internet.server.to_string();
    let hermes = Hermes::start(egress(
        EgressMode::Fetch,
        RefusedAnswer::Reject,
        &[("secure.test", &server)],
        &[],
        &[&format!("{server}/32")],
    ));
    let (child, ports, log) = ssh_forwards(&hermes, &[None]);
    let proxy = format!("127.0.0.1:{}", ports[0]);
    let out = hermes.dir.path().join("curl-k.out");
    let curl_k = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "30", "--socks5-hostname", &proxy])
        .arg("-o")
        .arg(&out)
        .arg("https://secure.test/fwd.bin")
        .output()
        .expect("curl -k");
    let curl = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--socks5-hostname", &proxy])
        .args(["-o", "/dev/null", "https://secure.test/never.bin"])
        .output()
        .expect("curl");
    let events = hermes.wait_for_events("the download and the refused handshake", |events| {
        events
            .iter()
            .any(|e| e["eventid"] == "cowrie.session.file_download")
            && events
                .iter()
                .any(|e| e["eventid"] == "cowrie.session.file_download.failed")
    });
    let stderr = stop(child, &log);
    assert!(
        curl_k.status.success(),
        "curl -k: {curl_k:?}\nssh: {stderr}"
    );
    assert_eq!(std::fs::read(&out).expect("curl output"), body);
    assert_eq!(curl.status.code(), Some(60), "curl: {curl:?}");

    let download = events
        .iter()
        .find(|e| e["eventid"] == "cowrie.session.file_download")
        .expect("file_download");
    let sha = sha256_hex(&body);
    assert_eq!(download["url"], "https://secure.test/fwd.bin");
    assert_eq!(download["shasum"], sha);
    assert_eq!(download["sni"], "secure.test");
    assert_eq!(download["upstream"], format!("{server}:443"));
    assert_eq!(download["upstream_cert_sha256"], sha256_hex(&der));
    assert_eq!(download["upstream_cert_verified"], false);
    let outfile = PathBuf::from(download["outfile"].as_str().expect("outfile"));
    assert_eq!(
        sha256_hex(&std::fs::read(&outfile).expect("stored file")),
        sha
    );
    let request = request_for(&events, "secure.test");
    assert_eq!(request["dst_port"], 443);
    assert_eq!(request["session"], download["session"]);

    let failed = events
        .iter()
        .find(|e| e["eventid"] == "cowrie.session.file_download.failed")
        .expect("the refused handshake");
    assert_eq!(failed["reason"], "tls_handshake", "{failed}");
    assert_eq!(failed["sni"], "secure.test");
    assert_eq!(failed["url"], "https://secure.test/");
    assert!(forward_connection(&events, "secure.test").is_none());
    let (requests, _) = internet.stats();
    assert_eq!(
        requests.iter().filter(|r| *r == "/fwd.bin").count(),
        1,
        "{requests:?}"
    );
    assert!(!requests.contains(&"/never.bin".to_owned()), "{requests:?}");
}
