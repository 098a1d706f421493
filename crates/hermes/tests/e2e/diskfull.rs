//! A full disk loses nothing silently: the event log and the recordings each on their
//! own small filesystem, filled while sessions run and log in, then freed. Events that
//! could not be written are written late or counted, with `hermes.events.dropped`;
//! no empty or temporary file is left; every session's metadata lands.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hermes_core::config::ByteSize;
use serde_json::Value;

use crate::events::{Events, id_of};
use crate::harness::{Hermes, Options, SmallDisk, succeeded};

/// Which disks the test fills.
#[derive(Debug, Clone, Copy)]
struct Full {
    events: bool,
    recordings: bool,
}

/// `GET /metrics`, blocking.
fn metrics(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

/// An exec session from `source` (a loopback address of its own).
fn exec(hermes: &Hermes, source: &str, command: &str) -> Command {
    let mut ssh = hermes.openssh("ssh", &["toor"], "password");
    ssh.args(["-b", source, "root@127.0.0.1", command]);
    ssh
}

/// Every file under `dir` with its size.
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    fn walk(dir: &Path, depth: u32, out: &mut Vec<(PathBuf, u64)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() && depth < 5 {
                walk(&path, depth + 1, out);
            } else if let Ok(meta) = entry.metadata() {
                out.push((path, meta.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, 0, &mut out);
    out
}

/// The event log's lines: (events other than the log's own drop reports, the counts
/// those reports give).
fn event_lines(hermes: &Hermes) -> (Vec<Value>, u64) {
    let events = hermes.events();
    let mut reported = 0;
    let mut others = Vec::new();
    for event in events {
        if id_of(&event) == Some("hermes.events.dropped")
            && event["message"]
                .as_str()
                .is_some_and(|m| m.contains("event log could not be written"))
        {
            reported += event["count"].as_u64().expect("count");
        } else {
            others.push(event);
        }
    }
    (others, reported)
}

/// The long session's ticks: it outlives the full disk.
const TICKS: u32 = 300;

fn a_full_disk_loses_nothing_silently(full: Full) {
    let base = tempfile::tempdir().expect("tempdir");
    let logs = SmallDisk::mount(&base.path().join("logs"), "8m");
    let recordings = SmallDisk::mount(&base.path().join("recordings"), "8m");
    let hermes = Hermes::start(
        Options {
            pool_size: 2,
            log_dir: Some(logs.path.clone()),
            recording_dir: Some(recordings.path.clone()),
            metrics: true,
            ..Options::default()
        }
        // A small backlog, so that the full event log overflows it.
        .configure(|c| c.logging.event_backlog_size = ByteSize::kib(8)),
    );
    let metrics_port = hermes.metrics_port();

    // A session that prints through the whole test.
    let mut long: Child = exec(
        &hermes,
        "127.0.0.10",
        &format!(
            "i=0; while [ $i -lt {TICKS} ]; do printf 'tick-%d %01000d\\n' $i 0; i=$((i+1)); sleep 0.1; done; echo finished-marker"
        ),
    )
    .stdout(std::fs::File::create(base.path().join("long.out")).expect("output file"))
    .stderr(Stdio::null())
    .spawn()
    .expect("ssh");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !files(&recordings.path)
        .iter()
        .any(|(p, len)| p.extension().is_some_and(|x| x == "cast") && *len > 200)
    {
        assert!(Instant::now() < deadline, "the long session never recorded");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut filled = 0;
    if full.events {
        filled += logs.fill();
    }
    if full.recordings {
        filled += recordings.fill();
    }
    let events_before = std::fs::metadata(logs.path.join("hermes.json"))
        .map(|m| m.len())
        .unwrap_or(0);
    // New logins while the disk is full, each from its own address.
    let sources: Vec<String> = (11..15).map(|i| format!("127.0.0.{i}")).collect();
    for source in &sources {
        let out = succeeded(&mut exec(
            &hermes,
            source,
            "echo logged-in-$((6*7)); uname -a",
        ));
        assert!(out.contains("logged-in-42"), "{out}");
    }
    if full.events {
        // At most the rest of the page tmpfs had given the file.
        let events_after = std::fs::metadata(logs.path.join("hermes.json"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(
            events_after <= events_before.next_multiple_of(4096),
            "a full event log grew from {events_before} to {events_after} bytes"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let during = metrics(metrics_port);
            if sample(&during, "hermes_events_dropped_total") > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "four logins overflow an 8k backlog:\n{during}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    if full.recordings {
        let empty: Vec<_> = files(&recordings.path)
            .into_iter()
            .filter(|(p, len)| *len == 0 || p.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(empty.is_empty(), "while full: {empty:?}");
    }
    if full.recordings {
        // The long session's next lines find no room (tmpfs pages it had are used up).
        let deadline = Instant::now() + Duration::from_secs(15);
        while !hermes.output().contains("recording write failed") {
            assert!(
                Instant::now() < deadline,
                "the long session's recording never hit the full disk"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(
        long.try_wait().expect("wait").is_none(),
        "the long session ended before the disk was freed: the test proves nothing"
    );
    // Where the event log stood, and when, as space came back.
    let full_len = std::fs::metadata(logs.path.join("hermes.json"))
        .map(|m| m.len())
        .unwrap_or(0);
    let freed_stamp = hermes_core::time::iso8601_micros(std::time::SystemTime::now());
    if full.events {
        logs.free();
    }
    if full.recordings {
        recordings.free();
    }
    let freed_at = Instant::now();

    // The long session goes on and ends by itself.
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = long.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the long session did not end");
        std::thread::sleep(Duration::from_millis(100));
    };
    let printed = std::fs::read_to_string(base.path().join("long.out")).expect("output");
    assert!(status.success() && printed.contains("finished-marker"));

    // Every session's final metadata lands: `hermes sessions` lists them all.
    let hermes_bin = env!("CARGO_BIN_EXE_hermes");
    let mut all_sources: BTreeSet<String> = sources.iter().cloned().collect();
    all_sources.insert("127.0.0.10".into());
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed: Vec<Value> = loop {
        let output = Command::new(hermes_bin)
            .args(["sessions", "--json", "--dir"])
            .arg(&recordings.path)
            .output()
            .expect("hermes sessions");
        let listed: Vec<Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        let seen: BTreeSet<String> = listed
            .iter()
            .filter(|s| s["end_reason"] != "running")
            .filter_map(|s| s["src_ip"].as_str().map(str::to_owned))
            .collect();
        if seen == all_sources {
            break listed;
        }
        assert!(
            Instant::now() < deadline,
            "hermes sessions lists {seen:?}, not {all_sources:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(listed.len(), all_sources.len(), "{listed:#?}");

    // Events written + events counted as dropped == events handed to the sinks,
    // once the numbers stand still.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (written, reported, total, dropped) = loop {
        let before = metrics(metrics_port);
        let (written, reported) = event_lines(&hermes);
        let after = metrics(metrics_port);
        let total = sample(&after, "hermes_events_total");
        let dropped = sample(&after, "hermes_events_dropped_total");
        if before == after && written.len() as u64 + dropped == total && reported == dropped {
            break (written, reported, total, dropped);
        }
        assert!(
            Instant::now() < deadline,
            "written {} + dropped {dropped} != counted {total}, reported {reported}",
            written.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    // Events from while the disk was full, written after it stood full: the backlog.
    let log = std::fs::read(logs.path.join("hermes.json")).expect("event log");
    let late = log
        .get(usize::try_from(full_len).expect("size")..)
        .unwrap_or_default()
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .filter(|e| {
            e["timestamp"]
                .as_str()
                .is_some_and(|t| t < freed_stamp.as_str())
        })
        .count();
    eprintln!(
        "full {full:?}: filled {filled} bytes; events counted {total}, written {} ({late} of them from the backlog once space returned), dropped {dropped} (reported {reported}); all consistent {:?} after freeing (the long session ran on)",
        written.len(),
        freed_at.elapsed()
    );
    if full.events {
        assert!(dropped > 0, "the backlog overflowed");
        assert!(late > 0, "the backlog was written once space returned");
    } else {
        assert_eq!(dropped, 0);
    }

    // No empty or temporary file anywhere; every recording is whole asciicast lines.
    for (path, len) in files(&recordings.path).into_iter().chain(files(&logs.path)) {
        let name = path.to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "{name} left");
        if name.ends_with(".cast") || name.ends_with(".json") {
            assert!(len > 0, "{name} is empty");
        }
        if name.ends_with(".cast") {
            let text = std::fs::read_to_string(&path).expect("cast");
            assert!(text.ends_with('\n'), "{name}");
            for line in text.lines() {
                serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|e| panic!("{name}: {e}: {line:?}"));
            }
        }
    }
    let long_meta = listed
        .iter()
        .find(|s| s["src_ip"] == "127.0.0.10")
        .expect("long session");
    let short_meta: Vec<&Value> = listed
        .iter()
        .filter(|s| s["src_ip"] != "127.0.0.10")
        .collect();
    let output = hermes.output();
    if full.recordings {
        // The sessions that started on the full disk say they were not recorded, and
        // why; the long one says it is incomplete, and went on once space returned.
        for meta in &short_meta {
            assert!(
                meta["recording_error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("no space left")),
                "{meta:#}"
            );
            assert_eq!(meta["recordings"], serde_json::json!([]), "{meta:#}");
        }
        assert!(
            long_meta["recording_error"]
                .as_str()
                .is_some_and(|e| e.starts_with("no space left")),
            "{long_meta:#}"
        );
        assert!(long_meta.get("recording_truncated").is_none());
        let cast = recordings.path.join(
            long_meta["recording"]
                .as_str()
                .expect("the long session's recording"),
        );
        let text = std::fs::read_to_string(&cast).expect("cast");
        assert!(text.contains("tick-0"), "recorded before the disk filled");
        assert!(
            text.contains("finished-marker"),
            "recording resumed once space returned"
        );
        let recorded = text.matches("tick-").count();
        assert!(
            recorded < TICKS as usize,
            "the full disk left a gap in the recording ({recorded} ticks)"
        );
        assert!(
            output.contains("no space left on the recordings disk"),
            "{output}"
        );
        assert!(
            !output.contains("reached max_recording_size"),
            "a full disk is not the size limit"
        );
        if !full.events {
            let errors: Vec<_> = written.of("hermes.record.error");
            assert_eq!(errors.len(), short_meta.len() + 1, "{errors:#?}");
        }
    } else {
        for meta in short_meta.iter().chain([&long_meta]) {
            assert!(meta.get("recording_error").is_none(), "{meta:#}");
        }
    }
    if !full.events {
        // Nothing was lost: every login's events are there.
        let logins = written.count_of("cowrie.login.success");
        assert_eq!(logins, all_sources.len());
    }
    drop(hermes);
    drop(recordings);
    drop(logs);
}

#[test]
fn a_full_event_log_keeps_then_counts_events() {
    require_docker!();
    a_full_disk_loses_nothing_silently(Full {
        events: true,
        recordings: false,
    });
}

#[test]
fn full_recordings_leave_no_empty_files_and_every_session_listed() {
    require_docker!();
    a_full_disk_loses_nothing_silently(Full {
        events: false,
        recordings: true,
    });
}

#[test]
fn both_full_lose_nothing_silently() {
    require_docker!();
    a_full_disk_loses_nothing_silently(Full {
        events: true,
        recordings: true,
    });
}
