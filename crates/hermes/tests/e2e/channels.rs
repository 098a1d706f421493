//! Every channel a bot uses, through the real OpenSSH client (`ssh`, `scp`, `sftp`)
//! where it can be, and the in-process client for signals, MaxSessions and the
//! forwarding modes OpenSSH cannot be made to exercise on demand.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hermes_core::config::{
    BoxSshdIo, ByteSize, DirectTcpipMode, EgressMode, Seconds, SessionServer,
};
use russh::{ChannelMsg, Sig};
use serde_json::Value;

use crate::client::Client;
use crate::events::Events;
use crate::harness::{
    Hermes, Options, binary_file, run_with_stdin, sha256_file, sha256_hex, succeeded,
};

const ROOT: (&str, &str) = ("root", "toor");

/// A Hermes whose returning source keeps its container, so one test's connections
/// share a machine (as a bot's do).
fn hermes_with_reuse() -> Hermes {
    hermes_with_reuse_and(BoxSshdIo::Taken)
}

/// As [`hermes_with_reuse`], the box's sshd's channels carried as `io` says.
fn hermes_with_reuse_and(io: BoxSshdIo) -> Hermes {
    Hermes::start(
        Options {
            reuse: true,
            pool_size: 2,
            ..Options::default()
        }
        .configure(move |config| config.container_pool.box_sshd_io = io),
    )
}

fn ssh_root(hermes: &Hermes) -> Command {
    hermes.ssh(ROOT.0, &[ROOT.1], "password")
}

/// The metadata file of the one session that has `predicate`.
fn metadata_where(hermes: &Hermes, predicate: impl Fn(&Value) -> bool) -> Vec<Value> {
    hermes
        .metadata_files()
        .into_iter()
        .filter_map(|path| std::fs::read(path).ok())
        .filter_map(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .filter(|m| predicate(m))
        .collect()
}

#[test]
fn exec_keeps_streams_apart_returns_each_status_and_runs_piped_scripts() {
    require_docker!();
    exec_keeps_streams_apart(BoxSshdIo::Taken);
}

/// The same through the box's sshd relaying every byte.
#[test]
fn relayed_exec_keeps_streams_apart_returns_each_status_and_runs_piped_scripts() {
    require_docker!();
    exec_keeps_streams_apart(BoxSshdIo::Relay);
}

fn exec_keeps_streams_apart(io: BoxSshdIo) {
    let hermes = hermes_with_reuse_and(io);

    // stdout and stderr arrive on their own streams; the status comes back.
    let output = ssh_root(&hermes)
        .arg("echo to-stdout; echo to-stderr >&2; exit 3")
        .output()
        .expect("ssh");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "to-stdout\n");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "to-stderr\n");
    assert_eq!(output.status.code(), Some(3));

    for status in [0, 1, 3, 130] {
        let output = ssh_root(&hermes)
            .arg(format!("exit {status}"))
            .output()
            .expect("ssh");
        assert_eq!(output.status.code(), Some(status), "exit {status}");
    }
    // A command the shell cannot find: bash's text and status, as on the server.
    let output = ssh_root(&hermes).arg("no-such-tool").output().expect("ssh");
    assert_eq!(output.status.code(), Some(127));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no-such-tool: command not found"),
        "{output:?}"
    );

    // A script piped into `sh`: the client's EOF ends its stdin, the output still
    // arrives in full.
    let output = run_with_stdin(
        ssh_root(&hermes).arg("sh"),
        b"uname -s\necho piped-$((2+3))\nexit 4\n",
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "Linux\npiped-5\n");
    assert_eq!(output.status.code(), Some(4));

    // The command runs through the user's shell, without a terminal unless asked.
    let out = succeeded(ssh_root(&hermes).arg("echo $0; tty; true"));
    assert_eq!(out, "bash\nnot a tty\n");
    let out = succeeded(ssh_root(&hermes).arg("-tt").arg("tty"));
    assert!(out.starts_with("/dev/pts/"), "{out:?}");

    // env: LANG and LC_* reach the process; anything else is refused. Both are logged.
    let out = succeeded(
        ssh_root(&hermes)
            .args(["-o", "SetEnv=LC_TIME=de_DE.UTF-8 EVIL=1"])
            .arg("echo \"$LC_TIME|${EVIL-unset}\""),
    );
    assert_eq!(out, "de_DE.UTF-8|unset\n");
    let events = hermes.wait_for_at_least("cowrie.client.var", 2);
    let vars = events.of("cowrie.client.var");
    assert!(
        vars.iter().any(|e| e["name"] == "LC_TIME"
            && e["value"] == "de_DE.UTF-8"
            && e["accepted"] == true),
        "{vars:?}"
    );
    assert!(
        vars.iter()
            .any(|e| e["name"] == "EVIL" && e["value"] == "1" && e["accepted"] == false),
        "{vars:?}"
    );

    // An unknown subsystem is refused as sshd refuses it.
    let output = ssh_root(&hermes)
        .args(["-s"])
        .arg("no-such-subsystem")
        .output()
        .expect("ssh");
    assert_eq!(output.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("subsystem request failed on channel 0"),
        "{output:?}"
    );

    // The commands are in the log, and each status in its session's metadata.
    hermes.wait_for_events(
        "the commands, statuses and the refused subsystem",
        |events| {
            metadata_where(&hermes, |m| m["exit_status"] == 130).len() == 1
                && events
                    .of("cowrie.command.input")
                    .iter()
                    .any(|e| e["input"] == "exit 130")
                && events
                    .of("hermes.session.subsystem")
                    .iter()
                    .any(|e| e["name"] == "no-such-subsystem" && e["accepted"] == false)
        },
    );
}

