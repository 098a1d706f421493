//! The box's DNS answered by Hermes through an upstream resolver: one of the test's
//! own on loopback (never the machine's), names not in the static map asked there,
//! answers cached, each query an event.

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use hermes_core::config::EgressMode;
use serde_json::Value;

use crate::harness::{Hermes, Options};

/// What our resolver answers for A queries of names it knows.
const ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 44);

/// A tiny resolver on a loopback address of its own: names with an `nx` label do
/// not exist, every other name has `ANSWER` (A) and no AAAA. It notes each question.
struct TestResolver {
    address: Ipv4Addr,
    asked: Arc<Mutex<Vec<(String, u16)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestResolver {
    fn start() -> TestResolver {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let [_, a, b, _] = nanos.to_be_bytes();
        let address = Ipv4Addr::new(127, 53, a, b.max(1));
        let socket = UdpSocket::bind((address, 53)).expect("bind the test resolver");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, started) = mpsc::channel();
        let thread = {
            let (asked, stop) = (Arc::clone(&asked), Arc::clone(&stop));
            std::thread::spawn(move || {
                let _ = ready.send(());
                let mut buffer = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((length, peer)) = socket.recv_from(&mut buffer) else {
                        continue;
                    };
                    if let Some((name, qtype, reply)) = answer(&buffer[..length]) {
                        asked.lock().expect("lock").push((name, qtype));
                        let _ = socket.send_to(&reply, peer);
                    }
                }
            })
        };
        started.recv().expect("resolver thread");
        TestResolver {
            address,
            asked,
            stop,
            thread: Some(thread),
        }
    }

    fn asked(&self) -> Vec<(String, u16)> {
        self.asked.lock().expect("lock").clone()
    }
}

impl Drop for TestResolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The answer to a query: its name, type and the reply datagram.
fn answer(query: &[u8]) -> Option<(String, u16, Vec<u8>)> {
    if query.len() < 12 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let length = *query.get(at)? as usize;
        at += 1;
        if length == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + length)?).to_lowercase());
        at += length;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    let name = labels.join(".");
    // Also with a search domain appended.
    let missing = labels.iter().any(|label| label == "nx");
    let records = u16::from(qtype == 1 && !missing);
    let mut reply = Vec::new();
    reply.extend_from_slice(&query[..2]);
    let rcode = if missing { 3 } else { 0 };
    reply.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1]);
    reply.extend_from_slice(&records.to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(query.get(12..question_end)?);
    if records == 1 {
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        reply.extend_from_slice(&ANSWER.octets());
    }
    Some((name, qtype, reply))
}

fn dns_events(events: &[Value], name: &str, qtype: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| {
            e["eventid"] == "hermes.egress.dns"
                && e["query"].as_str().map(|q| q.trim_end_matches('.')) == Some(name)
                && e["type"] == qtype
        })
        .cloned()
        .collect()
}

#[test]
fn egress_dns_asks_an_upstream_resolver_of_our_own_and_caches() {
    require_docker!();
    let resolver = TestResolver::start();
    let upstream = resolver.address;
    let options = Options::default().configure(move |c| {
        c.egress.mode = EgressMode::Sinkhole;
        c.egress.dns.static_only = false;
        c.egress.dns.upstream = vec![upstream.into()];
        c.egress.dns.static_hosts = [("dropper.test".to_owned(), ANSWER.into())].into();
    });
    let hermes = Hermes::start(options);
    let output = hermes
        .ssh("root", &["toor"], "password")
        .arg("getent hosts up.example; getent hosts up.example; getent hosts dropper.test; getent hosts gone.nx.test; echo rc=$?")
        .output()
        .expect("ssh");
    let out = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let answer = ANSWER.to_string();
    assert_eq!(lines.len(), 4, "{output:?}");
    assert_eq!(lines[0], [answer.as_str(), "up.example"], "{out}");
    assert_eq!(lines[1], [answer.as_str(), "up.example"], "{out}");
    assert_eq!(lines[2], [answer.as_str(), "dropper.test"], "{out}");
    assert_eq!(lines[3], ["rc=2"], "not found: {out}");

    let events = hermes.wait_for_events("the box's DNS events", |events| {
        dns_events(events, "up.example", "A").len() >= 2
            && !dns_events(events, "gone.nx.test", "A").is_empty()
    });
    let up = dns_events(&events, "up.example", "A");
    assert_eq!(up[0]["source"], "upstream", "{up:?}");
    assert_eq!(up[0]["rcode"], "NOERROR", "{up:?}");
    assert_eq!(up[0]["answers"][0], answer.as_str(), "{up:?}");
    assert_eq!(up[1]["source"], "cache", "{up:?}");
    assert_eq!(up[1]["answers"][0], answer.as_str(), "{up:?}");
    let gone = dns_events(&events, "gone.nx.test", "A");
    assert_eq!(gone[0]["rcode"], "NXDOMAIN", "{gone:?}");
    assert_eq!(gone[0]["source"], "upstream", "{gone:?}");
    assert_eq!(
        dns_events(&events, "dropper.test", "A")[0]["source"],
        "static"
    );

    // Our resolver was asked for up.example's A once (then the cache answered),
    // never for the static name.
    let asked = resolver.asked();
    assert_eq!(
        asked
            .iter()
            .filter(|(name, qtype)| name == "up.example" && *qtype == 1)
            .count(),
        1,
        "{asked:?}"
    );
    assert!(
        !asked.iter().any(|(name, _)| name == "dropper.test"),
        "{asked:?}"
    );
}
