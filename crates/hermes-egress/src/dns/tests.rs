//! The server on real loopback sockets, against a fake upstream resolver of the
//! test's own (never the machine's).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hermes_core::boxnet::BoxOwner;
use hermes_core::events::{ConnectionContext, EventId};
use hermes_core::testing::RecordedEvents;
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout};

use super::upstream::{Upstream, UpstreamError};
use super::wire::{self, CLASS_IN, Name, Parsed, Question, TYPE_A, TYPE_AAAA};
use super::{Resolver, ResolverSettings, serve};
use crate::BoxContext;

/// What the fake upstream does with a query.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Answers with two A records, TTL 120.
    Answer,
    /// Never answers.
    Silent,
}

/// The test's own resolver on 127.0.0.1.
struct FakeUpstream {
    address: SocketAddr,
    /// Every query it received.
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Every answer it sent.
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

const UPSTREAM_ANSWERS: [&str; 2] = ["203.0.113.5", "203.0.113.6"];

impl FakeUpstream {
    async fn start(behaviour: Behaviour) -> FakeUpstream {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let address = socket.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (r, s) = (Arc::clone(&received), Arc::clone(&sent));
        let task = tokio::spawn(async move {
            let mut buffer = [0u8; 2048];
            while let Ok((length, peer)) = socket.recv_from(&mut buffer).await {
                let query = buffer[..length].to_vec();
                r.lock().expect("lock").push(query.clone());
                let (Behaviour::Answer, Parsed::Query(query)) =
                    (behaviour, wire::parse_query(&query))
                else {
                    continue;
                };
                let answers: Vec<IpAddr> = UPSTREAM_ANSWERS
                    .iter()
                    .map(|a| a.parse().expect("ip"))
                    .collect();
                let answer = wire::build_answer(&query, wire::Rcode::NoError, &answers, 120);
                s.lock().expect("lock").push(answer.clone());
                socket.send_to(&answer, peer).await.expect("send");
            }
        });
        FakeUpstream {
            address,
            received,
            sent,
            task,
        }
    }

