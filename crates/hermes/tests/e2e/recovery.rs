//! Hermes killed with sessions open (SIGKILL, nothing cleaned up): after its restart
//! every returning source gets its machine back with its files, and the sessions that
//! were open are closed once, in the metadata and in the events.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::events::Events;
use crate::harness::{Hermes, Options};

/// Three attackers, each from its own loopback address.
const SOURCES: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 14, 0, 1),
    Ipv4Addr::new(127, 14, 0, 2),
    Ipv4Addr::new(127, 14, 0, 3),
];

/// An OpenSSH client logged in from `source` and running `command`.
fn ssh_from(hermes: &Hermes, source: Ipv4Addr, command: &str) -> std::process::Command {
    let mut ssh = hermes.openssh("ssh", &["toor"], "password");
    ssh.args(["-b", &source.to_string(), "root@127.0.0.1", command]);
    ssh
}

/// Starts `command` and waits until it prints `line` (the session is then open).
fn open_session(mut command: std::process::Command, line: &str) -> Child {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ssh");
    let stdout = child.stdout.take().expect("stdout");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for text in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(text).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(text) if text == line => return child,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("the session never printed {line:?}");
            }
        }
    }
}

fn of_session<'a>(events: &'a [Value], id: &str, session: &str) -> Vec<&'a Value> {
    events
        .of(id)
        .into_iter()
        .filter(|e| e["session"] == session)
        .collect()
}

fn metadata(hermes: &Hermes, session: &str) -> Value {
    let path = hermes.session_file(session, "json");
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).expect("metadata json")
}

#[test]
fn sigkill_with_sessions_open_loses_no_machine_and_closes_the_sessions_once() {
    require_docker!();
    let mut hermes = Hermes::start(Options {
        reuse: true,
        pool_size: 3,
        ..Options::default()
    });

    // Each source logs in, leaves a marker of its own and keeps the session open.
    let mut clients = Vec::new();
    for (n, source) in SOURCES.iter().enumerate() {
        let command =
            format!("echo marker-of-{n}-{source} > /root/marker.txt && echo written && sleep 600");
        clients.push(open_session(
            ssh_from(&hermes, *source, &command),
            "written",
        ));
        // The machine map on disk has the machine as soon as the session runs (it is
        // saved when the machine is assigned, not at the next periodic save).
        let saved: Value = serde_json::from_slice(
            &std::fs::read(hermes.dir.path().join("state/containers.json")).expect("machine map"),
        )
        .expect("machine map json");
        assert!(
            saved["machines"][source.to_string()]["container_id"].is_string(),
            "{source} missing from the saved map: {saved}"
        );
    }
    let events = hermes.wait_for_count("hermes.container.allocate", 3);
    // Per source: its session and its container.
    let machines: Vec<(String, String)> = SOURCES
        .iter()
        .map(|source| {
            let allocation = events
                .of("hermes.container.allocate")
                .into_iter()
                .find(|e| e["src_ip"] == source.to_string())
                .unwrap_or_else(|| panic!("no allocation for {source}"));
            (
                allocation["session"].as_str().expect("session").to_owned(),
                allocation["container_id"]
                    .as_str()
                    .expect("container")
                    .to_owned(),
            )
        })
        .collect();
    let containers: std::collections::HashSet<&String> = machines.iter().map(|(_, c)| c).collect();
    assert_eq!(containers.len(), 3, "one machine per source: {machines:?}");

    hermes.kill_hard();
    for mut client in clients {
        let status = client.wait().expect("ssh ends with its server");
        assert!(!status.success(), "the connection was cut: {status}");
    }
    // What the killed process left: open sessions.
    for (session, _) in &machines {
        assert_eq!(
            metadata(&hermes, session)["end_reason"],
            "running",
            "{session}"
        );
        assert!(of_session(&hermes.events(), "cowrie.session.closed", session).is_empty());
    }

    hermes.start_again();
    for (n, source) in SOURCES.iter().enumerate() {
        let out =
            crate::harness::succeeded(&mut ssh_from(&hermes, *source, "cat /root/marker.txt"));
        assert_eq!(out.trim(), format!("marker-of-{n}-{source}"), "{source}");
    }
    let events = hermes.wait_for_count("hermes.container.allocate", 6);
    for (source, (_, container)) in SOURCES.iter().zip(&machines) {
        let again: Vec<&Value> = events
            .of("hermes.container.allocate")
            .into_iter()
            .filter(|e| e["src_ip"] == source.to_string())
            .collect();
        assert_eq!(again.len(), 2, "{source}");
        assert_eq!(
            again[1]["container_id"],
            container.as_str(),
            "{source}: its machine"
        );
        assert_eq!(again[1]["source"], "reused", "{source}");
    }

    // The sessions the killed process left open are closed, each once.
    let closed_once = |hermes: &Hermes, events: &[Value]| {
        for (session, _) in &machines {
            let closed = of_session(events, "cowrie.session.closed", session);
            assert_eq!(closed.len(), 1, "{session}: {closed:?}");
            assert!(closed[0]["duration_ms"].as_u64().is_some_and(|ms| ms > 0));
            let recovered = of_session(events, "hermes.session.recovered", session);
            assert_eq!(recovered.len(), 1, "{session}: {recovered:?}");
            assert_eq!(recovered[0]["end_reason"], "sensor_died");
            let doc = metadata(hermes, session);
            assert_eq!(doc["end_reason"], "sensor_died", "{session}");
            assert_eq!(doc["end_time"], recovered[0]["end_time"], "{session}");
            assert!(doc["duration"].as_f64().is_some_and(|d| d > 0.0), "{doc}");
        }
    };
    closed_once(&hermes, &events);
    assert_eq!(events.count_of("hermes.session.recovered"), 3);

    // A second restart (a clean one) closes nothing again.
    hermes.restart();
    let events = hermes.events();
    closed_once(&hermes, &events);
    assert_eq!(
        events.count_of("hermes.session.recovered"),
        3,
        "nothing recovered twice"
    );
    let open_entries = std::fs::read_dir(hermes.recordings().join(".open"))
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert_eq!(
        open_entries, 0,
        "no session left in the open-session journal"
    );
}
