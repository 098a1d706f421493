//! The PROXY protocol in front of the listener: v1 and v2 headers from a trusted
//! balancer set the session's source (events and the shell's `SSH_CLIENT`), a client
//! cannot name its own, and a malformed, missing or untrusted header closes the
//! connection before the banner.

use std::sync::Arc;
use std::time::Duration;

use hermes_core::address_block::AddressBlock;
use hermes_core::config::Seconds;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::client::{AcceptAnyKey, Shell};
use crate::events::Events;
use crate::harness::{Hermes, Options};

fn hermes() -> Hermes {
    Hermes::start(
        Options {
            pool_size: 1,
            ..Options::default()
        }
        .configure(|c| {
            c.server.proxy_protocol = true;
            c.server.proxy_trusted = ["127.0.0.1/32", "::1"]
                .map(|block| AddressBlock::parse(block).expect("an address block"))
                .to_vec();
            c.server.refused_event_interval = Seconds::new(1);
        }),
    )
}

async fn from(source: [u8; 4], port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind((std::net::Ipv4Addr::from(source), 0).into())
        .expect("bind");
    socket
        .connect(([127, 0, 0, 1], port).into())
        .await
        .expect("connect")
}

/// What the server sends within 3 s (until it closes).
async fn answer(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut piece = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut piece)).await {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&piece[..n]);
        if seen.ends_with(b"\r\n") {
            break;
        }
    }
    seen
}

fn v2_ipv6(source: [u8; 16], port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x21, 0, 36]);
    header.extend_from_slice(&source);
    header.extend_from_slice(&[0u8; 15]);
    header.push(1);
    header.extend_from_slice(&port.to_be_bytes());
    header.extend_from_slice(&22u16.to_be_bytes());
    header
}

fn connects(hermes: &Hermes) -> Vec<(String, String)> {
    hermes
        .events_of("cowrie.session.connect")
        .iter()
        .map(|e| {
            (
                e["src_ip"].as_str().unwrap_or_default().to_owned(),
                e["dst_ip"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_set_the_source_and_bad_ones_are_refused() {
    require_docker!();
    let hermes = hermes();

    // v1, then a whole login: the container sees the attacker's address.
    let mut stream = from([127, 0, 0, 1], hermes.port).await;
    stream
        .write_all(b"PROXY TCP4 203.0.113.9 10.0.0.5 40000 22\r\n")
        .await
        .expect("header");
    let config = Arc::new(russh::client::Config::default());
    let mut handle = russh::client::connect_stream(config, stream, AcceptAnyKey)
        .await
        .expect("ssh over the proxied stream");
    let auth = handle
        .authenticate_password("root", "toor")
        .await
        .expect("auth");
    assert!(auth.success());
    let channel = handle.channel_open_session().await.expect("session");
    channel.exec(true, "echo $SSH_CLIENT").await.expect("exec");
    let mut exec = Shell::new(channel);
    assert!(exec.read_to_close(Duration::from_secs(20)).await);
    assert_eq!(exec.text().trim(), "203.0.113.9 40000 22");
    drop(exec);
    drop(handle);

    // v2 over IPv6; a second header from the client is only a bad SSH line.
    let mut attacker = [0u8; 16];
    attacker[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    attacker[15] = 7;
    let mut stream = from([127, 0, 0, 1], hermes.port).await;
    stream
        .write_all(&v2_ipv6(attacker, 5555))
        .await
        .expect("header");
    let banner = answer(&mut stream).await;
    assert!(banner.starts_with(b"SSH-2.0-OpenSSH_9.2p1"), "{banner:?}");
    stream
        .write_all(b"PROXY TCP4 198.51.100.1 10.0.0.5 1 22\r\n")
        .await
        .expect("client's own header");
    let _ = answer(&mut stream).await;
    drop(stream);

    // Refused before the banner: malformed, missing, or from outside proxy_trusted.
    for (source, first) in [
        (
            [127, 0, 0, 1],
            &b"PROXY TCP4 203.0.113.10 10.0.0.5 99999 22\r\n"[..],
        ),
        ([127, 0, 0, 1], &b"PROXY TCP9 203.0.113.10\r\n"[..]),
        ([127, 0, 0, 1], &b"SSH-2.0-OpenSSH_9.6\r\n"[..]),
        (
            [127, 0, 0, 2],
            &b"PROXY TCP4 203.0.113.11 10.0.0.5 1 22\r\n"[..],
        ),
    ] {
        let mut stream = from(source, hermes.port).await;
        let _ = stream.write_all(first).await;
        let seen = answer(&mut stream).await;
        assert!(
            seen.is_empty(),
            "{:?} got {seen:?}",
            String::from_utf8_lossy(first)
        );
    }

    let events = hermes.wait_for_at_least("cowrie.session.closed", 2);
    drop(events);
    let seen = connects(&hermes);
    assert_eq!(
        seen,
        vec![
            ("203.0.113.9".to_owned(), "10.0.0.5".to_owned()),
            ("2001:db8::7".to_owned(), "::1".to_owned()),
        ],
        "{seen:?}"
    );
    let log = hermes.output();
    assert!(log.contains("malformed PROXY protocol header"), "{log}");
    assert!(log.contains("no PROXY protocol header"), "{log}");
    assert!(log.contains("outside proxy_trusted"), "{log}");
}

/// One banner grab through the balancer: the header, then whatever comes back.
async fn grab(port: u16, header: &[u8]) -> Vec<u8> {
    let mut stream = from([127, 0, 0, 1], port).await;
    stream.write_all(header).await.expect("header");
    answer(&mut stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn penalties_fall_on_the_proxied_client_never_on_the_balancers_health_checks() {
    require_docker!();
    let hermes = hermes();
    // Health checks (PROXY UNKNOWN keeps the balancer's address) that read the banner
    // and leave: far more than would get any client penalised.
    for n in 0..40 {
        let seen = grab(hermes.port, b"PROXY UNKNOWN\r\n").await;
        assert!(
            seen.starts_with(b"SSH-2.0-"),
            "health check {n} got {seen:?}"
        );
    }
    // The same from one proxied client: after about 15 s of penalty (1 s each) it is
    // closed on before the banner.
    let mut refused_from = None;
    for n in 0..40 {
        let seen = grab(
            hermes.port,
            b"PROXY TCP4 203.0.113.50 10.0.0.5 40000 22\r\n",
        )
        .await;
        if !seen.starts_with(b"SSH-2.0-") {
            refused_from.get_or_insert(n);
        }
        // The server notices the close before the next grab.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused_from = refused_from.expect("a client that only grabs banners is refused at last");
    assert!(
        (14..30).contains(&refused_from),
        "refused from grab {refused_from}"
    );
    let events = tokio::task::block_in_place(|| hermes.wait_for("hermes.connection.refused"));
    let refusals: Vec<_> = events.of("hermes.connection.refused");
    assert!(
        refusals
            .iter()
            .all(|e| e["src_ip"] == "203.0.113.50" && e["reason"] == "per_source_penalty"),
        "{refusals:?}"
    );
}
