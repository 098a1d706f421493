//! What Hermes records from the SSH transport, whatever the client does.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::events::Events;
use crate::harness::{Hermes, Options};

/// The HASSH string the OpenSSH 9.2 client sends with the options below, and its md5,
/// computed independently (Python's hashlib).
const PINNED_HASSH_ALGORITHMS: &str = "curve25519-sha256,ext-info-c,kex-strict-c-v00@openssh.com;aes128-ctr;hmac-sha2-256;none,zlib@openssh.com,zlib";
const PINNED_HASSH: &str = "d6bd53d769cfde0c90a5e41cb9ff93df";

#[test]
fn the_clients_kexinit_is_recorded_with_its_hassh() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let output = hermes
        .ssh("root", &["toor"], "password")
        .args([
            "-o",
            "KexAlgorithms=curve25519-sha256",
            "-o",
            "Ciphers=aes128-ctr",
        ])
        .args(["-o", "MACs=hmac-sha2-256", "-o", "Compression=no"])
        .arg("true")
        .output()
        .expect("ssh");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let events = hermes.wait_for("cowrie.client.kex");
    let kex = events.first_of("cowrie.client.kex").expect("kex event");
    assert_eq!(kex["hasshAlgorithms"], PINNED_HASSH_ALGORITHMS);
    assert_eq!(kex["hassh"], PINNED_HASSH);
    assert_eq!(kex["encCS"], serde_json::json!(["aes128-ctr"]));
    assert_eq!(kex["macCS"], serde_json::json!(["hmac-sha2-256"]));
    assert!(kex["keyAlgs"].as_array().is_some_and(|a| !a.is_empty()));
}

fn session_of_each_connect(events: &[Value]) -> Vec<String> {
    events
        .of("cowrie.session.connect")
        .into_iter()
        .filter_map(|e| e["session"].as_str().map(str::to_owned))
        .collect()
}

/// A plaintext KEXINIT packet with the given lists.
fn kexinit_packet() -> Vec<u8> {
    let mut payload = vec![20u8];
    payload.extend_from_slice(&[0x42; 16]);
    for list in [
        "curve25519-sha256",
        "ssh-ed25519",
        "aes128-ctr",
        "aes128-ctr",
        "hmac-sha2-256",
        "hmac-sha2-256",
        "none",
        "none",
        "",
        "",
    ] {
        payload.extend_from_slice(&(list.len() as u32).to_be_bytes());
        payload.extend_from_slice(list.as_bytes());
    }
    payload.push(0);
    payload.extend_from_slice(&[0, 0, 0, 0]);
    let padding = 8 - (payload.len() + 5) % 8 + 4;
    let mut packet = ((payload.len() + padding + 1) as u32)
        .to_be_bytes()
        .to_vec();
    packet.push(padding as u8);
    packet.extend_from_slice(&payload);
    packet.extend(std::iter::repeat_n(0u8, padding));
    packet
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    stream
}

#[test]
fn garbage_early_disconnects_and_broken_handshakes_still_leave_their_events() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let mut buf = [0u8; 4096];
    // 1. Connect and leave at once.
    drop(connect(hermes.port));
    // 2. Garbage instead of an identification line.
    let mut s = connect(hermes.port);
    s.write_all(b"\x16\x03\x01garbage\r\n").expect("write");
    let _ = s.read(&mut buf);
    drop(s);
    // 3. Version line, then gone in the middle of the key exchange.
    let mut s = connect(hermes.port);
    s.write_all(b"SSH-2.0-halfway_1.0\r\n").expect("write");
    let _ = s.read(&mut buf);
    drop(s);
    // 4. Version line and a full KEXINIT, then gone: the offer is still recorded.
    let mut s = connect(hermes.port);
    s.write_all(b"SSH-2.0-kexonly_2.0\r\n").expect("write");
    s.write_all(&kexinit_packet()).expect("write");
    let _ = s.read(&mut buf);
    drop(s);

    let events = hermes.wait_for_count("cowrie.session.closed", 4);
    let sessions = session_of_each_connect(&events);
    assert_eq!(sessions.len(), 4);
    for session in &sessions {
        let closed = events
            .of("cowrie.session.closed")
            .into_iter()
            .any(|e| e["session"] == session.as_str());
        assert!(closed, "session {session} has no close event");
    }
    // Connections run concurrently in Hermes: compare without order.
    let mut versions: Vec<&str> = events
        .of("cowrie.client.version")
        .into_iter()
        .filter_map(|e| e["version"].as_str())
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, ["SSH-2.0-halfway_1.0", "SSH-2.0-kexonly_2.0"]);
    assert!(events.has("hermes.client.bad_version"));
    let kex = events
        .first_of("cowrie.client.kex")
        .expect("kex from the broken handshake");
    assert_eq!(
        kex["hasshAlgorithms"],
        "curve25519-sha256;aes128-ctr;hmac-sha2-256;none"
    );
}

