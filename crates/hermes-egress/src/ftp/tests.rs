//! FTP's wire parsers against well-formed, hostile and random input, and the
//! bounds of the box's waiting data ports.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use rand::RngExt;
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};

use super::ports::{DataPorts, PER_BOX};
use super::wire::*;
use crate::BoxContext;
use crate::seams::BoxConnection;

async fn reply_of(bytes: &[u8]) -> Result<Reply, ReplyError> {
    let mut reader = BufReader::new(bytes);
    read_reply(&mut reader).await
}

#[test]
fn commands_are_a_verb_in_capitals_and_the_rest_as_sent() {
    assert_eq!(
        parse_command(b"retr /pub/x y.bin"),
        Ok(Command {
            verb: "RETR".into(),
            arg: "/pub/x y.bin".into()
        })
    );
    assert_eq!(parse_command(b"PASV").map(|c| c.arg), Ok(String::new()));
    assert_eq!(parse_command(b""), Err(CommandError::NoVerb));
    assert_eq!(parse_command(b" USER x"), Err(CommandError::NoVerb));
    assert_eq!(
        parse_command(b"\xff\xf4\xff\xf2ABOR"),
        Err(CommandError::NoVerb)
    );
    assert_eq!(parse_command(b"VERYLONGVERB x"), Err(CommandError::NoVerb));
    // Nothing the box sends can add a line to what goes upstream.
    assert_eq!(
        parse_command(b"USER a\rPASS b"),
        Err(CommandError::ControlBytes)
    );
    assert_eq!(parse_command(b"RETR a\0b"), Err(CommandError::ControlBytes));
}

#[tokio::test]
async fn lines_are_bounded_and_lose_their_line_end() {
    let mut reader = BufReader::new(&b"USER bot\r\nPASS x\nrest"[..]);
    assert_eq!(read_line(&mut reader, 64).await.unwrap(), b"USER bot");
    assert_eq!(read_line(&mut reader, 64).await.unwrap(), b"PASS x");
    assert!(matches!(
        read_line(&mut reader, 64).await,
        Err(LineError::Closed)
    ));
    let long = vec![b'A'; 5000];
    let mut reader = BufReader::new(&long[..]);
    assert!(matches!(
        read_line(&mut reader, 1024).await,
        Err(LineError::TooLong(1024))
    ));
    let mut exact = vec![b'B'; 1024];
    exact.push(b'\n');
    let mut reader = BufReader::new(&exact[..]);
    assert_eq!(read_line(&mut reader, 1024).await.unwrap().len(), 1024);
}

#[tokio::test]
async fn replies_single_and_multi_line() {
    let reply = reply_of(b"220 (vsFTPd 3.0.3)\r\n").await.unwrap();
    assert_eq!(reply.code, 220);
    assert_eq!(reply.text, "(vsFTPd 3.0.3)");
    let reply = reply_of(b"230-Welcome\r\n230-230 inside\r\nplain line\r\n230 ok\r\n")
        .await
        .unwrap();
    assert_eq!(reply.code, 230);
    assert_eq!(reply.text, "Welcome\n230-230 inside\nplain line\nok");
    assert!(reply.is_complete());
    // Another code's end line does not end the reply.
    let reply = reply_of(b"211-a\r\n214 b\r\n211 c\r\n").await.unwrap();
    assert_eq!(reply.text, "a\n214 b\nc");
    assert!(reply_of(b"150 x\r\n").await.unwrap().is_preliminary());
    let reply = reply_of(b"200\r\n").await.unwrap();
    assert_eq!((reply.code, reply.text.as_str()), (200, ""));
}

