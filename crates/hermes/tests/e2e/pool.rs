//! Containers: one per session, pooled, stopped and kept, all stopped on SIGTERM.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::Client;
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
