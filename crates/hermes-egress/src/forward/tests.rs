//! Forwards under the policy: the static map for names, a web server of the test's
//! own on loopback, the client's side a duplex pipe.

use std::sync::Arc;
use std::time::Duration;

use hermes_core::address_block::AddressBlock;
use hermes_core::capture::{FileStore, sha256_hex};
use hermes_core::config::{EgressConfig, RefusedAnswer};
use hermes_core::events::{ConnectionContext, Event, EventId};
use hermes_core::forward_gateway::{ForwardAnswer, ForwardGateway, ForwardTarget};
use hermes_core::ids::SessionId;
use hermes_core::testing::RecordedEvents;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::SshForwards;
use crate::dns::{Resolver, ResolverSettings};
use crate::fetch::Fetcher;
use crate::host_addresses::HostAddresses;
use crate::ssrf::UpstreamPolicy;

fn connection() -> ConnectionContext {
    ConnectionContext {
        session: SessionId::random(),
        src: "198.51.100.7:40000".parse().expect("addr"),
        dst: "192.0.2.10:22".parse().expect("addr"),
    }
}

/// A config whose names come only from `hosts`.
fn config(refused: RefusedAnswer, hosts: &[(&str, &str)]) -> EgressConfig {
    let mut config = EgressConfig {
        refused,
        ..EgressConfig::default()
    };
    config.dns.static_only = true;
    config.dns.static_hosts = hosts
        .iter()
        .map(|(name, ip)| ((*name).to_owned(), ip.parse().expect("ip")))
        .collect();
    config
}

fn resolver(config: &EgressConfig) -> Arc<Resolver> {
    Arc::new(Resolver::new(ResolverSettings::from_config(&config.dns)))
}

struct Rig {
    forwards: SshForwards,
    events: RecordedEvents,
    _store: Option<tempfile::TempDir>,
}

fn sinkhole(config: &EgressConfig) -> Rig {
    let (bus, events) = RecordedEvents::new();
    Rig {
        forwards: SshForwards::new(config, resolver(config), bus),
        events,
        _store: None,
    }
}

fn fetching(config: &EgressConfig) -> (Rig, Arc<Fetcher>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FileStore::open(dir.path(), 1 << 30).expect("store"));
    let policy = UpstreamPolicy::new(config, HostAddresses::read());
    let fetcher = Arc::new(Fetcher::new(config, policy, store));
    let (bus, events) = RecordedEvents::new();
    let forwards = SshForwards::new(config, resolver(config), bus).with_fetch(
        config,
        Arc::clone(&fetcher),
        None,
    );
    let rig = Rig {
        forwards,
        events,
        _store: Some(dir),
    };
    (rig, fetcher)
}

fn target(host: &str, port: u16) -> ForwardTarget {
    ForwardTarget {
        host: host.to_owned(),
        port,
    }
}

fn refusal(answer: &ForwardAnswer) -> Option<&'static str> {
    match answer {
        ForwardAnswer::Refused { description } => Some(description),
        ForwardAnswer::Accepted(_) => None,
    }
}

fn text(event: &Event, name: &str) -> Option<String> {
    event.get(name).and_then(|v| v.as_str()).map(str::to_owned)
}

#[tokio::test]
async fn a_refused_forward_is_logged_for_its_session_and_refused_at_once() {
    let config = config(RefusedAnswer::Reject, &[("mail.test", "203.0.113.25")]);
    let rig = sinkhole(&config);
    let owner = connection();
    let answer = rig.forwards.open(&target("mail.test", 25), &owner).await;
    assert_eq!(refusal(&answer), Some("Connection refused"));
    let events = rig.events.of(EventId::EgressConnection);
    assert_eq!(events.len(), 1);
    let event = &events[0];
    let session = owner.session.to_string();
    assert_eq!(text(event, "session").as_deref(), Some(session.as_str()));
    assert_eq!(text(event, "dst_ip").as_deref(), Some("203.0.113.25"));
    assert_eq!(text(event, "forward_host").as_deref(), Some("mail.test"));
    assert_eq!(text(event, "app_protocol").as_deref(), Some("smtp"));
    assert_eq!(text(event, "answer").as_deref(), Some("reject"));
    assert_eq!(text(event, "first_bytes").as_deref(), Some(""));
    // Sinkhole: nothing is fetched, so no SSRF reason.
    assert!(event.get("reason").is_none());
    // The lookup is logged as a box's is.
    let lookups = rig.events.of(EventId::EgressDns);
    assert_eq!(lookups.len(), 1);
    assert_eq!(text(&lookups[0], "query").as_deref(), Some("mail.test"));
    assert_eq!(text(&lookups[0], "source").as_deref(), Some("static"));
}

