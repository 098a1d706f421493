//! The client against a TFTP server of the test's own on loopback, and the serving
//! side against the client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::RngExt;
use tokio::net::UdpSocket;

use super::*;

fn limits(max_size: usize) -> ClientLimits {
    ClientLimits {
        max_size,
        packet_timeout: Duration::from_millis(200),
        retries: 3,
        total_timeout: Duration::from_secs(5),
    }
}

#[derive(Clone, Copy)]
enum Behaviour {
    /// Serves the file, dropping (not answering) the first ACK of block 1 once.
    Serve { lose_first_ack: bool },
    /// Answers with ERROR 1 "no\nsuch".
    NotFound,
    /// Never answers.
    Silent,
    /// Answers the request with random bytes from its transfer port.
    Garbage,
}

/// A minimal RFC 1350 server written from the raw bytes, not from our wire module.
struct TestServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

async fn test_server(file: Vec<u8>, behaviour: Behaviour) -> TestServer {
    let listen = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = listen.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        loop {
            let (len, client) = listen.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..2], &[0, 1], "not a read request");
            assert!(buf[..len].ends_with(b"\0octet\0"));
            counter.fetch_add(1, Ordering::SeqCst);
            let file = file.clone();
            tokio::spawn(transfer(file, client, behaviour));
        }
    });
    TestServer { addr, requests }
}

async fn transfer(file: Vec<u8>, client: SocketAddr, behaviour: Behaviour) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(client).await.unwrap();
    let lose_first_ack = match behaviour {
        Behaviour::Silent => return,
        Behaviour::NotFound => {
            socket.send(b"\x00\x05\x00\x01no\nsuch\x00").await.unwrap();
            return;
        }
        Behaviour::Garbage => {
            let len = rand::rng().random_range(0..600);
            let junk: Vec<u8> = (0..len).map(|_| rand::rng().random()).collect();
            let _ = socket.send(&junk).await;
            return;
        }
        Behaviour::Serve { lose_first_ack } => lose_first_ack,
    };
    let mut lost = !lose_first_ack;
    let mut buf = [0u8; 1024];
    let mut block: u16 = 1;
    for chunk in file.chunks(512).chain(
        // A multiple of 512 ends with an empty block.
        file.len().is_multiple_of(512).then_some(&[][..]),
    ) {
        let mut packet = vec![0, 3];
        packet.extend_from_slice(&block.to_be_bytes());
        packet.extend_from_slice(chunk);
        loop {
            socket.send(&packet).await.unwrap();
            let got = tokio::time::timeout(Duration::from_millis(100), socket.recv(&mut buf)).await;
            let Ok(Ok(len)) = got else { continue };
            if buf[..2] == [0, 5] {
                return;
            }
            if !lost {
                lost = true;
                continue;
            }
            if len == 4 && buf[..2] == [0, 4] && buf[2..4] == block.to_be_bytes() {
                break;
            }
        }
        block = block.wrapping_add(1);
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 511) as u8).collect()
}

#[tokio::test]
async fn files_of_every_shape_arrive_whole() {
    for len in [0, 1, 511, 512, 513, 1024, 5000] {
        let file = pattern(len);
        let server = test_server(
            file.clone(),
            Behaviour::Serve {
                lose_first_ack: false,
            },
        )
        .await;
        let got = fetch(server.addr, b"boot.bin", limits(10_000))
            .await
            .unwrap();
        assert_eq!(got, file, "file of {len} bytes");
        assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn a_lost_ack_is_recovered_by_the_server_retransmitting() {
    let file = pattern(2000);
    let server = test_server(
        file.clone(),
        Behaviour::Serve {
            lose_first_ack: true,
        },
    )
    .await;
    assert_eq!(
        fetch(server.addr, b"f", limits(10_000)).await.unwrap(),
        file
    );
}

#[tokio::test]
async fn a_file_over_the_cap_fails_and_is_not_kept() {
    let server = test_server(
        pattern(3000),
        Behaviour::Serve {
            lose_first_ack: false,
        },
    )
    .await;
    let error = fetch(server.addr, b"f", limits(1024)).await.unwrap_err();
    assert!(matches!(error, ClientError::TooLarge(1024)), "{error}");
}

#[tokio::test]
async fn a_server_error_is_reported_escaped() {
    let server = test_server(Vec::new(), Behaviour::NotFound).await;
    let error = fetch(server.addr, b"f", limits(1024)).await.unwrap_err();
    match error {
        ClientError::Server { code, message } => {
            assert_eq!(code, 1);
            assert_eq!(message, "no\\nsuch");
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn a_silent_server_fails_after_the_retries_within_the_bound() {
    let server = test_server(Vec::new(), Behaviour::Silent).await;
    let started = std::time::Instant::now();
    let error = fetch(server.addr, b"f", limits(1024)).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(error, ClientError::NoAnswer), "{error}");
    // 1 + 3 retries of 200 ms each, and the request did reach the server.
    assert!(took >= Duration::from_millis(750), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(server.requests.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn a_hostile_server_never_panics_the_client() {
    let server = test_server(Vec::new(), Behaviour::Garbage).await;
    for _ in 0..50 {
        let _ = fetch(server.addr, b"f", limits(1024)).await;
    }
    assert!(server.requests.load(Ordering::SeqCst) >= 50);
}

/// Our serving side, fed to our client through a relay that only plays the
/// server's listening port (the client's request is answered from the serving socket).
async fn serve_to_client(file: Vec<u8>) -> Vec<u8> {
    let listen = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = listen.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut buf = [0u8; 600];
        let (len, client) = listen.recv_from(&mut buf).await.unwrap();
        assert!(matches!(
            wire::parse(&buf[..len]),
            Ok(wire::Packet::ReadRequest { file: b"x.sh", .. })
        ));
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(client).await.unwrap();
        serve(&socket, &file, Duration::from_millis(200), 3).await
    });
    let got = fetch(addr, b"x.sh", limits(100_000)).await.unwrap();
    server.await.unwrap().unwrap();
    got
}

#[tokio::test]
async fn the_serving_side_hands_over_every_byte() {
    for len in [0, 100, 512, 1536, 40_000] {
        let file = pattern(len);
        assert_eq!(serve_to_client(file.clone()).await, file, "{len} bytes");
    }
}

#[tokio::test]
async fn serving_gives_up_on_a_box_that_stops_acknowledging() {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let silent_box = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .connect(silent_box.local_addr().unwrap())
        .await
        .unwrap();
    let error = serve(&socket, &pattern(100), Duration::from_millis(50), 2)
        .await
        .unwrap_err();
    assert!(matches!(error, ServeError::NoAck(1)), "{error}");
    // The box did receive the first block and its two retransmissions.
    let mut buf = [0u8; 600];
    for _ in 0..3 {
        let len = silent_box.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..4], &[0, 3, 0, 1]);
        assert_eq!(len, 104);
    }
}
