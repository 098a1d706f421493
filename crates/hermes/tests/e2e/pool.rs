//! Containers: one per session, pooled, stopped and kept, all stopped on SIGTERM.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{Client, root_shell};
use crate::events::Events;
use crate::harness::{Hermes, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_simultaneous_sessions_get_two_containers_recordings_and_metadata_files() {
    require_docker!();
    let hermes = Hermes::start(Options {
        pool_size: 2,
        ..Options::default()
    });
    // Both connect and log in before either opens its shell.
    let root = Client::login(hermes.port, "root", "toor").await;
    let admin = Client::login(hermes.port, "admin", "admin").await;
    let mut a = root.shell(80, 24).await;
    let mut b = admin.shell(90, 30).await;
    assert!(a.read_until("# ", 0, Duration::from_secs(20)).await);
    assert!(
        b.read_until("@web-prod-01", 0, Duration::from_secs(20))
            .await
    );
    a.send("touch /tmp/only-in-a && echo made-$((1+1))\n").await;
    assert!(a.read_until("made-2", 0, Duration::from_secs(10)).await);
    let mark = b.received.len();
    b.send("ls /tmp/only-in-a\n").await;
    assert!(
        b.read_until("No such file or directory", mark, Duration::from_secs(10))
            .await,
        "{}",
        b.text()
    );
    a.send("exit\n").await;
    b.send("exit\n").await;
    assert!(a.read_to_close(Duration::from_secs(10)).await);
    assert!(b.read_to_close(Duration::from_secs(10)).await);
    drop((a, b, root, admin));

    let events = hermes.wait_for_count("cowrie.session.closed", 2);
    let sessions: Vec<String> = events
        .of("cowrie.login.success")
        .into_iter()
        .filter_map(|e| e["session"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(sessions.len(), 2);
    assert_ne!(sessions[0], sessions[1]);
    let mut containers = HashSet::new();
    let mut usernames = HashSet::new();
    let mut ports = HashSet::new();
    for session in &sessions {
        let cast = hermes.session_file(&session.to_string(), "cast");
        assert!(cast.exists(), "{}", cast.display());
        let metadata: Value = serde_json::from_slice(
            &std::fs::read(hermes.session_file(&session.to_string(), "json")).expect("metadata"),
        )
        .expect("json");
        let connect = events
            .of("cowrie.session.connect")
            .into_iter()
            .find(|e| e["session"] == session.as_str())
            .expect("connect event");
        assert_eq!(
            metadata["src_port"], connect["src_port"],
            "each file has its own source port"
        );
        containers.insert(
            metadata["container_id"]
                .as_str()
                .expect("container")
                .to_owned(),
        );
        usernames.insert(metadata["username"].as_str().expect("username").to_owned());
        ports.insert(metadata["src_port"].as_u64().expect("port"));
    }
    assert_eq!(containers.len(), 2, "two different containers");
    assert_eq!(
        usernames,
        HashSet::from(["root".to_owned(), "admin".to_owned()])
    );
    assert_eq!(ports.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_refills_to_its_size_and_no_further() {
    require_docker!();
    let hermes = Hermes::start(Options {
        pool_size: 2,
        ..Options::default()
    });
    assert_eq!(hermes.containers(Some("running")).len(), 2);
    let client = Client::login(hermes.port, "root", "toor").await;
    let mut shell = client.shell(80, 24).await;
    assert!(shell.read_until("# ", 0, Duration::from_secs(20)).await);
    // One leased, and the pool back at two ready.
    let deadline = Instant::now() + Duration::from_secs(20);
    while hermes.containers(Some("running")).len() != 3 {
        assert!(Instant::now() < deadline, "pool did not refill");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shell.send("exit\n").await;
    assert!(shell.read_to_close(Duration::from_secs(10)).await);
    drop(shell);
    drop(client);
    // The released container is stopped and kept; the ready ones stay two.
    let deadline = Instant::now() + Duration::from_secs(20);
    while hermes.containers(Some("exited")).len() != 1 {
        assert!(Instant::now() < deadline, "released container not stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hermes.containers(Some("running")).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_session_open_stops_every_container_and_exits_zero() {
    require_docker!();
    let mut hermes = Hermes::start(Options::default());
    let client = Client::login(hermes.port, "root", "toor").await;
    let mut shell = client.shell(80, 24).await;
    assert!(shell.read_until("# ", 0, Duration::from_secs(20)).await);
    assert!(!hermes.containers(Some("running")).is_empty());

    let status = tokio::task::block_in_place(|| hermes.terminate());
    assert!(
        status.success(),
        "exit status {status}\n{}",
        hermes.output()
    );
    assert!(
        shell
            .read_until("The system will power off now!", 0, Duration::from_secs(5))
            .await,
        "the open session is told: {:?}",
        shell.text()
    );
    assert_eq!(
        hermes.containers(Some("running")),
        Vec::<String>::new(),
        "no container left running"
    );
    // The container that served the session is kept (stopped) for forensics.
    assert_eq!(hermes.containers(Some("exited")).len(), 1);
    let session = hermes
        .events()
        .first_of("cowrie.login.success")
        .and_then(|e| e["session"].as_str().map(str::to_owned))
        .expect("session");
    let metadata: Value = serde_json::from_slice(
        &std::fs::read(hermes.session_file(&session.to_string(), "json")).expect("metadata"),
    )
    .expect("json");
    assert_eq!(metadata["end_reason"], "shutdown");
    assert!(hermes.events().has("cowrie.session.closed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_pool_creates_containers_on_demand() {
    require_docker!();
    let hermes = Hermes::start(Options {
        pool_size: 1,
        ..Options::default()
    });
    // Three logins at once against a pool of one: the pool cannot refill that fast.
    let (a, b, c) = tokio::join!(
        Client::login(hermes.port, "root", "toor"),
        Client::login(hermes.port, "admin", "admin"),
        Client::login(hermes.port, "admin", "s3cret"),
    );
    let events = hermes.wait_for_count("hermes.container.allocate", 3);
    let allocations: Vec<&Value> = events.of("hermes.container.allocate");
    let sources: Vec<&str> = allocations
        .iter()
        .filter_map(|e| e["source"].as_str())
        .collect();
    assert!(sources.contains(&"pool"), "{sources:?}");
    assert!(sources.contains(&"on_demand"), "{sources:?}");
    let distinct: HashSet<&str> = allocations
        .iter()
        .filter_map(|e| e["container_id"].as_str())
        .collect();
    assert_eq!(distinct.len(), 3);
    for client in [&a, &b, &c] {
        let mut shell = client.shell(80, 24).await;
        assert!(
            shell
                .read_until("@web-prod-01", 0, Duration::from_secs(20))
                .await,
            "{:?}",
            shell.text()
        );
    }
}

#[test]
fn containers_left_running_by_a_killed_instance_are_stopped_at_startup() {
    require_docker!();
    let mut first = Hermes::start(Options {
        pool_size: 2,
        ..Options::default()
    });
    first.kill_hard();
    assert_eq!(
        first.containers(Some("running")).len(),
        2,
        "SIGKILL leaves the pool running"
    );
    let second = Hermes::start(Options {
        pool_size: 1,
        sensor: Some(first.sensor.clone()),
        ..Options::default()
    });
    // The leftovers are stopped (and kept); only the new pool runs.
    assert_eq!(second.containers(Some("exited")).len(), 2);
    assert_eq!(second.containers(Some("running")).len(), 1);
}

/// The host PID of a container's PID 1, and the PID of its parent (the engine's shim).
fn shim_of(container: &str) -> (u32, u32) {
    let out = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", container])
        .output()
        .expect("docker inspect");
    let pid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a running container's PID");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("PID 1's stat");
    let ppid = stat_field(&stat, 4).parse().expect("ppid");
    (pid, ppid)
}

/// Field `n` (1-based, as proc(5) numbers them, from 3 on) of a /proc stat line:
/// `comm` may hold spaces and parentheses, so fields are counted from its last ')'.
fn stat_field(stat: &str, n: usize) -> &str {
    let after = &stat[stat.rfind(')').expect("stat") + 2..];
    after.split_whitespace().nth(n - 3).expect("stat field")
}

/// Whether containerd finds Hermes's shim launcher first on its PATH
/// (`scripts/ensure-docker.sh` starts dockerd so).
fn engine_runs_the_shim_launcher() -> bool {
    let Ok(out) = std::process::Command::new("pgrep")
        .args(["-x", "containerd"])
        .output()
    else {
        return false;
    };
    String::from_utf8_lossy(&out.stdout).lines().any(|pid| {
        std::fs::read(format!("/proc/{}/environ", pid.trim()))
            .map(|env| {
                env.split(|b| *b == 0)
                    .any(|var| var.starts_with(b"PATH=/usr/local/lib/hermes/engine:"))
            })
            .unwrap_or(false)
    })
}

/// Boxes share the engine's shims: nine boxes run under fewer shims than boxes (the
/// launcher puts them in eight groups), each shim is the engine's own program, and a
/// box works on a shared one. A container of another runtime keeps a shim to itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boxes_share_the_engines_shims_and_other_containers_keep_their_own() {
    require_docker!();
    if !engine_runs_the_shim_launcher() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "containerd runs without /usr/local/lib/hermes/engine first on its PATH: start dockerd with scripts/ensure-docker.sh"
        );
        eprintln!("SKIPPED: containerd does not run the shim launcher");
        return;
    }
    let hermes = Hermes::start(Options {
        pool_size: 9,
        ..Options::default()
    });
    let boxes = hermes.containers(Some("running"));
    assert_eq!(boxes.len(), 9);
    let shims: HashSet<u32> = boxes.iter().map(|id| shim_of(id).1).collect();
    assert!(
        shims.len() < boxes.len(),
        "{} boxes, {} shims",
        boxes.len(),
        shims.len()
    );
    for shim in &shims {
        let exe = std::fs::read_link(format!("/proc/{shim}/exe")).expect("shim's program");
        assert!(
            exe.ends_with("containerd-shim-runc-v2") && !exe.starts_with("/usr/local/lib/hermes"),
            "shim {shim} runs {}",
            exe.display()
        );
    }

    // A box on a shared shim serves its session as any other.
    let client = Client::login(hermes.port, "root", "toor").await;
    let mut shell = client.shell(80, 24).await;
    assert!(shell.read_until("# ", 0, Duration::from_secs(20)).await);
    shell.send("echo shared-$((6*7))\n").await;
    assert!(
        shell
            .read_until("shared-42", 0, Duration::from_secs(10))
            .await
    );
    shell.send("exit\n").await;
    assert!(shell.read_to_close(Duration::from_secs(10)).await);

    // Another runtime's container: untouched, a shim of its own.
    let image = hermes_test_support::harness::image();
    let out = std::process::Command::new("docker")
        .args([
            "run",
            "-d",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "/bin/sleep",
            &image,
            "60",
        ])
        .output()
        .expect("docker run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (_, shim) = shim_of(&other);
    let command = std::fs::read(format!("/proc/{shim}/cmdline")).unwrap_or_default();
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &other])
        .output();
    assert!(
        !shims.contains(&shim),
        "another runtime's container joined a box's shim"
    );
    // Its shim was started for it alone (a group's shim keeps its first member's id).
    assert!(
        command
            .split(|b| *b == 0)
            .any(|arg| arg == other.as_bytes()),
        "its shim was started for another: {}",
        String::from_utf8_lossy(&command)
    );
}

/// The nice value of each of a process's threads, by thread name.
fn thread_nice(pid: u32) -> Vec<(String, i32)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let task = task.expect("task").path();
        let Ok(stat) = std::fs::read_to_string(task.join("stat")) else {
            continue;
        };
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        let nice = stat_field(&stat, 19).parse().expect("nice");
        threads.push((name.trim().to_owned(), nice));
    }
    threads
}

/// The threads that carry the sessions run at `server.nice` (-10 by default, ahead of
/// the boxes' shells), and the background threads 10 above it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_threads_run_at_the_configured_priority_and_background_ones_below() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    // A session makes the background threads (its capture pass at the end).
    let (_client, mut shell) = root_shell(hermes.port).await;
    shell.send("echo x > /root/f; exit\n").await;
    assert!(shell.read_to_close(Duration::from_secs(10)).await);
    let deadline = Instant::now() + Duration::from_secs(20);
    let threads = loop {
        let threads = thread_nice(hermes.pid());
        if threads
            .iter()
            .any(|(name, _)| name.starts_with("hermes-bg"))
        {
            break threads;
        }
        assert!(
            Instant::now() < deadline,
            "no background thread: {threads:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let workers: Vec<_> = threads
        .iter()
        .filter(|(name, _)| name.starts_with("tokio-r"))
        .collect();
    assert!(!workers.is_empty(), "{threads:?}");
    assert!(workers.iter().all(|(_, nice)| *nice == -10), "{threads:?}");
    assert!(
        threads
            .iter()
            .filter(|(name, _)| name.starts_with("hermes-bg"))
            .all(|(_, nice)| *nice == 0),
        "{threads:?}"
    );
}
