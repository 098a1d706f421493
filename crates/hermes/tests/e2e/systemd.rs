//! The systemd unit for real: a Debian 12 "host" in a container with every capability
//! (images/systemd-host, systemd as PID 1 and a Docker engine of its own) runs
//! `deploy/systemd/hermes.service` with this build's binary and the shipped
//! configuration. Egress works under the unit's sandbox (the box's link, DNS answered
//! by Hermes, an outbound connection logged and refused, nothing leaving the machine),
//! Hermes holds exactly the unit's capabilities, and `systemctl stop` leaves no
//! gateway namespace behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::compose::capabilities;
use crate::harness::unique_sensor;
use crate::ports::parse_published_port;

const HOST_IMAGE: &str = "hermes-systemd-host:latest";
const TARGET_IMAGE: &str = "hermes-target:latest";
/// The image Hermes falls back to where a box cannot have a cgroup of its own.
const FALLBACK_IMAGE: &str = "hermes-target:sysvinit";

/// The name the box resolves, to an address of the documentation range: Hermes
/// answers it from its static map, and refuses the connection to it.
const NAME: &str = "dropper.test";
const NAME_ADDRESS: &str = "192.0.2.10";

/// What the unit grants: NET_BIND_SERVICE, NET_ADMIN, SYS_ADMIN and the boxes' own
/// CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, SYS_CHROOT.
const UNIT_CAPABILITIES: u64 = 1 << 10
    | 1 << 12
    | 1 << 21
    | 1
    | 1 << 1
    | 1 << 3
    | 1 << 4
    | 1 << 5
    | 1 << 6
    | 1 << 7
    | 1 << 8
    | 1 << 18;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Whether the host image and the target image are here (a failure under CI=true).