#[tokio::test]
async fn addresses_are_not_looked_up_and_names_that_fail_get_the_resolvers_error() {
    let config = config(RefusedAnswer::Reject, &[("v6.test", "2001:db8::25")]);
    let rig = sinkhole(&config);
    let owner = connection();
    let answer = rig
        .forwards
        .open(&target("198.51.100.9", 6667), &owner)
        .await;
    assert_eq!(refusal(&answer), Some("Connection refused"));
    assert!(rig.events.of(EventId::EgressDns).is_empty());
    let events = rig.events.of(EventId::EgressConnection);
    assert_eq!(text(&events[0], "app_protocol").as_deref(), Some("irc"));

    // A name with only an IPv6 address: asked A, then AAAA.
    let answer = rig.forwards.open(&target("v6.test", 25), &owner).await;
    assert_eq!(refusal(&answer), Some("Connection refused"));
    let events = rig.events.of(EventId::EgressConnection);
    assert_eq!(text(&events[1], "dst_ip").as_deref(), Some("2001:db8::25"));
    assert_eq!(rig.events.of(EventId::EgressDns).len(), 2);

    for unknown in ["nowhere.test", "", ".", &"a".repeat(64)] {
        let answer = rig.forwards.open(&target(unknown, 80), &owner).await;
        assert_eq!(
            refusal(&answer),
            Some("Name or service not known"),
            "{unknown}"
        );
    }
    // No resolver to ask (not static_only, no upstream): no answer at all.
    let mut asking = config.clone();
    asking.dns.static_only = false;
    asking.dns.upstream = Vec::new();
    let settings = ResolverSettings {
        upstream: Vec::new(),
        ..ResolverSettings::from_config(&asking.dns)
    };
    let (bus, _events) = RecordedEvents::new();
    let forwards = SshForwards::new(&asking, Arc::new(Resolver::new(settings)), bus);
    let answer = forwards.open(&target("example.com", 80), &owner).await;
    assert_eq!(
        refusal(&answer),
        Some("Temporary failure in name resolution")
    );
    // Nothing the gateway could connect to was logged as a connection.
    assert_eq!(rig.events.of(EventId::EgressConnection).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn drop_opens_the_channel_logs_the_first_bytes_and_never_answers() {
    let config = config(RefusedAnswer::Drop, &[("pool.test", "203.0.113.33")]);
    let rig = sinkhole(&config);
    let answer = rig
        .forwards
        .open(&target("pool.test", 3333), &connection())
        .await;
    let ForwardAnswer::Accepted(service) = answer else {
        panic!("drop refuses nothing at open");
    };
    // Nothing logged before the first bytes came.
    assert!(rig.events.of(EventId::EgressConnection).is_empty());
    let (mut client, channel) = tokio::io::duplex(64 * 1024);
    let login = br#"{"id":1,"method":"login","params":{"login":"wallet"}}"#;
    client.write_all(login).await.expect("send");
    let started = tokio::time::Instant::now();
    let serving = tokio::spawn(service.serve(Box::new(channel)));
    let mut reply = Vec::new();
    let read = client.read_to_end(&mut reply).await;
    // Held unanswered for the whole hold, then closed without a byte.
    assert!(read.is_ok() && reply.is_empty(), "{read:?} {reply:?}");
    assert!(started.elapsed() >= crate::DROP_HOLD);
    serving.await.expect("served");
    let events = rig.events.of(EventId::EgressConnection);
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(text(event, "answer").as_deref(), Some("drop"));
    assert_eq!(text(event, "app_protocol").as_deref(), Some("stratum"));
    assert_eq!(
        text(event, "first_bytes").as_deref(),
        Some(String::from_utf8_lossy(login).as_ref())
    );
}

#[tokio::test]
async fn fetch_mode_fetches_http_from_an_allowed_address_and_refuses_the_rest() {
    let body = b"#!/bin/sh\necho second stage\n".to_vec();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = tokio::spawn({
        let body = body.clone();
        async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                socket.read_exact(&mut byte).await.expect("read");
                head.push(byte[0]);
            }
            let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            socket.write_all(reply.as_bytes()).await.expect("reply");
            socket.write_all(&body).await.expect("body");
            String::from_utf8_lossy(&head).into_owned()
        }
    });
    let mut config = config(
        RefusedAnswer::Reject,
        &[
            ("dropper.test", "127.0.0.1"),
            ("metadata.test", "169.254.169.254"),
        ],
    );
    config.upstream_ports.push(port);
    config.upstream_allow = vec![AddressBlock::parse("127.0.0.1/32").expect("block")];
    let (rig, fetcher) = fetching(&config);
    let owner = connection();

    // Allowlisted, fetched: the client gets the page, the store keeps it.
    let answer = rig
        .forwards
        .open(&target("dropper.test", port), &owner)
        .await;
    let ForwardAnswer::Accepted(service) = answer else {
        panic!("an allowed HTTP forward is fetched");
    };
    let (mut client, channel) = tokio::io::duplex(64 * 1024);
    let serving = tokio::spawn(service.serve(Box::new(channel)));
    client
        .write_all(b"GET /stage2.sh HTTP/1.1\r\nHost: dropper.test\r\n\r\n")
        .await
        .expect("request");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut response))
        .await
        .expect("in time")
        .expect("response");
    serving.await.expect("served");
    assert!(response.ends_with(&body), "{response:?}");
    let head = server.await.expect("server");
    assert!(head.starts_with("GET /stage2.sh HTTP/1.1\r\n"), "{head}");
    let downloads = rig.events.of(EventId::FileDownload);
    assert_eq!(downloads.len(), 1);
    assert_eq!(
        text(&downloads[0], "url").as_deref(),
        Some("http://dropper.test/stage2.sh")
    );
    assert_eq!(
        text(&downloads[0], "shasum").as_deref(),
        Some(sha256_hex(&body).as_str())
    );
    assert_eq!(fetcher.upstream_connects(), 1);

    // Outside the allowlist, or a port nobody fetches: refused with the policy's
    // reason, nothing connected.
    for (host, port, reason) in [("metadata.test", 80, "metadata"), ("127.0.0.1", 22, "port")] {
        let answer = rig.forwards.open(&target(host, port), &owner).await;
        assert_eq!(refusal(&answer), Some("Connection refused"), "{host}");
        let events = rig.events.of(EventId::EgressConnection);
        let event = events.last().expect("logged");
        assert_eq!(text(event, "reason").as_deref(), Some(reason), "{host}");
    }
    // A port the policy allows but the gateway does not speak yet (TLS): refused,
    // without an SSRF reason.
    let mut tls = config.clone();
    tls.upstream_allow = Vec::new();
    let (rig, fetcher) = fetching(&tls);
    let answer = rig
        .forwards
        .open(&target("198.51.100.80", 443), &owner)
        .await;
    assert_eq!(refusal(&answer), Some("Connection refused"));
    let events = rig.events.of(EventId::EgressConnection);
    assert!(events[0].get("reason").is_none());
    assert_eq!(text(&events[0], "app_protocol").as_deref(), Some("tls"));
    // Without an allowlist the metadata address has its own reason.
    let answer = rig
        .forwards
        .open(&target("metadata.test", 80), &owner)
        .await;
    assert_eq!(refusal(&answer), Some("Connection refused"));
    let events = rig.events.of(EventId::EgressConnection);
    assert_eq!(text(&events[1], "reason").as_deref(), Some("metadata"));
    assert_eq!(fetcher.upstream_connects(), 0);
}