#[test]
fn large_and_binary_output_and_input_arrive_intact() {
    require_docker!();
    let hermes = hermes_with_reuse();
    let dir = tempfile::tempdir().expect("tempdir");

    // 100 MB of random bytes made in the container; its own hash on stderr.
    let output = ssh_root(&hermes)
        .arg("head -c 104857600 /dev/urandom | tee >(sha256sum >&2)")
        .output()
        .expect("ssh");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(output.stdout.len(), 104_857_600);
    let remote_hash = String::from_utf8_lossy(&output.stderr)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(sha256_hex(&output.stdout), remote_hash);

    // 50 MB through `cat` and back: input and output at once, no deadlock.
    let input = dir.path().join("input");
    binary_file(&input, 50 << 20);
    let bytes = std::fs::read(&input).expect("input");
    let output = run_with_stdin(ssh_root(&hermes).arg("cat"), &bytes);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(output.stdout.len(), bytes.len());
    assert!(output.stdout == bytes, "echoed bytes differ");
}

#[test]
fn scp_copies_both_ways_in_both_protocols_and_keeps_a_100mb_binary_intact() {
    require_docker!();
    let hermes = hermes_with_reuse();
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("payload.bin");
    binary_file(&big, 100 << 20);
    let hash = sha256_file(&big);
    let scp = |args: &[&str]| {
        let mut command = hermes.openssh("scp", &[ROOT.1], "password");
        command.args(args).current_dir(dir.path());
        succeeded(&mut command)
    };

    // Upload (SFTP protocol, OpenSSH 9's default), check it there, download again.
    scp(&["payload.bin", "root@127.0.0.1:/root/"]);
    let out = succeeded(ssh_root(&hermes).arg("sha256sum /root/payload.bin"));
    assert!(out.starts_with(&hash), "{out} vs {hash}");
    scp(&["root@127.0.0.1:/root/payload.bin", "back.bin"]);
    assert_eq!(sha256_file(&dir.path().join("back.bin")), hash);

    // The legacy protocol (`scp -O`) runs the container's own scp.
    scp(&["-O", "payload.bin", "root@127.0.0.1:/tmp/legacy.bin"]);
    scp(&["-O", "root@127.0.0.1:/tmp/legacy.bin", "legacy-back.bin"]);
    assert_eq!(sha256_file(&dir.path().join("legacy-back.bin")), hash);

    // A server file, and a directory tree both ways, in both protocols.
    scp(&["root@127.0.0.1:/etc/passwd", "passwd"]);
    let passwd = std::fs::read_to_string(dir.path().join("passwd")).expect("passwd");
    assert!(
        passwd.starts_with("root:x:0:0:root:/root:/bin/bash\n"),
        "{passwd}"
    );
    std::fs::create_dir_all(dir.path().join("tree/sub")).expect("tree");
    std::fs::write(dir.path().join("tree/a.txt"), "alpha\n").expect("a");
    std::fs::write(dir.path().join("tree/sub/b.txt"), "beta\n").expect("b");
    for (flags, name) in [(&[][..], "tree-sftp"), (&["-O"][..], "tree-scp")] {
        let mut args: Vec<&str> = flags.to_vec();
        args.push("-r");
        let target = format!("root@127.0.0.1:/root/{name}");
        let up = [args.clone(), vec!["tree", target.as_str()]].concat();
        scp(&up);
        let down = [args, vec![target.as_str(), name]].concat();
        scp(&down);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(name).join("sub/b.txt")).expect("b back"),
            "beta\n"
        );
    }
    let out =
        succeeded(ssh_root(&hermes).arg("cat /root/tree-scp/a.txt /root/tree-sftp/sub/b.txt"));
    assert_eq!(out, "alpha\nbeta\n");

    // The SFTP-mode copies went through the sftp subsystem.
    let events = hermes.events();
    assert!(
        events
            .of("hermes.session.subsystem")
            .iter()
            .any(|e| e["name"] == "sftp" && e["accepted"] == true)
    );
}