fn keygen(dir: &std::path::Path) -> (std::path::PathBuf, String, String) {
    let key = dir.join("id_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bot@example"])
        .arg("-f")
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let listing = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&key)
        .output()
        .expect("ssh-keygen -l");
    let fingerprint = String::from_utf8_lossy(&listing.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_owned();
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("pub");
    let mut parts = public.split_whitespace();
    let public = format!(
        "{} {}",
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default()
    );
    (key, fingerprint, public)
}

/// `ssh` logging in with `key` only (never a password), running a short command.
pub fn ssh_with_key(hermes: &Hermes, key: &std::path::Path) -> std::process::Output {
    Command::new("ssh")
        .env_remove("SSH_AUTH_SOCK")
        .args(["-F", "/dev/null", "-p", &hermes.port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
        ])
        .args(["-o", "PreferredAuthentications=publickey"])
        .arg("-i")
        .arg(key)
        .arg("root@127.0.0.1")
        .arg("echo key-$((40+2))")
        .output()
        .expect("ssh")
}

#[test]
fn offered_public_keys_are_logged_and_refused() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let (key, fingerprint, public) = keygen(hermes.dir.path());
    let output = ssh_with_key(&hermes, &key);
    assert_eq!(output.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Permission denied (publickey,password).")
    );
    let events = hermes.wait_for("cowrie.client.fingerprint");
    let offer = events.first_of("cowrie.client.fingerprint").expect("event");
    assert_eq!(offer["fingerprint"], fingerprint.as_str());
    assert_eq!(offer["type"], "ssh-ed25519");
    assert_eq!(offer["key"], public.as_str());
    assert_eq!(offer["username"], "root");
    assert!(!events.has("cowrie.login.success"));
}

#[test]
fn with_the_switch_any_public_key_logs_in() {
    require_docker!();
    let hermes = Hermes::start(Options {
        accept_public_keys: true,
        ..Options::default()
    });
    let (key, fingerprint, _) = keygen(hermes.dir.path());
    let output = ssh_with_key(&hermes, &key);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "key-42\n");
    let events = hermes.wait_for("cowrie.login.success");
    let login = events.first_of("cowrie.login.success").expect("login");
    assert_eq!(login["fingerprint"], fingerprint.as_str());
    assert!(login.get("password").is_none());
}

#[test]
fn the_login_grace_time_closes_silent_clients_without_a_word() {
    require_docker!();
    let hermes = Hermes::start(Options {
        login_grace: 2,
        ..Options::default()
    });
    let mut stream = connect(hermes.port);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(b"SSH-2.0-slow_1.0\r\n").expect("write");
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "{took:?}"
    );
    // Banner and KEXINIT only: no DISCONNECT message, as sshd.
    let banner_end = received
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("banner")
        + 2;
    let packet = &received[banner_end..];
    let length = u32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]) as usize;
    assert_eq!(packet.len(), length + 4, "nothing after the KEXINIT");
    hermes.wait_for("hermes.login.grace_timeout");
}

#[test]
fn the_server_kexinit_waits_for_the_clients_identification() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let mut stream = connect(hermes.port);
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let until = Instant::now() + Duration::from_millis(800);
    while Instant::now() < until {
        if let Ok(n) = stream.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
    }
    assert!(
        seen.ends_with(b"\r\n") && seen.starts_with(b"SSH-2.0-OpenSSH_"),
        "{seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|b| **b == b'\n').count(),
        1,
        "only the banner before our line"
    );
    stream.write_all(b"SSH-2.0-probe\r\n").expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let n = stream.read(&mut buf).expect("KEXINIT");
    assert!(n > 5 && buf[5] == 20, "KEXINIT after the identification");
}
