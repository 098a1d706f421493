//! Attacks run inside a container; the checks look at the host, at Hermes and at the
//! other sessions. Part of the normal test run.

use std::process::Command;
use std::time::{Duration, Instant};

use hermes_core::config::{ByteSize, EgressMode, SeccompProfile};
use serde_json::Value;

use crate::client::{Client, Shell, output_lines};
use crate::events::Events;
use crate::harness::{Hermes, Options};

use crate::client::ROOT_PROMPT;

async fn root_shell(hermes: &Hermes) -> (Client, Shell) {
    crate::client::root_shell(hermes.port).await
}

fn allocated_containers(hermes: &Hermes) -> Vec<String> {
    hermes
        .events_of("hermes.container.allocate")
        .iter()
        .filter_map(|e| e["container_id"].as_str().map(str::to_owned))
        .collect()
}

fn docker_stat(container: &str, format: &str) -> String {
    let output = Command::new("docker")
        .args(["stats", "--no-stream", "--format", format, container])
        .output()
        .expect("docker stats");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The file `name` of `container`'s cgroup for `controller`, read from the host through
/// its init process (cgroup v1: `/sys/fs/cgroup/<controller>/<path>`; v2: one tree).
fn cgroup_file(container: &str, controller: &str, name: &str) -> String {
    let output = Command::new("docker")
        .args(["inspect", "--format", "{{.State.Pid}}", container])
        .output()
        .expect("docker inspect");
    let pid = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("cgroups of {container}'s init ({pid}): {e}"));
    let entries: Vec<(&str, &str)> = cgroups
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            fields.next()?;
            Some((fields.next()?, fields.next()?))
        })
        .collect();
    let v1 = entries
        .iter()
        .find(|(controllers, _)| controllers.split(',').any(|c| c == controller))
        .map(|(controllers, path)| format!("/sys/fs/cgroup/{controllers}{path}"));
    let v2 = || {
        entries
            .iter()
            .find(|(controllers, _)| controllers.is_empty())
            .map(|(_, path)| format!("/sys/fs/cgroup{path}"))
    };
    let dir = v1
        .or_else(v2)
        .unwrap_or_else(|| panic!("no {controller} cgroup in {cgroups}"));
    std::fs::read_to_string(format!("{dir}/{name}")).unwrap_or_else(|e| panic!("{dir}/{name}: {e}"))
}

/// How many times `container`'s processes were refused a fork by its pids limit.
fn pids_limit_hits(container: &str) -> u64 {
    let events = cgroup_file(container, "pids", "pids.events");
    events
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no max counter in pids.events: {events}"))
}

/// CPU time `container` has used (cgroup v1 `cpuacct.usage`, v2 `cpu.stat`).
fn cpu_used(container: &str) -> Duration {
    if std::path::Path::new("/sys/fs/cgroup/cpuacct").exists() {
        let ns = cgroup_file(container, "cpuacct", "cpuacct.usage");
        Duration::from_nanos(ns.trim().parse().expect("cpuacct.usage"))
    } else {
        let stat = cgroup_file(container, "cpu", "cpu.stat");
        let us = stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no usage_usec in cpu.stat: {stat}"));
        Duration::from_micros(us)
    }
}

