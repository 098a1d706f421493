//! TFTP fetches through the fetcher: a TFTP server of the test's own on loopback
//! (allowlisted), the stored file and the events.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hermes_core::capture::sha256_hex;
use hermes_core::config::ByteSize;
use hermes_core::events::EventId;
use tokio::net::UdpSocket;

use super::tests::Rig;
use super::{TftpRefusal, fetch_tftp, tftp_url};
use crate::tftp::wire::{self, ErrorCode, Packet};

/// A one-file TFTP server on loopback (our serving side answers from a new port);
/// it counts read requests.
async fn tftp_server(file: Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
    tftp_server_on("127.0.0.1", file).await
}

async fn tftp_server_on(ip: &str, file: Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listen = UdpSocket::bind((ip, 0)).await.expect("bind");
    let addr = listen.local_addr().expect("addr");
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    tokio::spawn(async move {
        let mut buf = [0u8; 600];
        while let Ok((len, client)) = listen.recv_from(&mut buf).await {
            let Ok(Packet::ReadRequest { file: name, .. }) = wire::parse(&buf[..len]) else {
                continue;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let socket = UdpSocket::bind((addr.ip(), 0)).await.expect("bind");
            socket.connect(client).await.expect("connect");
            if name == b"missing" {
                let _ = socket.send(&wire::error(ErrorCode::NotFound, "nope")).await;
                continue;
            }
            let file = file.clone();
            tokio::spawn(async move {
                let _ = crate::tftp::serve(&socket, &file, Duration::from_millis(200), 3).await;
            });
        }
    });
    (addr, requests)
}

/// The HTTP tests' gateway rig on one more port, with downloads cut at
/// `download_kib`.
fn rig(allow: &[&str], port: u16, download_kib: u64) -> Rig {
    super::tests::rig(allow, &[port], |config| {
        config.limits.download_size = ByteSize::kib(download_kib);
    })
}

fn text(event: &hermes_core::events::Event, field: &str) -> String {
    event
        .get(field)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_read_request_is_fetched_stored_and_reported() {
    let body: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let (server, requests) = tftp_server(body.clone()).await;
    let rig = rig(&["127.0.0.0/8"], server.port(), 1024);
    let got = fetch_tftp(&rig.ctx, &rig.fetcher, server, b"/boot/x.bin")
        .await
        .expect("fetched");
    assert_eq!(got, body);
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    let events = rig.events.of(EventId::FileDownload);
    assert_eq!(events.len(), 1, "{:?}", rig.events.all());
    let event = &events[0];
    assert_eq!(
        text(event, "url"),
        format!("tftp://127.0.0.1:{}/boot/x.bin", server.port())
    );
    assert_eq!(text(event, "shasum"), sha256_hex(&body));
    let stored = std::fs::read(text(event, "outfile")).expect("stored file");
    assert_eq!(stored, body);
    assert_eq!(rig.fetcher.upstream_connects(), 1);
}

#[tokio::test]
async fn a_missing_file_fails_with_not_found() {
    let (server, _) = tftp_server(Vec::new()).await;
    let rig = rig(&["127.0.0.0/8"], server.port(), 1024);
    let refusal = fetch_tftp(&rig.ctx, &rig.fetcher, server, b"missing")
        .await
        .expect_err("missing");
    assert_eq!(refusal.code, ErrorCode::NotFound);
    let failed = rig.events.of(EventId::FileDownloadFailed);
    assert_eq!(failed.len(), 1, "{:?}", rig.events.all());
    assert_eq!(text(&failed[0], "reason"), "tftp_error");
    assert!(rig.events.of(EventId::FileDownload).is_empty());
}

#[tokio::test]
async fn a_file_over_download_size_is_refused_and_not_kept() {
    let (server, requests) = tftp_server(vec![7; 5000]).await;
    let rig = rig(&["127.0.0.0/8"], server.port(), 2);
    let refusal = fetch_tftp(&rig.ctx, &rig.fetcher, server, b"big")
        .await
        .expect_err("too large");
    assert_eq!(refusal.code, ErrorCode::DiskFull);
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    let failed = rig.events.of(EventId::FileDownloadFailed);
    assert_eq!(failed.len(), 1, "{:?}", rig.events.all());
    assert_eq!(text(&failed[0], "reason"), "download_size");
    assert!(rig.events.of(EventId::FileDownload).is_empty());
    let kept = std::fs::read_dir(rig.store.path()).expect("store").count();
    assert_eq!(kept, 0, "nothing stored");
}

#[tokio::test]
async fn loopback_without_the_allowlist_is_never_contacted() {
    let (server, requests) = tftp_server(vec![1; 10]).await;
    let rig = rig(&[], server.port(), 1024);
    let refusal: TftpRefusal = fetch_tftp(&rig.ctx, &rig.fetcher, server, b"x")
        .await
        .expect_err("refused");
    assert_eq!(refusal.code, ErrorCode::Undefined);
    let failed = rig.events.of(EventId::FileDownloadFailed);
    assert_eq!(failed.len(), 1, "{:?}", rig.events.all());
    assert_eq!(text(&failed[0], "reason"), "loopback");
    assert_eq!(requests.load(Ordering::SeqCst), 0);
    assert_eq!(rig.fetcher.upstream_connects(), 0);
}

#[test]
fn urls_name_the_server_and_the_file() {
    let v4: SocketAddr = "203.0.113.9:69".parse().expect("addr");
    assert_eq!(tftp_url(v4, b"x.sh"), "tftp://203.0.113.9/x.sh");
    let v6: SocketAddr = "[2001:db8::1]:6969".parse().expect("addr");
    assert_eq!(tftp_url(v6, b"/a b"), "tftp://[2001:db8::1]:6969/a b");
}

/// The gateway's TFTP listener on loopback: bound to any address, it learns the
/// server the box addressed, fetches from it and answers from its address.
async fn answering(rig: &Rig, upstream_port: u16) -> SocketAddr {
    let listener = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
    crate::tftp::pktinfo::enable_pktinfo(&listener).expect("pktinfo");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let listener = UdpSocket::from_std(listener).expect("tokio");
    let bind: crate::tftp::Bind =
        Arc::new(|address| Box::pin(async move { crate::tftp::pktinfo::bind_as(address) }));
    let answer = crate::tftp::TftpAnswer {
        fetcher: Arc::clone(&rig.fetcher),
        bind,
        upstream_port,
    };
    tokio::spawn(crate::tftp::answer_box(listener, rig.ctx.clone(), answer));
    SocketAddr::from(([0, 0, 0, 0], port))
}

#[tokio::test]
async fn a_box_gets_the_file_from_the_server_it_addressed() {
    let body: Vec<u8> = (0..1500u32).map(|i| (i % 13) as u8).collect();
    let (server, requests) = tftp_server_on("127.0.0.3", body.clone()).await;
    let rig = rig(&["127.0.0.0/8"], server.port(), 1024);
    let listener = answering(&rig, server.port()).await;
    // The box asks 127.0.0.3 at the listener's port (69 in a gateway namespace).
    let asked = SocketAddr::from(([127, 0, 0, 3], listener.port()));
    let box_socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let request = [&b"\x00\x01x.bin\x00octet\x00"[..]].concat();
    // Three copies, as a box retransmits while the fetch runs: one fetch only.
    for _ in 0..3 {
        box_socket.send_to(&request, asked).await.expect("send");
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 600];
    let mut expected: u16 = 1;
    loop {
        let (len, from) =
            tokio::time::timeout(Duration::from_secs(10), box_socket.recv_from(&mut buf))
                .await
                .expect("a block in time")
                .expect("recv");
        assert_eq!(from.ip(), asked.ip(), "answered from the server's address");
        assert_ne!(from.port(), asked.port(), "from a transfer port of its own");
        let Ok(Packet::Data { block, data }) = wire::parse(&buf[..len]) else {
            panic!("not DATA: {:?}", &buf[..len]);
        };
        assert_eq!(block, expected);
        got.extend_from_slice(data);
        box_socket
            .send_to(&wire::ack(block), from)
            .await
            .expect("ack");
        if data.len() < 512 {
            break;
        }
        expected += 1;
    }
    assert_eq!(got, body);
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    let events = rig.events.of(EventId::FileDownload);
    assert_eq!(events.len(), 1, "{:?}", rig.events.all());
    assert_eq!(
        text(&events[0], "url"),
        format!("tftp://127.0.0.3:{}/x.bin", server.port())
    );
}

#[tokio::test]
async fn a_refused_server_answers_the_box_with_an_error() {
    let (server, requests) = tftp_server_on("127.0.0.4", vec![1; 10]).await;
    let rig = rig(&[], server.port(), 1024);
    let listener = answering(&rig, server.port()).await;
    let asked = SocketAddr::from(([127, 0, 0, 4], listener.port()));
    let box_socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    box_socket
        .send_to(b"\x00\x01x\x00octet\x00", asked)
        .await
        .expect("send");
    let mut buf = [0u8; 600];
    let (len, from) = tokio::time::timeout(Duration::from_secs(10), box_socket.recv_from(&mut buf))
        .await
        .expect("an answer in time")
        .expect("recv");
    assert_eq!(from.ip(), asked.ip());
    assert!(matches!(wire::parse(&buf[..len]), Ok(Packet::Error { .. })));
    assert_eq!(requests.load(Ordering::SeqCst), 0);
    let failed = rig.events.of(EventId::FileDownloadFailed);
    assert_eq!(failed.len(), 1, "{:?}", rig.events.all());
    assert_eq!(text(&failed[0], "reason"), "loopback");
}
