//! The interactive path: login, shell, terminal, exit status, recording.

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::Client;
use crate::events::{Events, id_of};
use crate::harness::{Hermes, Options, read_cast};

fn wait_for(buffer: &Mutex<Vec<u8>>, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if String::from_utf8_lossy(&buffer.lock().expect("lock")).contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn openssh_login_runs_commands_and_returns_the_exit_status_at_once() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let mut child = hermes
        .ssh("root", &["toor"], "password")
        .arg("-tt")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh");
    let output = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().expect("stdout");
    let sink = Arc::clone(&output);
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    });
    let mut stdin = child.stdin.take().expect("stdin");
    let prompt = format!("root@{}:~# ", hermes.hostname);
    assert!(
        wait_for(&output, &prompt, Duration::from_secs(20)),
        "no `{prompt}` prompt; got {:?}\n{}",
        String::from_utf8_lossy(&output.lock().expect("lock")),
        hermes.output()
    );
    stdin.write_all(b"echo $((6*7))\n").expect("write");
    assert!(
        wait_for(&output, "42\r\n", Duration::from_secs(10)),
        "no 42: {:?}",
        String::from_utf8_lossy(&output.lock().expect("lock"))
    );
    stdin.write_all(b"exit 3\n").expect("write");
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(sent.elapsed() < Duration::from_secs(10), "ssh did not exit");
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = sent.elapsed();
    let _ = reader.join();
    assert_eq!(status.code(), Some(3), "exit status passed through");
    assert!(
        took < Duration::from_secs(1),
        "ssh took {took:?} to exit after `exit 3`"
    );

    // The event trail of the session, every event checked against the catalogue.
    let events = hermes.wait_for_events("session.closed", |events| {
        events.has("cowrie.session.closed") && events.has("hermes.container.release")
    });
    let ids: Vec<&str> = events.iter().filter_map(id_of).collect();
    for expected in [
        "cowrie.session.connect",
        "cowrie.client.version",
        "cowrie.login.success",
        "hermes.container.allocate",
        "cowrie.client.size",
        "cowrie.log.closed",
        "hermes.container.release",
        "cowrie.session.closed",
    ] {
        assert!(ids.contains(&expected), "missing {expected} in {ids:?}");
    }
    let login = events.first_of("cowrie.login.success").expect("login");
    assert_eq!(login["username"], "root");
    assert_eq!(login["password"], "toor");
    let version = events.first_of("cowrie.client.version").expect("version");
    assert!(
        version["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("SSH-2.0-OpenSSH_"))
    );
    let closed = events.first_of("cowrie.session.closed").expect("closed");
    assert!(closed["duration_ms"].is_u64());
    assert!(closed["duration"].is_f64() || closed["duration"].is_u64());
    let position = |id: &str| ids.iter().position(|x| *x == id).expect("present");
    assert!(position("cowrie.log.closed") < position("cowrie.session.closed"));
    assert!(position("cowrie.session.connect") < position("cowrie.client.version"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_change_resizes_the_terminal_and_the_session_goes_on() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let client = Client::login(hermes.port, "root", "toor").await;
    let mut shell = client.shell(80, 24).await;
    assert!(
        shell.read_until("# ", 0, Duration::from_secs(20)).await,
        "no prompt: {}",
        shell.text()
    );
    let mark = shell.received.len();
    shell.send("stty size\n").await;
    assert!(
        shell
            .read_until("24 80", mark, Duration::from_secs(10))
            .await,
        "{}",
        shell.text()
    );

    shell
        .channel
        .window_change(132, 43, 0, 0)
        .await
        .expect("window change");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mark = shell.received.len();
    shell.send("stty size; echo still-$((40+2))\n").await;
    assert!(
        shell
            .read_until("43 132", mark, Duration::from_secs(10))
            .await,
        "{}",
        shell.text()
    );
    assert!(
        shell
            .read_until("still-42", mark, Duration::from_secs(10))
            .await
    );
    shell.send("exit\n").await;
    assert!(shell.read_to_close(Duration::from_secs(10)).await);
    assert_eq!(shell.exit_status, Some(0));
    drop(shell);
    drop(client);

    let session = session_of(&hermes);
    let (header, events) = read_cast(&hermes.session_file(&session.to_string(), "cast"));
    assert_eq!(header["width"], 80);
    assert_eq!(header["height"], 24);
    assert!(
        events
            .iter()
            .any(|(_, code, data)| code == "r" && data == "132x43"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_starting_with_bytes_0_1_2_does_not_stall_the_session() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let client = Client::login(hermes.port, "root", "toor").await;

    // A terminal exec whose very first output bytes are 00 01 02: the case that
    // freezes a decoder that takes them for a multiplexed-stream header.
    let channel = client.handle.channel_open_session().await.expect("channel");
    channel
        .request_pty(true, "xterm", 80, 24, 0, 0, &[])
        .await
        .expect("pty");
    channel
        .exec(
            true,
            "printf '\\000\\001\\002'; sleep 0.3; echo text-after-binary",
        )
        .await
        .expect("exec");
    let mut shell = crate::client::Shell::new(channel);
    assert!(
        shell
            .read_until("text-after-binary", 0, Duration::from_secs(20))
            .await,
        "text after binary never arrived: {:?}",
        shell.received
    );
    assert!(shell.wait_for_bytes(2, Duration::from_secs(1)).await);
    assert_eq!(&shell.received[..3], &[0, 1, 2]);
    assert!(shell.read_to_close(Duration::from_secs(10)).await);
    assert_eq!(shell.exit_status, Some(0));

    // The same in an interactive shell, where the bytes start a later read.
    let mut shell = client.shell(80, 24).await;
    assert!(shell.read_until("# ", 0, Duration::from_secs(20)).await);
    let mark = shell.received.len();
    shell
        .send("sleep 0.2; printf '\\000\\001\\002'; sleep 0.2; echo interactive-$((40+2))\n")
        .await;
    assert!(
        shell
            .read_until("interactive-42\r\n", mark, Duration::from_secs(10))
            .await,
        "{:?}",
        shell.text()
    );
    assert!(
        shell.received[mark..].windows(3).any(|w| w == [0, 1, 2]),
        "{:?}",
        &shell.received[mark..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recording_replays_exactly_what_the_client_saw() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let client = Client::login(hermes.port, "root", "toor").await;
    let mut shell = client.shell(100, 30).await;
    assert!(shell.read_until("# ", 0, Duration::from_secs(20)).await);
    shell
        .send("echo 'héllo ☃ 日本語 🎉'; seq 1 2000 | tail -n 3\n")
        .await;
    assert!(
        shell
            .read_until("2000\r\n", 0, Duration::from_secs(10))
            .await
    );
    shell.send("exit 7\n").await;
    assert!(shell.read_to_close(Duration::from_secs(10)).await);
    assert_eq!(shell.exit_status, Some(7));
    let seen = shell.text();
    drop(shell);
    drop(client);

    let session = session_of(&hermes);
    hermes.wait_for("cowrie.log.closed");
    let (header, events) = read_cast(&hermes.session_file(&session.to_string(), "cast"));
    assert_eq!(header["version"], 2);
    assert_eq!(header["width"], 100);
    assert_eq!(header["height"], 30);
    assert_eq!(header["env"]["TERM"], "xterm-256color");
    assert_eq!(header["env"]["SHELL"], "/bin/bash");
    let replay: String = events
        .iter()
        .filter(|(_, code, _)| code == "o")
        .map(|(_, _, data)| data.as_str())
        .collect();
    assert_eq!(
        replay, seen,
        "replayed output differs from what the client saw"
    );
    let typed: String = events
        .iter()
        .filter(|(_, code, _)| code == "i")
        .map(|(_, _, data)| data.as_str())
        .collect();
    assert!(typed.contains("exit 7"), "{typed:?}");
    let times: Vec<f64> = events.iter().map(|(t, _, _)| *t).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "times go forward");

    let metadata: Value = serde_json::from_slice(
        &std::fs::read(hermes.session_file(&session.to_string(), "json")).expect("metadata"),
    )
    .expect("metadata json");
    assert_eq!(metadata["session"], session.as_str());
    assert_eq!(metadata["username"], "root");
    assert_eq!(metadata["exit_status"], 7);
    assert_eq!(metadata["end_reason"], "exited");
    assert_eq!(metadata["src_ip"], "127.0.0.1");
    assert!(
        metadata["container_id"]
            .as_str()
            .is_some_and(|id| id.len() == 64)
    );
    assert!(metadata["start_time"].as_str().is_some());
    assert!(metadata["end_time"].as_str().is_some());
    assert!(metadata["duration"].as_f64().is_some_and(|d| d > 0.0));
    // Filed by day: YYYY/MM/DD/<session>.cast, relative to the recordings directory.
    let recording = metadata["recording"].as_str().expect("recording");
    assert_eq!(
        recording.len(),
        "2026/11/23/".len() + session.len() + 5,
        "{recording}"
    );
    assert_eq!(
        hermes.recordings().join(recording),
        hermes.session_file(&session.to_string(), "cast")
    );
    // The lines typed at the prompt, reconstructed from the keystrokes.
    let commands: Vec<&str> = metadata["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .filter_map(|c| c["input"].as_str())
        .collect();
    assert_eq!(
        commands,
        ["echo 'héllo ☃ 日本語 🎉'; seq 1 2000 | tail -n 3", "exit 7"]
    );
}

/// The one session id seen so far.
pub fn session_of(hermes: &Hermes) -> String {
    let events = hermes.wait_for("cowrie.session.closed");
    events
        .first_of("cowrie.login.success")
        .and_then(|e| e["session"].as_str())
        .expect("a logged-in session")
        .to_owned()
}