fn hermes_alive(hermes: &Hermes) -> bool {
    std::path::Path::new(&format!("/proc/{}", hermes.pid())).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_stays_inside_its_pids_limit() {
    require_docker!();
    let hermes = Hermes::start(Options {
        pool_size: 2,
        ..Options::default()
    });
    let (_bomber, bomb) = root_shell(&hermes).await;
    bomb.send("bomb() { bomb | bomb & }; bomb\n").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = allocated_containers(&hermes)[0].clone();
    let pids: u32 = tokio::task::block_in_place(|| docker_stat(&victim, "{{.PIDs}}"))
        .parse()
        .expect("pids");
    assert!(pids <= 100, "{pids} processes");
    // The bomb did go off: it ran into the limit, not short of it.
    let (hits, max) = tokio::task::block_in_place(|| {
        (
            pids_limit_hits(&victim),
            cgroup_file(&victim, "pids", "pids.max"),
        )
    });
    println!("fork bomb: {pids} processes, {hits} forks refused at pids.max {max}");
    assert_eq!(max.trim(), "100", "the configured pids limit");
    assert!(hits > 0, "the fork bomb never reached the pids limit");
    // Another session is served as usual, promptly.
    let started = Instant::now();
    let (_other, mut shell) = root_shell(&hermes).await;
    let out = shell.run("echo fine-$((3*3))", ROOT_PROMPT).await;
    assert!(out.contains("fine-9"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(hermes_alive(&hermes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_is_killed_inside_the_container_only() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let (_client, mut shell) = root_shell(&hermes).await;
    let rss_before = hermes.rss_kib();
    let out = shell
        .run(
            "python3 -c 'b = bytearray(700 * 1024 * 1024)'; echo status=$?",
            ROOT_PROMPT,
        )
        .await;
    assert!(out.contains("Killed"), "{out}");
    assert!(out.contains("status=137"), "{out}");
    let out = shell.run("echo still-$((2+2))", ROOT_PROMPT).await;
    assert!(out.contains("still-4"), "the session goes on: {out}");
    assert!(hermes_alive(&hermes));
    assert!(
        hermes.rss_kib() < rss_before + 50_000,
        "Hermes's own memory did not balloon"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_burn_is_held_to_the_quota() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let (_client, mut shell) = root_shell(&hermes).await;
    shell
        .run(
            "for i in 1 2 3 4; do (while :; do :; done) & done; sleep 2",
            ROOT_PROMPT,
        )
        .await;
    let container = allocated_containers(&hermes)[0].clone();
    let (used_before, since) =
        tokio::task::block_in_place(|| (cpu_used(&container), Instant::now()));
    let cpu = tokio::task::block_in_place(|| docker_stat(&container, "{{.CPUPerc}}"));
    let percent: f64 = cpu.trim_end_matches('%').parse().expect("cpu percent");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (used, elapsed) =
        tokio::task::block_in_place(|| (cpu_used(&container) - used_before, since.elapsed()));
    let share = used.as_secs_f64() / elapsed.as_secs_f64();
    println!(
        "four busy loops in a 0.5-core container: {cpu} (docker stats); {used:?} of CPU in {elapsed:?} ({:.0}% of a core, cgroup)",
        share * 100.0
    );
    assert!(percent < 65.0, "cpu {cpu} over the 0.5-core quota");
    assert!(
        share < 0.65,
        "{used:?} of CPU in {elapsed:?}: over the quota"
    );
    // The loops did run (an idle container uses next to nothing); the floor is low
    // because the machine's other work can take the cores from them.
    assert!(
        used >= Duration::from_millis(200),
        "the busy loops did not run: {used:?} of CPU in {elapsed:?}"
    );
    shell.run("kill $(jobs -p)", ROOT_PROMPT).await;
}

/// Writes 60 MB in four files under `dir`, past a 40 MiB `disk_limit`: the session
/// ends with bash's "No space left on device" and a `disk_limit` error. Its events.
pub(crate) async fn fill_past_the_disk_limit(
    hermes: &Hermes,
    shell: &mut Shell,
    dir: &str,
) -> Vec<Value> {
    shell
        .send(&format!("d={dir}; mkdir -p $d; for i in 1 2 3 4; do head -c 15000000 /dev/zero > $d/f$i; done; sleep 60\n"))
        .await;
    shell
        .expect("No space left on device", Duration::from_secs(30))
        .await;
    assert!(shell.read_to_close(Duration::from_secs(10)).await);
    let events = tokio::task::block_in_place(|| hermes.wait_for("cowrie.session.closed"));
    assert!(
        events
            .of("hermes.session.error")
            .into_iter()
            .any(|e| e["stage"] == "disk_limit"),
        "no disk_limit error"
    );
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_fill_is_bounded_and_recordings_stay_small() {
    require_docker!();
    let hermes = Hermes::start(Options::default().configure(|c| {
        c.container_pool.security.disk_limit = ByteSize::mib(40);
        c.container_pool.security.max_file_size = ByteSize::mib(16);
        c.recording.max_recording_size = ByteSize::mib(1);
    }));
    let (_client, mut shell) = root_shell(&hermes).await;
    // One file cannot outgrow RLIMIT_FSIZE.
    let out = shell
        .run(
            "head -c 30000000 /dev/zero > /root/big; stat -c %s /root/big",
            ROOT_PROMPT,
        )
        .await;
    assert!(out.contains("File size limit exceeded"), "{out}");
    assert!(out.contains("16777216"), "{out}");
    // Lots of output: the recording stops at its cap, the client still gets it all.
    let out = shell
        .run("head -c 2000000 /dev/urandom | base64 -w 0 | wc -c; head -c 1500000 /dev/urandom | base64", ROOT_PROMPT)
        .await;
    assert!(out.contains("2666668"), "{}", &out[..200.min(out.len())]);
    // Many files past disk_limit: the session is ended within a few seconds.
    let started = Instant::now();
    let events = fill_past_the_disk_limit(&hermes, &mut shell, "/root").await;
    println!("disk fill stopped {:?} after it began", started.elapsed());
    let session = events
        .first_of("cowrie.session.closed")
        .and_then(|e| e["session"].as_str())
        .expect("session")
        .to_owned();
    let metadata: Value = serde_json::from_slice(
        &std::fs::read(hermes.session_file(&session.to_string(), "json")).expect("metadata"),
    )
    .expect("json");
    assert_eq!(metadata["end_reason"], "disk_limit");
    assert_eq!(metadata["recording_truncated"], true);
    let cast = std::fs::metadata(hermes.session_file(&session.to_string(), "cast")).expect("cast");
    assert!(cast.len() <= 1 << 20, "recording {} bytes", cast.len());
    // The container is stopped (and kept) once the session is over.
    let deadline = Instant::now() + Duration::from_secs(20);
    while hermes.containers(Some("exited")).is_empty() {
        assert!(Instant::now() < deadline, "container not stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_network_no_docker_socket_no_raw_sockets() {
    require_docker!();
    // `egress.mode: off`: the box has no network at all (the default, `fetch`, gives
    // it a link that ends at Hermes: egress.rs).
    let hermes = Hermes::start(Options::default().configure(|c| c.egress.mode = EgressMode::Off));
    let (_client, mut shell) = root_shell(&hermes).await;
    let out = shell
        .run(
            "ip -o link | cut -d: -f2 | tr -d ' '; echo routes=$(ip route | wc -l)",
            ROOT_PROMPT,
        )
        .await;
    assert_eq!(output_lines(&out)[..2], ["lo", "routes=0"], "{out}");
    let out = shell
        .run(
            "curl -sS -m 3 http://172.17.0.1/ 2>&1; curl -sS -m 3 http://1.1.1.1/ 2>&1",
            ROOT_PROMPT,
        )
        .await;
    assert_eq!(out.matches("curl: (7)").count(), 2, "{out}");
    let out = shell
        .run(
            "ls /var/run/docker.sock /run/docker.sock 2>&1 | grep -c 'No such file'",
            ROOT_PROMPT,
        )
        .await;
    assert_eq!(output_lines(&out)[0], "2", "{out}");
    let out = shell
        .run("python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)' 2>&1 | tail -n 1", ROOT_PROMPT)
        .await;
    assert!(out.contains("PermissionError"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileges_are_exactly_as_configured() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let (_client, mut shell) = root_shell(&hermes).await;
    // CHOWN (0), DAC_OVERRIDE (1), FOWNER (3), FSETID (4), KILL (5), SETGID (6),
    // SETUID (7), SETPCAP (8), NET_BIND_SERVICE (10), SYS_CHROOT (18): 0x405fb, and
    // nothing else in any set.
    let out = shell
        .run(
            "grep -E '^(CapPrm|CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status",
            ROOT_PROMPT,
        )
        .await;
    for line in [
        "CapPrm:\t00000000000405fb",
        "CapEff:\t00000000000405fb",
        "CapBnd:\t00000000000405fb",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(out.contains(line), "`{line}` in {out}");
    }
    // A setuid-root binary gives an unprivileged user nothing (no-new-privileges).
    let out = shell
        .run("cp /usr/bin/id /tmp/id-suid && chmod 4755 /tmp/id-suid && setpriv --reuid=65534 --regid=65534 --clear-groups /tmp/id-suid -u", ROOT_PROMPT)
        .await;
    assert_eq!(output_lines(&out)[0], "65534", "{out}");
    let out = shell.run("mount -t tmpfs none /mnt 2>&1; echo 50000 > /proc/sys/kernel/pid_max 2>&1; unshare -U true 2>&1; insmod /nonexistent.ko 2>&1", ROOT_PROMPT).await;
    assert!(out.contains("mount: /mnt: permission denied"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(
        out.contains("unshare failed: Operation not permitted"),
        "{out}"
    );
    // Root acts like root on the box's own files and processes: another user's
    // private home, a chroot (sshd's privilege separation), a signal to another
    // user's process. What would reach the host's kernel stays refused: raising a
    // priority, the kernel's log, device nodes.
    let out = shell
        .run(
            "ls -a /home/admin | grep -c bash_history; chroot / true && echo chroot-ok; kill -0 $(pgrep -u messagebus dbus-daemon) && echo kill-ok; nice -n -5 true 2>&1; dmesg 2>&1 | head -1; mknod /tmp/sda b 8 0 2>&1",
            ROOT_PROMPT,
        )
        .await;
    let lines = output_lines(&out);
    assert_eq!(lines[0], "1", "{out}");
    for expected in ["chroot-ok", "kill-ok"] {
        assert!(lines.iter().any(|l| l == expected), "{expected}: {out}");
    }
    assert!(
        out.contains("nice: cannot set niceness: Permission denied"),
        "{out}"
    );
    assert!(
        out.contains("dmesg: read kernel buffer failed: Operation not permitted"),
        "{out}"
    );
    assert!(
        out.contains("mknod: /tmp/sda: Operation not permitted"),
        "{out}"
    );
}

#[test]
fn the_runtime_setting_reaches_the_engine() {
    require_docker!();
    // The engine's default runtime, named explicitly, works.
    let hermes = Hermes::start(
        Options::default()
            .configure(|c| c.container_pool.security.runtime = Some("runc".to_owned())),
    );
    let out = crate::harness::succeeded(
        hermes
            .ssh("root", &["toor"], "password")
            .arg("echo runc-ok"),
    );
    assert_eq!(out, "runc-ok\n");
    drop(hermes);
    // A runtime the engine does not have: containers are refused, with the reason logged.
    let hermes = Hermes::start_unready(
        Options::default()
            .configure(|c| c.container_pool.security.runtime = Some("runsc".to_owned())),
    );
    // (The start-up also names runsc, saying boxes keep the host's clock under it:
    // the refusal is waited for itself.)
    let deadline = Instant::now() + Duration::from_secs(20);
    while !hermes.output().contains("cannot create pool container") {
        assert!(Instant::now() < deadline, "{}", hermes.output());
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = hermes
        .output()
        .lines()
        .find(|line| line.contains("cannot create pool container"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(refused.contains("runsc"), "{refused}");
    assert_eq!(hermes.containers(None), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_dies_ends_its_session_with_a_message_and_a_complete_record() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let (_client, mut shell) = root_shell(&hermes).await;
    shell.run("echo before-$((5*5))", ROOT_PROMPT).await;
    let container = allocated_containers(&hermes)[0].clone();
    let status = Command::new("docker")
        .args(["kill", &container])
        .output()
        .expect("docker kill");
    assert!(status.status.success());
    assert!(
        shell
            .read_until(
                "-bash: write error: Broken pipe",
                0,
                Duration::from_secs(15)
            )
            .await,
        "{}",
        shell.text()
    );
    assert!(shell.read_to_close(Duration::from_secs(10)).await);
    let events = tokio::task::block_in_place(|| hermes.wait_for("cowrie.session.closed"));
    assert!(events.has("cowrie.log.closed"));
    assert!(
        events
            .of("hermes.session.error")
            .into_iter()
            .any(|e| e["stage"] == "stream")
    );
    let session = events[0]["session"].as_str().expect("session").to_owned();
    let (_, cast) = crate::harness::read_cast(&hermes.session_file(&session.to_string(), "cast"));
    assert!(
        cast.iter()
            .any(|(_, code, data)| code == "o" && data.contains("before-25"))
    );
    assert!(
        cast.iter()
            .any(|(_, code, data)| code == "o" && data.contains("Broken pipe"))
    );
    let metadata: Value = serde_json::from_slice(
        &std::fs::read(hermes.session_file(&session.to_string(), "json")).expect("metadata"),
    )
    .expect("json");
    assert_eq!(metadata["end_reason"], "stream_error");
}

/// x86_64 numbers of the calls Hermes's seccomp profile refuses
/// (`hermes_sandbox::DENIED`; a test below checks this covers all of them).
const DENIED_X86_64: &[(&str, u32)] = &[
    ("io_uring_setup", 425),
    ("io_uring_enter", 426),
    ("io_uring_register", 427),
    ("bpf", 321),
    ("perf_event_open", 298),
    ("init_module", 175),
    ("finit_module", 313),
    ("delete_module", 176),
    ("memfd_secret", 447),
    ("modify_ldt", 154),
    ("userfaultfd", 323),
    ("keyctl", 250),
    ("add_key", 248),
    ("request_key", 249),
    ("kexec_load", 246),
    ("kexec_file_load", 320),
];

/// A command for the box: each denied call with arguments the kernel itself would
/// refuse with another errno (EFAULT, EINVAL, EBADF...), so EPERM can only be the
/// filter's; then clone3 (ENOSYS from the filter, EINVAL from the kernel), ptrace on a
/// missing process (ESRCH: it reaches the kernel), a thread (glibc falls back from
/// clone3 to clone), and the personality rules through setarch.
fn syscall_probe() -> String {
    let calls: Vec<String> = DENIED_X86_64
        .iter()
        .map(|(name, number)| format!("(\"{name}\", {number})"))
        .collect();
    format!(
        "python3 -c 'import ctypes, errno, threading
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return \"ok\" if r != -1 else errno.errorcode.get(ctypes.get_errno(), \"?\")
for name, nr in [{}]:
    print(name + \"=\" + call(nr, -1, 0, 0, 0, 0, 0))
print(\"clone3=\" + call(435, 0, 0))
print(\"ptrace=\" + call(101, 12, 999999, 0, 0))
t = threading.Thread(target=lambda: print(\"thread=ran\"))
t.start()
t.join()
'; echo linux32=$(setarch linux32 uname -m); setarch -R true 2>&1 | grep -c 'Operation not permitted'",
        calls.join(", ")
    )
}

fn probe_results(out: &str) -> std::collections::HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn the_seccomp_profile_refuses_io_uring_and_the_other_listed_calls() {
    let listed: Vec<&str> = DENIED_X86_64.iter().map(|(n, _)| *n).collect();
    let mut denied: Vec<&str> = hermes_sandbox::DENIED
        .iter()
        .flat_map(|d| d.names.iter().copied())
        .collect();
    denied.sort_unstable();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, denied, "the probe covers every denied call");
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let out = crate::harness::succeeded(
        hermes
            .ssh("root", &["toor"], "password")
            .arg(syscall_probe()),
    );
    println!("{out}");
    let results = probe_results(&out);
    for name in &listed {
        assert_eq!(
            results.get(*name).map(String::as_str),
            Some("EPERM"),
            "{name}: {out}"
        );
    }
    // Ordinary work goes on: clone3 falls back, threads start, ptrace reaches the
    // kernel, harmless personalities are allowed and ADDR_NO_RANDOMIZE is not.
    assert_eq!(results["clone3"], "ENOSYS", "{out}");
    assert_eq!(results["ptrace"], "ESRCH", "{out}");
    assert_eq!(results["thread"], "ran", "{out}");
    assert_eq!(results["linux32"], "i686", "{out}");
    assert_eq!(out.lines().last(), Some("1"), "setarch -R refused: {out}");
    drop(hermes);

    // Under the engine's default profile io_uring reaches the kernel (EFAULT for the
    // null parameters): the EPERM above is our profile's doing.
    let hermes = Hermes::start(
        Options::default()
            .configure(|c| c.container_pool.security.seccomp = SeccompProfile::DockerDefault),
    );
    let out = crate::harness::succeeded(
        hermes
            .ssh("root", &["toor"], "password")
            .arg(syscall_probe()),
    );
    let results = probe_results(&out);
    let io_uring = results.get("io_uring_setup").map(String::as_str);
    println!("under Docker's default profile: io_uring_setup={io_uring:?}");
    assert!(
        io_uring.is_some_and(|e| e != "EPERM"),
        "io_uring_setup under Docker's profile: {out}"
    );
    assert_eq!(results["thread"], "ran", "{out}");
}