    fn received(&self) -> usize {
        self.received.lock().expect("lock").len()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn settings(upstream: &[SocketAddr]) -> ResolverSettings {
    ResolverSettings {
        static_hosts: vec![
            (
                "Dropper.Test.".to_owned(),
                "192.0.2.10".parse().expect("ip"),
            ),
            ("v6.test".to_owned(), "2001:db8::1".parse().expect("ip")),
        ],
        static_only: false,
        upstream: upstream.to_vec(),
        timeout: Duration::from_millis(200),
        max_in_flight: 16,
        cache_entries: 64,
        queries_per_second: 1000,
    }
}

/// A box's DNS server on loopback, its events recorded.
struct Server {
    address: SocketAddr,
    events: RecordedEvents,
    task: tokio::task::JoinHandle<super::ServeError>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(settings: ResolverSettings, owner: Option<ConnectionContext>) -> Server {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let address = socket.local_addr().expect("addr");
    let (bus, events) = RecordedEvents::new();
    let ctx = BoxContext {
        container_id: "c0ffee".to_owned(),
        owner: Arc::new(move || owner.clone().map(BoxOwner::from)),
        events: bus,
    };
    let task = tokio::spawn(serve(socket, ctx, Arc::new(Resolver::new(settings))));
    Server {
        address,
        events,
        task,
    }
}

fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let question = Question {
        name: Name::from_text(name).expect("name"),
        qtype,
        qclass: CLASS_IN,
    };
    wire::build_query(id, &question)
}

/// Sends `message` from a fresh client socket; the answer, if one comes within
/// `wait`.
async fn ask(server: SocketAddr, message: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    client.send_to(message, server).await.expect("send");
    let mut buffer = vec![0u8; 4096];
    let (length, from) = timeout(wait, client.recv_from(&mut buffer))
        .await
        .ok()?
        .expect("recv");
    assert_eq!(from, server);
    Some(buffer[..length].to_vec())
}

const WAIT: Duration = Duration::from_secs(3);

fn rcode(message: &[u8]) -> u8 {
    message[3] & 0x0f
}

fn strings(event: &hermes_core::events::Event, field: &str) -> Vec<String> {
    event
        .get(field)
        .and_then(|v| v.as_array())
        .expect("list")
        .iter()
        .map(|v| v.as_str().expect("string").to_owned())
        .collect()
}

fn text(event: &hermes_core::events::Event, field: &str) -> String {
    event
        .get(field)
        .and_then(|v| v.as_str())
        .expect(field)
        .to_owned()
}

#[tokio::test]
async fn static_names_are_answered_without_case_or_trailing_dot() {
    let upstream = FakeUpstream::start(Behaviour::Answer).await;
    let server = start(settings(&[upstream.address]), None).await;

    let answer = ask(
        server.address,
        &query(0x1234, "dropper.TEST.", TYPE_A),
        WAIT,
    )
    .await
    .expect("answer");
    let read = wire::parse_answer(&answer).expect("readable");
    assert_eq!(read.id, 0x1234);
    assert_eq!(read.rcode, Some(wire::Rcode::NoError));
    assert_eq!(
        read.question.name.to_text(),
        "dropper.TEST",
        "question echoed as sent"
    );
    assert_eq!(
        read.addresses,
        ["192.0.2.10".parse::<IpAddr>().expect("ip")]
    );
    assert_eq!(answer[2] & 0x01, 0x01, "RD echoed");
    assert_eq!(answer[3] & 0x80, 0x80, "RA set");

    // The name exists but has no IPv6 address: NOERROR, no answer.
    let answer = ask(server.address, &query(2, "dropper.test", TYPE_AAAA), WAIT)
        .await
        .expect("answer");
    let read = wire::parse_answer(&answer).expect("readable");
    assert_eq!(read.rcode, Some(wire::Rcode::NoError));
    assert!(read.addresses.is_empty());
    let answer = ask(server.address, &query(3, "V6.test", TYPE_AAAA), WAIT)
        .await
        .expect("answer");
    assert_eq!(
        wire::parse_answer(&answer).expect("readable").addresses,
        ["2001:db8::1".parse::<IpAddr>().expect("ip")]
    );
    assert_eq!(upstream.received(), 0, "static names never go upstream");

    let events = server.events.of(EventId::EgressDns);
    assert_eq!(events.len(), 3);
    assert_eq!(text(&events[0], "query"), "dropper.TEST");
    assert_eq!(text(&events[0], "type"), "A");
    assert_eq!(text(&events[0], "rcode"), "NOERROR");
    assert_eq!(text(&events[0], "source"), "static");
    assert_eq!(strings(&events[0], "answers"), ["192.0.2.10"]);
    assert!(strings(&events[1], "answers").is_empty());
    assert_eq!(text(&events[1], "type"), "AAAA");
    // No session owns the box: the event names the container instead.
    assert_eq!(text(&events[0], "container_id"), "c0ffee");
    assert!(events[0].get("session").is_none());
}

#[tokio::test]
async fn upstream_answers_are_relayed_with_the_boxs_id_then_cached() {
    let upstream = FakeUpstream::start(Behaviour::Answer).await;
    let owner = ConnectionContext {
        session: hermes_core::ids::SessionId::random(),
        src: "198.51.100.7:40000".parse().expect("addr"),
        dst: "127.0.0.1:2222".parse().expect("addr"),
    };
    let session = owner.session.to_string();
    let server = start(settings(&[upstream.address]), Some(owner)).await;

    let answer = ask(
        server.address,
        &query(0xbeef, "www.Example.test", TYPE_A),
        WAIT,
    )
    .await
    .expect("answer");
    assert_eq!(upstream.received(), 1);
    let sent = upstream.sent.lock().expect("lock")[0].clone();
    assert_eq!(answer[..2], [0xbe, 0xef], "the box's id");
    assert_eq!(answer[2..], sent[2..], "the rest as upstream sent it");
    let upstream_query = upstream.received.lock().expect("lock")[0].clone();
    let Parsed::Query(forwarded) = wire::parse_query(&upstream_query) else {
        panic!("upstream got no query");
    };
    assert_eq!(forwarded.question.name.to_text(), "www.Example.test");
    assert_eq!(answer[..2].to_vec(), 0xbeefu16.to_be_bytes());

    // Asked again (other case, other id): from the cache, upstream not asked.
    let again = ask(
        server.address,
        &query(0x0102, "WWW.example.TEST", TYPE_A),
        WAIT,
    )
    .await
    .expect("answer");
    assert_eq!(upstream.received(), 1, "answered from the cache");
    let read = wire::parse_answer(&again).expect("readable");
    assert_eq!(read.id, 0x0102);
    assert_eq!(read.question.name.to_text(), "WWW.example.TEST");
    assert_eq!(read.addresses.len(), 2);

    let events = server.events.of(EventId::EgressDns);
    assert_eq!(events.len(), 2);
    assert_eq!(text(&events[0], "source"), "upstream");
    assert_eq!(text(&events[1], "source"), "cache");
    for event in &events {
        assert_eq!(strings(event, "answers"), UPSTREAM_ANSWERS);
        assert_eq!(text(event, "session"), session);
        assert!(event.get("container_id").is_none());
    }
}

#[tokio::test]
async fn static_only_makes_every_other_name_nxdomain() {
    let upstream = FakeUpstream::start(Behaviour::Answer).await;
    let mut settings = settings(&[upstream.address]);
    settings.static_only = true;
    let server = start(settings, None).await;
    for (id, qtype) in [(1, TYPE_A), (2, 15)] {
        let answer = ask(server.address, &query(id, "c2.example.test", qtype), WAIT)
            .await
            .expect("answer");
        assert_eq!(rcode(&answer), 3, "NXDOMAIN");
        assert_eq!(answer[..2], id.to_be_bytes());
    }
    let answer = ask(server.address, &query(3, "dropper.test", TYPE_A), WAIT)
        .await
        .expect("answer");
    assert_eq!(rcode(&answer), 0);
    assert_eq!(upstream.received(), 0, "nothing asked upstream");
    let events = server.events.of(EventId::EgressDns);
    assert_eq!(text(&events[0], "rcode"), "NXDOMAIN");
    assert_eq!(text(&events[0], "source"), "static");
    assert_eq!(text(&events[1], "type"), "MX");
}

#[tokio::test]
async fn a_silent_upstream_gets_one_retry_then_servfail() {
    let upstream = FakeUpstream::start(Behaviour::Silent).await;
    let server = start(settings(&[upstream.address]), None).await;
    let started = Instant::now();
    let answer = ask(server.address, &query(77, "slow.test", TYPE_A), WAIT)
        .await
        .expect("answer");
    let elapsed = started.elapsed();
    assert_eq!(answer[..2], [0, 77]);
    assert_eq!(rcode(&answer), 2, "SERVFAIL");
    assert_eq!(upstream.received(), 2, "one try and one retry");
    // Two tries of 200 ms.
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    let events = server.events.of(EventId::EgressDns);
    assert_eq!(events.len(), 1);
    assert_eq!(text(&events[0], "rcode"), "SERVFAIL");
    assert_eq!(text(&events[0], "source"), "upstream");
}

#[tokio::test]
async fn the_upstream_in_flight_bound_holds() {
    let upstream = FakeUpstream::start(Behaviour::Silent).await;
    let upstream = Arc::new((
        Upstream::new(vec![upstream.address], Duration::from_millis(300), 2),
        upstream,
    ));
    let question = Question {
        name: Name::from_text("a.test").expect("name"),
        qtype: TYPE_A,
        qclass: CLASS_IN,
    };
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let (upstream, question) = (Arc::clone(&upstream), question.clone());
            tokio::spawn(async move { upstream.0.ask(&question).await })
        })
        .collect();
    // Both hold their permit once their first query reached the fake.
    let deadline = Instant::now() + WAIT;
    while upstream.1.received() < 2 {
        assert!(Instant::now() < deadline, "the queries never went out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let third = upstream.0.ask(&question).await;
    assert!(matches!(third, Err(UpstreamError::Busy)), "{third:?}");
    for task in waiting {
        let result = task.await.expect("join");
        assert!(
            matches!(result, Err(UpstreamError::NoAnswer { tries: 2, .. })),
            "{result:?}"
        );
    }
}

#[tokio::test]
async fn malformed_datagrams_get_formerr_or_nothing_and_the_server_lives_on() {
    let upstream = FakeUpstream::start(Behaviour::Answer).await;
    let server = start(settings(&[upstream.address]), None).await;
    // A compression loop in the question: FORMERR, the id echoed, no question.
    let mut looped = query(0x4242, "x.test", TYPE_A)[..wire::HEADER_LEN].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let answer = ask(server.address, &looped, WAIT).await.expect("answer");
    assert_eq!(answer.len(), wire::HEADER_LEN);
    assert_eq!(answer[..2], [0x42, 0x42]);
    assert_eq!(rcode(&answer), 1, "FORMERR");
    // A status query (opcode 2): NOTIMP.
    let mut status = query(5, "x.test", TYPE_A);
    status[2] |= 2 << 3;
    let answer = ask(server.address, &status, WAIT).await.expect("answer");
    assert_eq!(rcode(&answer), 4, "NOTIMP");
    // Too short for an id, or a response: no answer at all.
    for ignored in [vec![1u8, 2, 3], {
        let mut response = query(6, "x.test", TYPE_A);
        response[2] |= 0x80;
        response
    }] {
        assert!(
            ask(server.address, &ignored, Duration::from_millis(300))
                .await
                .is_none()
        );
    }
    // Noise, bounded: then a real query is still answered.
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut state: u32 = 0x1234_5678;
    for round in 0..200u32 {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let length = (state >> 24) as usize % 64;
        let noise: Vec<u8> = (0..length)
            .map(|i| (state.rotate_left(i as u32) ^ round) as u8)
            .collect();
        client.send_to(&noise, server.address).await.expect("send");
    }
    let answer = ask(server.address, &query(9, "dropper.test", TYPE_A), WAIT)
        .await
        .expect("the server still answers");
    assert_eq!(rcode(&answer), 0);
    assert!(!server.task.is_finished());
    let events = server.events.of(EventId::EgressDns);
    assert!(events.len() >= 5, "{}", events.len());
    assert_eq!(text(&events[0], "rcode"), "FORMERR");
    assert_eq!(text(&events[0], "query"), "");
    assert_eq!(text(&events[2], "rcode"), "none");
}

#[tokio::test]
async fn a_flood_is_cut_to_the_rate_and_summarised() {
    const QPS: u32 = 20;
    const SENT: usize = 200;
    let upstream = FakeUpstream::start(Behaviour::Answer).await;
    let mut settings = settings(&[upstream.address]);
    settings.queries_per_second = QPS;
    let server = start(settings, None).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let started = Instant::now();
    for i in 0..SENT {
        let message = query(i as u16, "dropper.test", TYPE_A);
        client
            .send_to(&message, server.address)
            .await
            .expect("send");
        if i % 25 == 24 {
            // Lets the server drain its socket: the kernel drops nothing.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let sending = started.elapsed();
    let mut answered = 0;
    let mut buffer = [0u8; 512];
    while let Ok(received) = timeout(Duration::from_millis(300), client.recv(&mut buffer)).await {
        received.expect("recv");
        answered += 1;
    }
    // The summary comes within a second of the drops.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let bound = QPS as f64 * (1.0 + sending.as_secs_f64()) + 1.0;
    assert!(
        answered >= QPS as usize,
        "the burst was not answered: {answered}"
    );
    assert!(
        answered as f64 <= bound,
        "{answered} answered in {sending:?}, bound {bound}"
    );
    assert_eq!(server.events.count(EventId::EgressDns), answered);
    let summaries = server.events.of(EventId::EgressDnsLimited);
    let limited: u64 = summaries
        .iter()
        .map(|e| e.get("count").and_then(|v| v.as_u64()).expect("count"))
        .sum();
    assert_eq!(limited as usize + answered, SENT, "every query counted");
    let seconds = started.elapsed().as_secs() as usize;
    assert!(
        (1..=seconds + 1).contains(&summaries.len()),
        "{} summaries in {seconds} s",
        summaries.len()
    );
}
