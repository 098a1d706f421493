//! Hermes side by side with a real Debian 12 sshd on loopback: what a scanner sees of
//! the transport must be the same.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use hermes_test_support::reference::ReferenceSshd;

use crate::events::Events;
use crate::harness::{Hermes, Options, require_docker};

/// The names Debian's sshd offers that the SSH library cannot implement.
const RUSSH_CANNOT: &[&str] = &[
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
    "umac-64-etm@openssh.com",
    "umac-128-etm@openssh.com",
    "umac-64@openssh.com",
    "umac-128@openssh.com",
];

/// What a server answers to `payload` sent after its banner: the banner line, the
/// bytes that followed, and whether it closed within `wait`.
fn probe(port: u16, payload: &[u8], wait: Duration) -> (Vec<u8>, Vec<u8>, bool) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // The banner first, however long a loaded machine takes to send it (sshd forks
    // per connection), so it never ends up in the answer.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut banner = Vec::new();
    let mut byte = [0u8; 1];
    while !banner.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => banner.push(byte[0]),
            _ => break,
        }
    }
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    stream.write_all(payload).expect("send");
    let mut answer = Vec::new();
    let mut closed = false;
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    (banner, answer, closed)
}

/// The server's KEXINIT name-lists, read off the wire after a client version line.
fn server_kexinit(port: u16) -> (String, Vec<Vec<String>>) {
    let (banner, answer, _) = probe(
        port,
        b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\r\n",
        Duration::from_millis(700),
    );
    assert!(answer.len() > 22, "no KEXINIT: {answer:?}");
    let length = u32::from_be_bytes([answer[0], answer[1], answer[2], answer[3]]) as usize;
    let padding = answer[4] as usize;
    let payload = &answer[5..4 + length - padding];
    assert_eq!(payload[0], 20, "SSH_MSG_KEXINIT");
    let mut rest = &payload[17..];
    let mut lists = Vec::new();
    for _ in 0..10 {
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let text = String::from_utf8_lossy(&rest[4..4 + n]).into_owned();
        lists.push(if text.is_empty() {
            Vec::new()
        } else {
            text.split(',').map(str::to_owned).collect()
        });
        rest = &rest[4 + n..];
    }
    (
        String::from_utf8_lossy(&banner).trim_end().to_owned(),
        lists,
    )
}

fn hermes_static() -> Option<Hermes> {
    require_docker().then(|| Hermes::start(Options::default()))
}

#[test]
fn server_kexinit_matches_debian_sshd_but_for_what_russh_lacks() {
    let Some(sshd) = ReferenceSshd::start() else {
        return;
    };
    let Some(hermes) = hermes_static() else {
        return;
    };
    let (sshd_banner, sshd_lists) = server_kexinit(sshd.port);
    let (hermes_banner, hermes_lists) = server_kexinit(hermes.port);
    let names = [
        "kex",
        "host key",
        "ciphers c2s",
        "ciphers s2c",
        "macs c2s",
        "macs s2c",
        "compression c2s",
        "compression s2c",
        "languages c2s",
        "languages s2c",
    ];
    for (i, name) in names.iter().enumerate() {
        let expected: Vec<&String> = sshd_lists[i]
            .iter()
            .filter(|n| !RUSSH_CANNOT.contains(&n.as_str()))
            .collect();
        let actual: Vec<&String> = hermes_lists[i].iter().collect();
        assert_eq!(actual, expected, "{name} list differs");
    }
    // Exactly the names the test lists are missing, nothing else.
    let missing: Vec<&str> = sshd_lists
        .iter()
        .flatten()
        .filter(|n| !hermes_lists.iter().flatten().any(|h| h == *n))
        .map(String::as_str)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut cannot = RUSSH_CANNOT.to_vec();
    cannot.sort_unstable();
    assert_eq!(missing, cannot);
    // The banner is the persona's (the image's OpenSSH package); on a machine whose
    // sshd comes from the same Debian release it is the real one too.
    let output = hermes.output();
    assert!(
        output.contains(&hermes_banner),
        "persona banner {hermes_banner} not logged"
    );
    assert!(
        hermes_banner.starts_with("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u"),
        "{hermes_banner}"
    );
    let sshd_version = sshd_banner.split(' ').next().unwrap_or_default();
    assert!(
        hermes_banner.starts_with(sshd_version),
        "{hermes_banner} vs {sshd_banner}"
    );
}