#[tokio::test]
async fn a_connections_lookups_are_cut_to_the_dns_rate() {
    let mut config = config(RefusedAnswer::Reject, &[("mail.test", "203.0.113.25")]);
    config.dns.queries_per_second = 3;
    let rig = sinkhole(&config);
    let (flooder, other) = (connection(), connection());
    let mut refusals = Vec::new();
    for _ in 0..10 {
        let answer = rig.forwards.open(&target("mail.test", 25), &flooder).await;
        refusals.push(refusal(&answer));
    }
    // A second's worth (3) looked up, the rest refused as a resolver that failed.
    assert_eq!(
        refusals
            .iter()
            .filter(|r| **r == Some("Connection refused"))
            .count(),
        3,
        "{refusals:?}"
    );
    assert_eq!(
        refusals
            .iter()
            .filter(|r| **r == Some("Temporary failure in name resolution"))
            .count(),
        7,
        "{refusals:?}"
    );
    assert_eq!(rig.events.of(EventId::EgressDns).len(), 3);
    assert_eq!(rig.events.of(EventId::EgressDnsLimited).len(), 7);
    // Addresses need no lookup, and another connection has its own budget.
    let answer = rig
        .forwards
        .open(&target("203.0.113.25", 25), &flooder)
        .await;
    assert_eq!(refusal(&answer), Some("Connection refused"));
    let answer = rig.forwards.open(&target("mail.test", 25), &other).await;
    assert_eq!(refusal(&answer), Some("Connection refused"));
}

/// The service of an accepted forward to `secure.test:port`.
async fn accepted(
    forwards: &SshForwards,
    owner: &ConnectionContext,
    port: u16,
) -> Box<dyn hermes_core::forward_gateway::ForwardService> {
    match forwards.open(&target("secure.test", port), owner).await {
        ForwardAnswer::Accepted(service) => service,
        ForwardAnswer::Refused { description } => panic!("refused: {description}"),
    }
}