#[test]
fn sftp_put_get_ls_rename_rm_through_the_containers_sftp_server() {
    require_docker!();
    sftp_put_get_ls_rename_rm(BoxSshdIo::Taken, "sshd_taken");
}

/// The same through the box's sshd relaying every byte.
#[test]
fn relayed_sftp_put_get_ls_rename_rm_through_the_containers_sftp_server() {
    require_docker!();
    sftp_put_get_ls_rename_rm(BoxSshdIo::Relay, "sshd");
}

fn sftp_put_get_ls_rename_rm(io: BoxSshdIo, path: &str) {
    let hermes = hermes_with_reuse_and(io);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("dropper.sh"), "#!/bin/sh\necho pwned\n").expect("file");
    let batch = dir.path().join("batch");
    std::fs::write(
        &batch,
        "cd /tmp\nput dropper.sh\nls -l dropper.sh\nrename dropper.sh renamed.sh\nget renamed.sh fetched.sh\nls\nrm renamed.sh\nls\n",
    )
    .expect("batch");
    // Commands on stdin (batch mode, -b, would forbid the password prompt).
    let mut command = hermes.openssh("sftp", &[ROOT.1], "password");
    command.arg("root@127.0.0.1").current_dir(dir.path());
    let output = run_with_stdin(&mut command, &std::fs::read(&batch).expect("batch"));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        out.contains(" root ") && out.contains("dropper.sh"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("fetched.sh")).expect("fetched"),
        "#!/bin/sh\necho pwned\n"
    );
    // After rm, the last listing no longer has it.
    let last_listing = out.rsplit("sftp> ls").next().unwrap_or_default();
    assert!(!last_listing.contains("renamed.sh"), "{out}");
    let out = succeeded(ssh_root(&hermes).arg("ls /tmp/renamed.sh 2>&1; echo $?"));
    assert!(out.ends_with("2\n"), "{out}");

    // The box's own sshd ran its sftp-server for it (OpenSSH 9.2 logs a subsystem
    // request only when it fails).
    let events = hermes.wait_for("hermes.session.subsystem");
    let subsystem = events.of("hermes.session.subsystem")[0];
    assert_eq!(subsystem["name"], "sftp");
    assert_eq!(subsystem["accepted"], true);
    let paths: Vec<&str> = events
        .of("hermes.channel.process")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(paths.iter().all(|p| *p == path), "{paths:?}");
    let out =
        succeeded(ssh_root(&hermes).arg("grep -c 'subsystem request' /var/log/auth.log; true"));
    assert_eq!(out.trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_of_one_connection_share_the_container_up_to_max_sessions() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let client = Client::login(hermes.port, ROOT.0, ROOT.1).await;

    // Three commands at once on three channels of one connection.
    let started = Instant::now();
    let mut shells = Vec::new();
    for n in 0..3 {
        shells.push(
            client
                .exec(&format!("sleep 1; echo {n} > /tmp/ch{n}; hostname"))
                .await,
        );
    }
    for mut shell in shells {
        assert!(shell.read_to_close(Duration::from_secs(20)).await);
        assert_eq!(shell.text(), "web-prod-01\n");
        assert_eq!(shell.exit_status, Some(0));
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "ran one after another: {elapsed:?}"
    );
    let mut shell = client.exec("cat /tmp/ch0 /tmp/ch1 /tmp/ch2").await;
    assert!(shell.read_to_close(Duration::from_secs(10)).await);
    assert_eq!(
        shell.text(),
        "0\n1\n2\n",
        "one container for the connection"
    );

    // Ten open sessions are allowed, the eleventh is refused as sshd refuses it.
    let mut open = Vec::new();
    for n in 0..10 {
        match client.handle.channel_open_session().await {
            Ok(channel) => open.push(channel),
            Err(error) => panic!("session {} of 10 refused: {error:?}", n + 1),
        }
    }
    match client.handle.channel_open_session().await {
        Err(russh::Error::ChannelOpenFailure(reason)) => {
            assert_eq!(reason, russh::ChannelOpenFailure::ConnectFailed)
        }
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(_) => panic!("an eleventh session was opened"),
    }
    // Closing one makes room again.
    let first = open.remove(0);
    first.close().await.expect("close");
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .handle
        .channel_open_session()
        .await
        .expect("room again after a close");
    let events = hermes.wait_for_events("the refused session", |events| {
        events
            .of("hermes.channel.refused")
            .iter()
            .any(|e| e["channel_type"] == "session")
    });
    assert_eq!(events.count_of("hermes.container.allocate"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_the_process_and_are_logged() {
    require_docker!();
    // The box's sshd signals a session's program only through its privilege-
    // separated child, which a root login does not have (OpenSSH: "session
    // signalling requires privilege separation"): a user's session, then.
    let hermes = Hermes::start(Options::default());
    signal_ends_the_program(&hermes, ("admin", "admin")).await;
    // Hermes's own session helper (the engine path) signals root's program too.
    let engine = Hermes::start(Options::default().configure(|config| {
        config.container_pool.session_server = SessionServer::Engine;
    }));
    signal_ends_the_program(&engine, ROOT).await;
}

/// A TERM sent for `login`'s `exec` ends its program at once, with the status a
/// shell reports for it, and is logged as delivered.
async fn signal_ends_the_program(hermes: &Hermes, login: (&str, &str)) {
    let client = Client::login(hermes.port, login.0, login.1).await;
    let mut shell = client.exec("echo started; sleep 60; echo not-killed").await;
    assert!(
        shell
            .read_until("started", 0, Duration::from_secs(20))
            .await
    );
    let sent = Instant::now();
    shell.channel.signal(Sig::TERM).await.expect("signal");
    assert!(
        shell.read_to_close(Duration::from_secs(10)).await,
        "still running"
    );
    assert!(sent.elapsed() < Duration::from_secs(5));
    assert!(!shell.text().contains("not-killed"), "{}", shell.text());
    assert_eq!(shell.exit_status, Some(128 + 15));

    let events = hermes.wait_for("hermes.session.signal");
    let signal = events.of("hermes.session.signal")[0];
    assert_eq!(signal["signal"], "TERM");
    assert_eq!(signal["delivered"], true);
}

/// `ssh -N -L 127.0.0.1:<port>:127.0.0.1:<target_port>`, listening: the child, its
/// local port and its stderr log. `ssh -L` cannot listen on port 0 ("Bad local
/// forwarding specification"), so a port free a moment ago may be taken before ssh
/// binds it: ssh then exits (ExitOnForwardFailure) saying "Address already in use"
/// and another port is tried (bounded). One bind address, not `localhost`: ssh would
/// count a bind on ::1 alone as success. Listening means the ssh process itself holds
/// the listener (another process's on the same port would not do).
fn forward_locally(hermes: &Hermes, target_port: u16) -> (std::process::Child, u16, PathBuf) {
    for attempt in 0..5 {
        let port = crate::ports::free_port();
        let log = hermes.dir.path().join(format!("ssh-forward-{attempt}.log"));
        let mut child = hermes
            .ssh_info(ROOT.0, &[ROOT.1])
            .args(["-o", "ExitOnForwardFailure=yes", "-N", "-L"])
            .arg(format!("127.0.0.1:{port}:127.0.0.1:{target_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("ssh log"))
            .spawn()
            .expect("ssh -L");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if crate::ports::listening_ports(child.id()).contains(&port) {
                return (child, port, log);
            }
            if let Ok(Some(status)) = child.try_wait() {
                let stderr = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(
                    stderr.contains("Address already in use"),
                    "ssh -L exited ({status}): {stderr}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "ssh -L did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("ssh -L could not listen on any of 5 free ports");
}

#[test]
fn local_forwarding_is_logged_and_refused_as_behind_an_egress_firewall() {
    require_docker!();
    // `forwarding.direct_tcpip` is the policy while the boxes have no network
    // (with `egress` on, its policy applies: egress_forward.rs).
    let hermes = Hermes::start(Options::default().configure(|c| c.egress.mode = EgressMode::Off));
    // Something listens where the forward points: it must never see a connection.
    let target = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    target.set_nonblocking(true).expect("nonblocking");
    let target_port = target.local_addr().expect("addr").port();
    let (mut child, local_port, log) = forward_locally(&hermes, target_port);
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", local_port)).expect("connect to ssh -L");
    let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let events = hermes.wait_for("cowrie.direct-tcpip.request");
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    // What the OpenSSH client prints against Debian's sshd when the connect fails
    // (channel 0 is the client's one listener, 1 the forwarded connection).
    assert!(
        stderr.contains("channel 1: open failed: connect failed: Connection refused"),
        "{stderr}"
    );
    assert!(target.accept().is_err(), "the forward reached its target");

    let request = events.of("cowrie.direct-tcpip.request")[0];
    assert_eq!(request["dst_ip"], "127.0.0.1");
    assert_eq!(request["dst_port"], target_port);
    assert_eq!(request["orig_ip"], "127.0.0.1");
    assert_eq!(request["accepted"], false);
    assert!(request["orig_port"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_mode_accepts_forwards_and_logs_what_is_sent_within_bounds() {
    require_docker!();
    let hermes = Hermes::start(Options::default().configure(|c| {
        c.egress.mode = EgressMode::Off;
        c.forwarding.direct_tcpip = DirectTcpipMode::Capture;
        c.forwarding.capture_bytes = ByteSize::kib(1);
        c.forwarding.capture_seconds = Seconds::new(2);
    }));
    let client = Client::login(hermes.port, ROOT.0, ROOT.1).await;
    let started = Instant::now();
    let mut channel = client
        .handle
        .channel_open_direct_tcpip("mx.example.com", 25, "10.9.8.7", 40000)
        .await
        .expect("accepted in capture mode");
    channel
        .data_bytes(&b"EHLO spam.example\r\nMAIL FROM:<a@b>\r\n"[..])
        .await
        .expect("send");
    // Nothing answers; the channel is closed at the time bound.
    let mut received = 0;
    while let Some(message) = channel.wait().await {
        if let ChannelMsg::Data { data } = message {
            received += data.len();
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(received, 0, "nothing answered");
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(10),
        "closed after {elapsed:?}"
    );

    // Past the byte bound the channel is closed at once and the rest not kept.
    let started = Instant::now();
    let mut channel = client
        .handle
        .channel_open_direct_tcpip("198.51.100.7", 3128, "10.9.8.7", 40001)
        .await
        .expect("accepted in capture mode");
    channel.data_bytes(vec![b'x'; 4096]).await.expect("send");
    while channel.wait().await.is_some() {}
    assert!(started.elapsed() < Duration::from_secs(1));

    // Data comes in events of at most 512 bytes each (an event field's bound).
    let events = hermes.wait_for_events("the captured data", |events| {
        let kept: usize = events
            .of("cowrie.direct-tcpip.data")
            .iter()
            .filter(|e| e["dst_port"] == 3128)
            .filter_map(|e| e["data"].as_str())
            .map(str::len)
            .sum();
        kept >= 1024
    });
    let request = events.of("cowrie.direct-tcpip.request")[0];
    assert_eq!(request["dst_ip"], "mx.example.com");
    assert_eq!(request["dst_port"], 25);
    assert_eq!(request["orig_ip"], "10.9.8.7");
    assert_eq!(request["orig_port"], 40000);
    assert_eq!(request["accepted"], true);
    let data = |port: u64| -> String {
        events
            .of("cowrie.direct-tcpip.data")
            .iter()
            .filter(|e| e["dst_port"] == port)
            .filter_map(|e| e["data"].as_str())
            .collect()
    };
    assert_eq!(data(25), "EHLO spam.example\\r\\nMAIL FROM:<a@b>\\r\\n");
    assert_eq!(data(3128), "x".repeat(1024), "kept exactly the 1k bound");
}

#[test]
fn remote_x11_and_agent_forwarding_are_answered_as_debians_sshd_and_logged() {
    require_docker!();
    let hermes = hermes_with_reuse();
    // -R: a port of the server's choosing is "allocated", a privileged one is not.
    let output = hermes
        .ssh_info(ROOT.0, &[ROOT.1])
        .args(["-R", "0:127.0.0.1:80", "-R", "22:127.0.0.1:80"])
        .arg("sleep 1")
        .output()
        .expect("ssh -R");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Allocated port ")
            && stderr.contains(" for remote forward to 127.0.0.1:80"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Warning: remote port forwarding failed for listen port 22"),
        "{stderr}"
    );
    assert_eq!(output.status.code(), Some(0));

    // -X: X11Forwarding yes in Debian's sshd_config: a display and a cookie.
    let out = succeeded(
        ssh_root(&hermes)
            .env("DISPLAY", ":0")
            .arg("-X")
            .arg("echo $DISPLAY; xauth list | wc -l"),
    );
    assert_eq!(out, "localhost:10.0\n1\n");

    let events = hermes.wait_for_events("forwarding events", |events| {
        events.count_of("hermes.forward.remote") >= 2 && events.has("hermes.forward.x11")
    });
    let remote = events.of("hermes.forward.remote");
    assert!(remote.iter().any(|e| e["port"] == 0
        && e["accepted"] == true
        && e["allocated_port"].as_u64().is_some()));
    assert!(
        remote
            .iter()
            .any(|e| e["port"] == 22 && e["accepted"] == false)
    );
    let x11 = events.of("hermes.forward.x11")[0];
    assert_eq!(x11["auth_protocol"], "MIT-MAGIC-COOKIE-1");
    assert_eq!(x11["accepted"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_forwarding_gives_the_session_a_socket_and_is_logged() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let client = Client::login(hermes.port, ROOT.0, ROOT.1).await;
    let channel = client.handle.channel_open_session().await.expect("open");
    channel.agent_forward(true).await.expect("agent request");
    channel
        .exec(
            true,
            "echo $SSH_AUTH_SOCK; test -S \"$SSH_AUTH_SOCK\" && echo socket",
        )
        .await
        .expect("exec");
    let mut shell = crate::client::Shell::new(channel);
    assert!(shell.read_to_close(Duration::from_secs(20)).await);
    let text = shell.text();
    let mut lines = text.lines();
    let socket = lines.next().unwrap_or_default();
    assert!(
        socket.starts_with("/tmp/ssh-") && socket.contains("/agent."),
        "{text}"
    );
    assert_eq!(lines.next(), Some("socket"), "{text}");
    let events = hermes.wait_for("hermes.forward.agent");
    assert_eq!(events.of("hermes.forward.agent")[0]["accepted"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_cannot_start_gets_the_exec_stage_message() {
    require_docker!();
    // Hermes's own session helper (the engine path): with the box's sshd, a box
    // without bash answers as sshd does ("/bin/bash: No such file or directory").
    let hermes = Hermes::start(Options::default().configure(|config| {
        config.container_pool.session_server = SessionServer::Engine;
    }));
    let client = Client::login(hermes.port, ROOT.0, ROOT.1).await;
    // The attacker breaks the machine: no shell can start in it any more.
    let mut first = client
        .exec("mv /bin/bash /bin/bash.gone; mv /usr/bin/bash /usr/bin/bash.gone 2>/dev/null; true")
        .await;
    assert!(first.read_to_close(Duration::from_secs(20)).await);
    let mut shell = client.shell(80, 24).await;
    assert!(shell.read_to_close(Duration::from_secs(20)).await);
    assert_eq!(shell.text(), "-bash: fork: Cannot allocate memory\r\n");
    let events = hermes.wait_for_events("the session error", |events| {
        events
            .of("hermes.session.error")
            .iter()
            .any(|e| e["stage"] == "exec_start")
            && events.count_of("cowrie.session.closed") == 1
    });
    assert!(!events.is_empty());
    let metadata = metadata_where(&hermes, |m| m["end_reason"] == "exec_failed");
    assert_eq!(metadata.len(), 1, "{metadata:?}");
}