#[test]
fn malformed_identification_gets_sshds_exact_answers() {
    let Some(sshd) = ReferenceSshd::start() else {
        return;
    };
    let Some(hermes) = hermes_static() else {
        return;
    };
    let refused: &[&[u8]] = &[
        b"GET / HTTP/1.0\r\n\r\n",
        b"SSH-1337\r\n",
        b"SSH-1111-OpenSSH_9.0\r\n",
        b"SSH-1.5-x\r\n",
        b"SSH-3.0-x\r\n",
        b"SSH-2.0-\r\n",
        b"ssh-2.0-x\r\n",
        b"\r\n\r\nSSH-2.0-x\r\n",
        b"\x00\x01garbage\r\n",
        b"SSH-2.0-x\x00y\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS hello\r\n",
    ];
    for payload in refused {
        let from_sshd = probe(sshd.port, payload, Duration::from_millis(600));
        let from_hermes = probe(hermes.port, payload, Duration::from_millis(600));
        assert_eq!(
            (&from_hermes.1, from_hermes.2),
            (&from_sshd.1, from_sshd.2),
            "answer to {:?}: hermes {:?} sshd {:?}",
            String::from_utf8_lossy(payload),
            String::from_utf8_lossy(&from_hermes.1),
            String::from_utf8_lossy(&from_sshd.1)
        );
        assert!(
            from_sshd.2,
            "sshd closes after {:?}",
            String::from_utf8_lossy(payload)
        );
    }
    // Silence for bare carriage returns: both wait for a line feed.
    let from_sshd = probe(sshd.port, b"\r\r\r\r\r\r\r\r", Duration::from_millis(600));
    let from_hermes = probe(hermes.port, b"\r\r\r\r\r\r\r\r", Duration::from_millis(600));
    assert_eq!((from_hermes.1.len(), from_hermes.2), (0, false));
    assert_eq!((from_sshd.1.len(), from_sshd.2), (0, false));
    // Tolerated: blank lines after the version line, the version line twice, a bare
    // line feed, SSH-1.99: both start the key exchange (their KEXINIT arrives).
    let tolerated: &[&[u8]] = &[
        b"SSH-2.0-x\r\n\r\n\r\n",
        b"SSH-2.0-x\r\nSSH-2.0-x\r\n",
        b"SSH-2.0-x\n",
        b"SSH-1.99-x\r\n",
    ];
    for payload in tolerated {
        let from_sshd = probe(sshd.port, payload, Duration::from_millis(600));
        let from_hermes = probe(hermes.port, payload, Duration::from_millis(600));
        for (who, answer) in [("sshd", &from_sshd), ("hermes", &from_hermes)] {
            assert!(
                answer.1.len() > 5 && answer.1[5] == 20,
                "{who}: no KEXINIT for {payload:?}"
            );
        }
        assert_eq!(
            from_hermes.2, from_sshd.2,
            "closed or not after {payload:?}"
        );
    }
}

fn six_wrong_passwords(port: u16) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let askpass = dir.path().join("askpass.sh");
    std::fs::write(&askpass, "#!/bin/sh\necho wrong-password\n").expect("askpass");
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&askpass)
        .status()
        .expect("chmod");
    let output = Command::new("ssh")
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env_remove("SSH_AUTH_SOCK")
        .args(["-F", "/dev/null", "-p", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=10",
        ])
        .args(["-o", "LogLevel=ERROR"])
        .arg("root@127.0.0.1")
        .arg("true")
        .output()
        .expect("ssh");
    let port_text = format!("port {port}");
    let text = String::from_utf8_lossy(&output.stderr).replace(&port_text, "port PORT");
    (output.status.code(), text)
}

#[test]
fn the_openssh_client_sees_the_same_six_failures() {
    let Some(sshd) = ReferenceSshd::start() else {
        return;
    };
    let Some(hermes) = hermes_static() else {
        return;
    };
    let from_sshd = six_wrong_passwords(sshd.port);
    let from_hermes = six_wrong_passwords(hermes.port);
    assert_eq!(from_hermes, from_sshd);
    assert_eq!(
        from_sshd
            .1
            .matches("Permission denied, please try again.")
            .count(),
        5
    );
    assert!(from_sshd.1.contains(
        "Received disconnect from 127.0.0.1 port PORT:2: Too many authentication failures"
    ));
    let events = hermes.wait_for("hermes.auth.max_tries");
    assert_eq!(
        events.count_of("cowrie.login.failed"),
        5,
        "the five answered attempts are recorded"
    );
}