/// The client of `ssh -D` asks for `name` over TLS through `service` with `config`:
/// what it read back and the certificate it was shown, or its TLS error.
async fn tls_through(
    service: Box<dyn hermes_core::forward_gateway::ForwardService>,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<(Vec<u8>, rustls::pki_types::CertificateDer<'static>), std::io::Error> {
    let (client, channel) = tokio::io::duplex(64 * 1024);
    let serving = tokio::spawn(service.serve(Box::new(channel)));
    let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).expect("name");
    let exchange = async {
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(server_name, client)
            .await?;
        let shown = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf.clone().into_owned())
            .expect("a certificate shown");
        let request = format!("GET /fwd.bin HTTP/1.1\r\nHost: {name}\r\n\r\n");
        tls.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        Ok((answer, shown))
    };
    let result = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("the forward answers or closes");
    tokio::time::timeout(Duration::from_secs(20), serving)
        .await
        .expect("the forward ends")
        .expect("served");
    result
}

#[tokio::test]
async fn https_through_a_forward_is_shown_a_mirror_and_fetched_for_a_client_that_does_not_check() {
    use crate::fetch::tls_tests::{body_of, ca_name, server, test_ca};
    use crate::tls::{CertSummary, SensorCa, TlsGateway};

    // Upstream's certificate verifies (its CA is among the gateway's roots): a box
    // would be shown the sensor's leaf; the forward's client trusts no CA of ours.
    let web = test_ca();
    let leaf = web.leaf(&["secure.test"]);
    let leaf_der = leaf.der.clone();
    let body = b"fetched through ssh -D over TLS\n".to_vec();
    let server = server(leaf, body.clone()).await;
    let mut config = config(RefusedAnswer::Reject, &[("secure.test", "127.0.0.1")]);
    config.upstream_allow = vec![AddressBlock::parse("127.0.0.1/32").expect("block")];
    config.upstream_ports.push(server.address.port());
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FileStore::open(dir.path(), 1 << 30).expect("store"));
    let policy = UpstreamPolicy::new(&config, HostAddresses::read());
    let fetcher = Arc::new(Fetcher::new(&config, policy, store));
    let ca = SensorCa::generate(&ca_name()).expect("ca");
    let gateway =
        Arc::new(TlsGateway::new(ca, true, std::slice::from_ref(&web.der)).expect("gateway"));
    let (bus, events) = RecordedEvents::new();
    let forwards = SshForwards::new(&config, resolver(&config), bus).with_fetch(
        &config,
        fetcher,
        Some(gateway),
    );
    let owner = connection();
    let port = server.address.port();
    // A client that checks, even one trusting the server's real CA, refuses the
    // mirror; the server is asked nothing.
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates([web.der.clone()]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let checking = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let refused = tls_through(
        accepted(&forwards, &owner, port).await,
        "secure.test",
        Arc::new(checking),
    )
    .await;
    assert!(refused.is_err(), "a checking client must refuse the mirror");
    let failed = events.of(EventId::FileDownloadFailed);
    assert_eq!(failed.len(), 1, "{:?}", events.all());
    assert_eq!(text(&failed[0], "reason").as_deref(), Some("tls_handshake"));
    assert_eq!(text(&failed[0], "sni").as_deref(), Some("secure.test"));
    assert_eq!(
        failed[0]
            .get("upstream_cert_verified")
            .and_then(|v| v.as_bool()),
        Some(true)
    );
    assert!(
        server
            .requests
            .lock()
            .expect("lock")
            .iter()
            .all(|head| !head.starts_with("GET"))
    );

    // A client that does not check (curl -k) gets the body, kept, with the SNI.
    let lax = crate::tls::client_config().expect("a client that does not check");
    let (answer, shown) = tls_through(accepted(&forwards, &owner, port).await, "secure.test", lax)
        .await
        .expect("fetch");
    assert_eq!(body_of(&answer), body.as_slice());
    let downloads = events.of(EventId::FileDownload);
    assert_eq!(downloads.len(), 1, "{:?}", events.all());
    let download = &downloads[0];
    assert_eq!(
        text(download, "url").as_deref(),
        Some("https://secure.test/fwd.bin")
    );
    assert_eq!(text(download, "sni").as_deref(), Some("secure.test"));
    assert_eq!(
        text(download, "shasum").as_deref(),
        Some(sha256_hex(&body).as_str())
    );
    assert_eq!(
        text(download, "upstream_cert_sha256").as_deref(),
        Some(sha256_hex(&leaf_der).as_str())
    );
    let session = owner.session.to_string();
    assert_eq!(text(download, "session").as_deref(), Some(session.as_str()));
    // What it was shown: the server's names and issuer name, not its certificate.
    let (mirror, original) = (
        CertSummary::of(&shown).expect("shown"),
        CertSummary::of(&leaf_der).expect("original"),
    );
    assert_eq!(mirror.subject, original.subject);
    assert_eq!(mirror.issuer, original.issuer);
    assert_ne!(mirror.sha256, original.sha256);
}