fn require_images() -> bool {
    let have = |image: &str| {
        Command::new("docker")
            .args(["image", "inspect", image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ok = have(HOST_IMAGE) && have(TARGET_IMAGE) && have(FALLBACK_IMAGE);
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{HOST_IMAGE}, {TARGET_IMAGE} or {FALLBACK_IMAGE} is missing: scripts/test.sh builds them (images/systemd-host/build.sh)"
        );
        eprintln!("SKIPPED: {HOST_IMAGE}, {TARGET_IMAGE} or {FALLBACK_IMAGE} is missing");
    }
    ok
}

/// The "host" container, removed with its engine's volume when dropped.
struct Host {
    name: String,
}

impl Host {
    /// `command` run in the host (as root, through `sh -c`).
    fn sh(&self, command: &str) -> Output {
        Command::new("docker")
            .args(["exec", &self.name, "sh", "-c", command])
            .output()
            .expect("docker exec")
    }

    /// Like `sh`, asserting success; its standard output.
    #[track_caller]
    fn ok(&self, command: &str) -> String {
        let output = self.sh(command);
        assert!(output.status.success(), "{command}: {}", text(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits (`limit` at most) for `command` to succeed.
    #[track_caller]
    fn wait_for(&self, command: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let output = self.sh(command);
            if output.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{command} still fails after {limit:?}: {}",
                text(&output)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The events Hermes wrote so far.
    fn events(&self) -> Vec<Value> {
        self.sh("cat /var/lib/hermes/data/logs/hermes.json")
            .stdout
            .split(|b| *b == b'\n')
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect()
    }

    /// Waits (30 s at most) for an event that `matches`.
    #[track_caller]
    fn wait_for_event(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(event) = self.events().into_iter().find(|e| matches(e)) {
                return event;
            }
            assert!(Instant::now() < deadline, "no event: {what}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The network namespaces (`net:[inode]` lines) process `pid` holds descriptors of.
    fn held_by(&self, pid: &str) -> String {
        self.ok(&format!(
            "for fd in /proc/{pid}/fd/*; do readlink \"$fd\"; done | grep '^net:' | sort -u || true"
        ))
    }

    /// The network namespaces (`net:[inode]`) held by descriptors of any process of
    /// the host, and the names in /run/netns.
    fn namespaces(&self) -> String {
        self.ok(
            "for fd in /proc/[0-9]*/fd/*; do readlink \"$fd\"; done 2>/dev/null | grep '^net:' | sort -u; ls /run/netns 2>/dev/null || true",
        )
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let journal = self.sh("journalctl -u hermes --no-pager -n 80");
            eprintln!("{}", text(&journal));
        }
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.name])
            .output();
    }
}

/// The shipped configuration, with a test sensor name, one box, the test's password,
/// and egress answering `NAME` itself and allowing no upstream: nothing leaves.
fn config(sensor: &str) -> String {
    let base = std::fs::read_to_string(repo().join("config/hermes.yaml")).expect("config");
    let sticky = "  mode: sticky\n  sticky:\n    state_file: \"data/state/auth-sticky.json\"\n";
    for piece in ["  port: 2222\n", sticky, "  size: 3\n"] {
        assert!(base.contains(piece), "{piece:?} not in config/hermes.yaml");
    }
    assert!(!base.contains("\negress:"), "{base}");
    base.replace(
        "  port: 2222\n",
        &format!("  port: 2222\n  sensor_name: {sensor}\n"),
    )
    .replace(sticky, "  mode: static\n")
    .replace("  size: 3\n", "  size: 1\n")
        + &format!(
            "egress:\n  mode: fetch\n  refused: reject\n  dns:\n    static_only: true\n    static_hosts:\n      {NAME}: \"{NAME_ADDRESS}\"\n"
        )
}

/// OpenSSH's `ssh` logging in as root with the password `toor` (SSH_ASKPASS, a
/// script in `dir`) to `port`, running `command`.
fn ssh(port: u16, dir: &Path, command: &str) -> Output {
    ssh_command(port, dir, command).output().expect("ssh")
}

fn ssh_command(port: u16, dir: &Path, command: &str) -> Command {
    let mut ssh = openssh("ssh", port, dir);
    ssh.arg("root@127.0.0.1").arg(command);
    ssh
}

/// OpenSSH's `program` (`ssh`, `scp`) with the password `toor` to `port`.
fn openssh(program: &str, port: u16, dir: &Path) -> Command {
    let mut command =
        crate::harness::openssh_command(dir, port, program, &["toor"], "password", "ERROR");
    command
        .stdin(Stdio::null())
        .args(["-o", "ConnectTimeout=20"]);
    command
}

/// An SSH session left open (its box and gateway namespace with it), killed when
/// dropped.
struct Session(std::process::Child);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_systemd_unit_runs_hermes_with_egress_and_stop_leaves_no_gateway_namespace() {
    require_docker!();
    if !require_images() {
        return;
    }
    let started = Instant::now();
    let sensor = unique_sensor();
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("hermes.yaml");
    std::fs::write(&config_path, config(&sensor)).expect("write config");
    let unit = repo().join("deploy/systemd/hermes.service");
    let mount = |from: &Path, to: &str| format!("{}:{to}:ro", from.display());

    // The host: systemd as PID 1, its engine's storage on a volume of its own (an
    // overlay cannot stack on the container's), Hermes's port on the loopback. The
    // unit, binary and configuration are installed where its comments say.
    let host = Host {
        name: format!("hermes-systemd-{}", sensor.replace('-', "")),
    };
    let run = Command::new("docker")
        .args(["run", "-d", "--cgroupns=private"])
        // --privileged less CAP_SYS_RESOURCE, which some engines cannot grant
        // (images/systemd-host/host-init makes /sys and the cgroups writable).
        .args(["--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE"])
        .args(["--security-opt", "seccomp=unconfined"])
        .args(["--security-opt", "apparmor=unconfined"])
        .args(["--security-opt", "systempaths=unconfined"])
        .args(["--name", &host.name, "--hostname", "hermes-host"])
        .args(["--label", &format!("hermes.test.sensor={sensor}")])
        .args(["--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp"])
        .args(["-v", "/var/lib/docker", "-p", "127.0.0.1:0:2222"])
        .args([
            "-v",
            &mount(
                Path::new(env!("CARGO_BIN_EXE_hermes")),
                "/usr/local/bin/hermes",
            ),
        ])
        .args(["-v", &mount(&unit, "/etc/systemd/system/hermes.service")])
        .args(["-v", &mount(&config_path, "/etc/hermes/hermes.yaml")])
        .arg(HOST_IMAGE)
        .output()
        .expect("docker run");
    assert!(run.status.success(), "{}", text(&run));
    let port = Command::new("docker")
        .args(["port", &host.name, "2222/tcp"])
        .output()
        .expect("docker port");
    let port = parse_published_port(&String::from_utf8_lossy(&port.stdout))
        .unwrap_or_else(|| panic!("no published port: {}", text(&port)));

    // Its engine up, with the boxes' images loaded from ours (which one boots depends
    // on whether this host can give a box a cgroup of its own).
    host.wait_for("docker info >/dev/null", Duration::from_secs(120));
    let mut save = Command::new("docker")
        .args(["save", TARGET_IMAGE, FALLBACK_IMAGE])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker save");
    let load = Command::new("docker")
        .args(["exec", "-i", &host.name, "docker", "load", "-q"])
        .stdin(save.stdout.take().expect("save's output"))
        .output()
        .expect("docker load");
    let saved = save.wait().expect("docker save");
    assert!(saved.success() && load.status.success(), "{}", text(&load));
    let booted = started.elapsed();

    // Hermes under the unit: up, one box ready, a login over SSH.
    host.ok("systemctl daemon-reload && systemctl start hermes");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let output = ssh(port, dir.path(), "true");
        if output.status.success() {
            break;
        }
        let state = host.sh("systemctl is-active hermes");
        let restarts = host.ok("systemctl show -p NRestarts --value hermes");
        assert_eq!(restarts.trim(), "0", "Hermes failed: {}", text(&output));
        assert!(
            Instant::now() < deadline,
            "no login within 180 s ({}): {}",
            text(&state),
            text(&output)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let logged_in = started.elapsed();

    // One session, open until Hermes stops: the box's link and resolver, a DNS
    // query answered by Hermes, a connection out refused.
    let mut session = Session(
        ssh_command(
            port,
            dir.path(),
            &format!(
                "ip -4 -o addr show dev eth0; ip route; cat /etc/resolv.conf; getent hosts {NAME}; curl -s -m 10 http://{NAME}:8081/x; echo rc=$?; echo session-ready; sleep 600"
            ),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ssh"),
    );
    let stdout = session.0.stdout.take().expect("ssh's output");
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answer = String::new();
    while !answer.contains("session-ready\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) => answer += &(line + "\n"),
            Err(error) => panic!("the session's commands did not end ({error}): {answer}"),
        }
    }
    assert!(answer.contains("inet 10.0.2.15/24"), "{answer}");
    assert!(answer.contains("default via 10.0.2.2"), "{answer}");
    assert!(answer.contains("nameserver 10.0.2.3"), "{answer}");
    assert!(
        answer
            .lines()
            .any(|l| l.starts_with(NAME_ADDRESS) && l.contains(NAME)),
        "{answer}"
    );
    assert!(answer.contains("rc="), "{answer}");
    assert!(!answer.contains("rc=0\n"), "{answer}");
    let dns = host.wait_for_event("the DNS query", |e| {
        e["eventid"] == "hermes.egress.dns"
            && e["query"].as_str().map(|q| q.trim_end_matches('.')) == Some(NAME)
            && e["type"] == "A"
    });
    assert_eq!(dns["answers"][0], NAME_ADDRESS, "{dns}");
    let refused = host.wait_for_event("the refused connection", |e| {
        e["eventid"] == "hermes.egress.connection"
            && e["dst_ip"] == NAME_ADDRESS
            && e["dst_port"] == 8081
    });
    assert_eq!(refused["answer"], "reject", "{refused}");

    // Root with exactly the unit's capabilities, no new privileges, a seccomp
    // filter; the session's gateway namespace held by Hermes, none mounted.
    let pid = host
        .ok("systemctl show -p MainPID --value hermes")
        .trim()
        .to_owned();
    assert!(pid.parse::<u32>().is_ok_and(|p| p > 1), "{pid}");
    let status = host.ok(&format!("cat /proc/{pid}/status"));
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t0\t0\t0")),
        "{status}"
    );
    for line in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(
            capabilities(&status, line),
            UNIT_CAPABILITIES,
            "{line} {status}"
        );
    }
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");
    let held = host.held_by(&pid);
    assert!(!held.trim().is_empty(), "Hermes holds no gateway namespace");
    let named = host.ok("ls /run/netns 2>/dev/null || true");
    assert!(
        !named.contains("hermes-"),
        "a gateway namespace is mounted: {named}"
    );

    // File transfers take the host's path (FIFOs through the box's /proc/PID/root,
    // the same kernel check as its namespace): scp up, then back down.
    let files = tempfile::tempdir().expect("tempdir");
    let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(files.path().join("up.bin"), &sent).expect("write");
    let up = openssh("scp", port, dir.path())
        .arg(files.path().join("up.bin"))
        .arg("root@127.0.0.1:/tmp/up.bin")
        .output()
        .expect("scp");
    assert!(up.status.success(), "{}", text(&up));
    let down = openssh("scp", port, dir.path())
        .arg("root@127.0.0.1:/tmp/up.bin")
        .arg(files.path().join("down.bin"))
        .output()
        .expect("scp");
    assert!(down.status.success(), "{}", text(&down));
    assert!(
        std::fs::read(files.path().join("down.bin")).expect("downloaded") == sent,
        "the file came back changed"
    );
    let journal = host.ok("journalctl -u hermes --no-pager");
    assert!(
        !journal.contains("file transfers go through the engine's stream"),
        "the host's path was not taken: {journal}"
    );

    // `systemctl stop` with the session open: Hermes gone, and with it every
    // gateway namespace (nothing holds them, nothing is mounted).
    let before = host.namespaces();
    for inode in held.lines() {
        assert!(before.contains(inode), "{inode} not seen: {before}");
    }
    host.ok("systemctl stop hermes");
    assert_eq!(host.sh("systemctl is-active hermes").stdout, b"inactive\n");
    let after = host.namespaces();
    for inode in held.lines() {
        assert!(!after.contains(inode), "{inode} still held: {after}");
    }
    assert!(!after.contains("hermes-"), "{after}");
    drop(session);
    // The tools Hermes runs work under the unit's sandbox too, `iptables` included
    // (an FTP transfer's data port, which this test does not reach): the unit's own
    // lines with another program, in the host's namespace this time.
    let tools = host.ok(
        r#"printf '#!/bin/sh\nset -e\niptables -t nat -I OUTPUT -d 192.0.2.99/32 -p tcp -j RETURN\niptables -t nat -D OUTPUT -d 192.0.2.99/32 -p tcp -j RETURN\nprintf "*filter\\n:INPUT ACCEPT [0:0]\\nCOMMIT\\n" | iptables-restore --noflush\nip link show lo >/dev/null\necho tools-work\n' >/usr/local/bin/tools-check
chmod 0755 /usr/local/bin/tools-check
sed -e 's|^Type=simple|Type=oneshot|' -e 's|^ExecStart=.*|ExecStart=/usr/local/bin/tools-check|' /etc/systemd/system/hermes.service >/etc/systemd/system/hermes-tools.service
systemctl daemon-reload
systemctl start hermes-tools
journalctl -u hermes-tools --no-pager"#,
    );
    assert!(tools.contains("tools-work"), "{tools}");
    let journal = host.ok("journalctl -u hermes --no-pager");
    assert!(
        journal.contains("Hermes holds them itself"),
        "the held namespaces are not logged: {journal}"
    );
    eprintln!(
        "systemd host booted with the target image loaded in {booted:?}, first login at {logged_in:?}, all done in {:?}",
        started.elapsed()
    );
}