#[tokio::test]
async fn hostile_replies_are_errors() {
    for bad in [
        &b"HTTP/1.1 200 OK\r\n"[..],
        b"2200 x\r\n",
        b"20 x\r\n",
        b"600 x\r\n",
        b"099 x\r\n",
        b"220x\r\n",
        b"\x00\x01\x02\r\n",
    ] {
        assert!(
            matches!(reply_of(bad).await, Err(ReplyError::Malformed(_))),
            "{bad:?}"
        );
    }
    assert!(matches!(
        reply_of(b"220-never ends\r\n").await,
        Err(ReplyError::Line(LineError::Closed))
    ));
    let endless: Vec<u8> = (0..200).flat_map(|_| b"220-more\r\n".to_vec()).collect();
    assert!(matches!(
        reply_of(&endless).await,
        Err(ReplyError::TooManyLines)
    ));
    let long = [b"220 ".to_vec(), vec![b'x'; 100_000]].concat();
    assert!(matches!(
        reply_of(&long).await,
        Err(ReplyError::Line(LineError::TooLong(_)))
    ));
}

#[test]
fn passive_ports_are_read_and_their_address_ignored() {
    assert_eq!(
        pasv_port("Entering Passive Mode (10,0,0,1,195,80)."),
        Some(50000)
    );
    assert_eq!(pasv_port("=169,254,169,254,0,21"), Some(21));
    // A leading run that is not six numbers is skipped.
    assert_eq!(pasv_port("1,2 then (1,2,3,4,0,99)"), Some(99));
    for bad in [
        "Entering Passive Mode",
        "(1,2,3,4,5)",
        "(1,2,3,4,256,1)",
        "(1,2,3,4,5,6,7)",
        "(,,,,,)",
        "(1,2,3,4,5,-6)",
        "(1,2,3,4,5,99999999999999999999)",
    ] {
        assert_eq!(pasv_port(bad), None, "{bad}");
    }
    assert_eq!(
        epsv_port("Entering Extended Passive Mode (|||6446|)"),
        Some(6446)
    );
    assert_eq!(epsv_port("ok (!!!21!)"), Some(21));
    for bad in [
        "(|||0|)",
        "(|||70000|)",
        "(||1.2.3.4|6446|)",
        "(|||-5|)",
        "(|||x|)",
        "(|||6446)",
        "( 6446 )",
        "no parentheses",
        "(\u{e9}\u{e9}\u{e9}1\u{e9})",
    ] {
        assert_eq!(epsv_port(bad), None, "{bad}");
    }
    assert_eq!(
        pasv_reply(Ipv4Addr::new(203, 0, 113, 9), 50000),
        "227 Entering Passive Mode (203,0,113,9,195,80)."
    );
    assert_eq!(
        pasv_port(&pasv_reply(Ipv4Addr::new(1, 2, 3, 4), 30001)),
        Some(30001)
    );
    assert_eq!(epsv_port(&epsv_reply(40000)), Some(40000));
}

#[test]
fn sizes_paths_and_urls() {
    assert_eq!(
        announced_size("Opening BINARY mode data connection for x (7000 bytes)."),
        Some(7000)
    );
    assert_eq!(announced_size("Opening data connection"), None);
    assert_eq!(announced_size("(lots bytes)"), None);
    assert_eq!(resolve("/", "pub/x.bin").as_deref(), Some("/pub/x.bin"));
    assert_eq!(resolve("/pub", "../../etc/./x").as_deref(), Some("/etc/x"));
    assert_eq!(resolve("/pub", "/abs//y").as_deref(), Some("/abs/y"));
    assert_eq!(resolve("/a", "..").as_deref(), Some("/"));
    assert_eq!(resolve("/", &"a/".repeat(400)), None);
    let server: SocketAddr = "203.0.113.9:21".parse().unwrap();
    assert_eq!(ftp_url(server, "/pub/x.bin"), "ftp://203.0.113.9/pub/x.bin");
    let other: SocketAddr = "203.0.113.9:2121".parse().unwrap();
    assert_eq!(ftp_url(other, "/x"), "ftp://203.0.113.9:2121/x");
}

#[tokio::test]
async fn random_input_never_panics() {
    let mut rng = rand::rng();
    let alphabet = b"0123456789,()|- \r\nABCPRSTUVXabc\xff\x00./";
    for round in 0..3000 {
        let len = rng.random_range(0..200);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if round % 2 == 0 {
                    alphabet[rng.random_range(0..alphabet.len())]
                } else {
                    rng.random()
                }
            })
            .collect();
        let _ = parse_command(&bytes);
        let text = String::from_utf8_lossy(&bytes);
        let _ = pasv_port(&text);
        let _ = epsv_port(&text);
        let _ = announced_size(&text);
        let _ = resolve("/", &text);
        let _ = reply_of(&bytes).await;
        let mut reader = BufReader::new(&bytes[..]);
        let _ = read_line(&mut reader, 16).await;
    }
}

fn context(container: &str) -> BoxContext {
    let (bus, _events) = hermes_core::testing::RecordedEvents::new();
    BoxContext {
        container_id: container.to_owned(),
        owner: Arc::new(|| None),
        events: bus,
    }
}

/// A real TCP connection as the gateway would have accepted it, to `destination`.
async fn connection(container: &str, destination: SocketAddr) -> (BoxConnection, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let connection = BoxConnection {
        stream,
        destination,
        context: context(container),
    };
    (connection, client)
}

#[tokio::test]
async fn a_data_port_takes_its_box_connection_only() {
    let ports = Arc::new(DataPorts::default());
    let server = Ipv4Addr::new(203, 0, 113, 9).into();
    let mut pending = ports.open("box-a", server).expect("a port");
    let port = pending.port();
    assert!((30000..=60999).contains(&port));
    let there = SocketAddr::new(server, port);
    // Another box, or another port, is not the transfer's.
    let (other_box, _c1) = connection("box-b", there).await;
    assert!(ports.claim(other_box).is_some());
    let (other_port, _c2) = connection("box-a", SocketAddr::new(server, port ^ 1)).await;
    assert!(ports.claim(other_port).is_some());
    let (mine, _c3) = connection("box-a", there).await;
    assert!(ports.claim(mine).is_none());
    assert!(pending.connection().await.is_some());
    // Taken once: a second connection there is an ordinary one.
    let (again, _c4) = connection("box-a", there).await;
    assert!(ports.claim(again).is_some());
    drop(pending);
    assert_eq!(ports.waiting(), 0);
}

#[tokio::test]
async fn a_box_has_a_bounded_number_of_data_ports_and_dropped_ones_go() {
    let ports = Arc::new(DataPorts::default());
    let server = Ipv4Addr::new(203, 0, 113, 9).into();
    let held: Vec<_> = (0..PER_BOX)
        .map(|_| ports.open("box-a", server).expect("within the bound"))
        .collect();
    assert!(ports.open("box-a", server).is_none());
    assert!(ports.open("box-b", server).is_some());
    let gone = held[0].port();
    drop(held);
    assert_eq!(ports.waiting(), 0);
    assert!(ports.open("box-a", server).is_some());
    // The port of a transfer that went away takes nothing.
    let (late, _c) = connection("box-a", SocketAddr::new(server, gone)).await;
    assert!(ports.claim(late).is_some());
}

#[tokio::test(start_paused = true)]
async fn a_box_looping_on_pasv_is_held_to_its_openings_per_minute() {
    let ports = Arc::new(DataPorts::default());
    let server = Ipv4Addr::new(203, 0, 113, 9).into();
    for _ in 0..super::ports::OPENINGS_PER_WINDOW {
        // Each dropped at once, as a PASV replacing the last one is.
        assert!(ports.open("box-a", server).is_some());
    }
    assert!(ports.open("box-a", server).is_none());
    assert!(
        ports.open("box-b", server).is_some(),
        "another box is unaffected"
    );
    tokio::time::advance(super::ports::OPENINGS_WINDOW).await;
    assert!(ports.open("box-a", server).is_some());
}

#[tokio::test(start_paused = true)]
async fn an_unused_data_port_expires() {
    let ports = Arc::new(DataPorts::default());
    let server = Ipv4Addr::new(203, 0, 113, 9).into();
    let mut pending = ports.open("box-a", server).expect("a port");
    let started = tokio::time::Instant::now();
    assert!(pending.connection().await.is_none());
    assert_eq!(started.elapsed(), super::ports::EXPIRY);
    // Expired ones do not count against the box.
    let _kept: Vec<_> = (0..PER_BOX - 1)
        .map(|_| ports.open("box-a", server).expect("within the bound"))
        .collect();
    assert!(ports.open("box-a", server).is_some());
}
