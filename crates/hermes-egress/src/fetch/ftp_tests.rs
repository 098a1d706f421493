//! FTP through the gateway: the box's side driven over a pipe, its data connection
//! a real socket handed over as the gateway would, and an FTP server of the test's
//! own on loopback (written from the raw protocol, not from our wire module).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hermes_core::capture::sha256_hex;
use hermes_core::config::{ByteSize, Seconds};
use hermes_core::events::{Event, EventId};
use rand::RngExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::tests::Rig;
use crate::ftp::{DataPorts, serve_ftp};
use crate::seams::BoxConnection;

#[derive(Clone, Copy, PartialEq)]
enum Upstream {
    /// Serves its files; its `227` names an address that is not its own.
    Serve,
    /// Answers every login with 530.
    RefuseLogin,
    /// Greets with random bytes.
    Garbage,
    /// Greets with a line that never ends.
    EndlessLine,
    /// Accepts and says nothing.
    Silent,
    /// Serves, then closes the data connection early and says 426.
    Abort,
    /// Serves, without `SIZE`.
    NoSize,
}

struct FtpServer {
    address: SocketAddr,
    /// Every command line it read, and `DATA` for each data connection it accepted.
    log: Arc<Mutex<Vec<String>>>,
}

impl FtpServer {
    fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }
}

async fn ftp_server(files: &[(&str, Vec<u8>)], behaviour: Upstream) -> FtpServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let log = Arc::new(Mutex::new(Vec::new()));
    let files: Arc<HashMap<String, Vec<u8>>> = Arc::new(
        files
            .iter()
            .map(|(name, body)| ((*name).to_owned(), body.clone()))
            .collect(),
    );
    let seen = Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(control(
                socket,
                Arc::clone(&files),
                behaviour,
                Arc::clone(&seen),
            ));
        }
    });
    FtpServer { address, log }
}

async fn control(
    socket: TcpStream,
    files: Arc<HashMap<String, Vec<u8>>>,
    behaviour: Upstream,
    log: Arc<Mutex<Vec<String>>>,
) {
    let (read, mut write) = socket.into_split();
    match behaviour {
        Upstream::Garbage => {
            let noise: Vec<u8> = (0..4096).map(|_| rand::rng().random()).collect();
            let _ = write.write_all(&noise).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
        Upstream::EndlessLine => {
            let _ = write.write_all(b"220 ").await;
            for _ in 0..1000 {
                if write.write_all(&[b'x'; 1024]).await.is_err() {
                    return;
                }
            }
            return;
        }
        Upstream::Silent => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
        _ => {}
    }
    let mut lines = BufReader::new(read).lines();
    // A multi-line greeting, as some servers send.
    let _ = write
        .write_all(b"220-Test FTP server\r\n220-be nice\r\n220 ready\r\n")
        .await;
    let mut data: Option<TcpListener> = None;
    while let Ok(Some(line)) = lines.next_line().await {
        log.lock().expect("log").push(line.clone());
        let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let answer = match verb {
            "USER" => "331 Password please.".to_owned(),
            "PASS" if behaviour == Upstream::RefuseLogin => "530 Login incorrect.".to_owned(),
            "PASS" => "230 Logged in.".to_owned(),
            "TYPE" => "200 Binary it is.".to_owned(),
            "PASV" => {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("data bind");
                let port = listener.local_addr().expect("data address").port();
                data = Some(listener);
                // An address that is not ours: the client must ignore it.
                format!(
                    "227 Entering Passive Mode (10,9,9,9,{},{}).",
                    port >> 8,
                    port & 0xff
                )
            }
            "SIZE" if behaviour == Upstream::NoSize => "500 Unknown command.".to_owned(),
            "SIZE" => match files.get(arg.trim_start_matches('/')) {
                Some(body) => format!("213 {}", body.len()),
                None => "550 No such file.".to_owned(),
            },
            "RETR" => {
                let name = arg.trim_start_matches('/');
                let Some(body) = files.get(name) else {
                    let _ = write.write_all(b"550 No such file.\r\n").await;
                    continue;
                };
                let Some(listener) = data.take() else {
                    let _ = write.write_all(b"425 No PASV.\r\n").await;
                    continue;
                };
                let opening = format!("150 Here it comes ({} bytes).\r\n", body.len());
                let _ = write.write_all(opening.as_bytes()).await;
                let (mut stream, _) = listener.accept().await.expect("data accept");
                log.lock().expect("log").push("DATA".to_owned());
                if behaviour == Upstream::Abort {
                    let _ = stream.write_all(&body[..body.len() / 2]).await;
                    drop(stream);
                    "426 Connection closed; transfer aborted.".to_owned()
                } else {
                    let _ = stream.write_all(body).await;
                    drop(stream);
                    "226 Transfer complete.".to_owned()
                }
            }
            "QUIT" => {
                let _ = write.write_all(b"221 Bye.\r\n").await;
                return;
            }
            _ => "502 No.".to_owned(),
        };
        if write
            .write_all(format!("{answer}\r\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The box's side: a control connection to Hermes's FTP server for `server`.
struct BoxClient {
    control: BufReader<DuplexStream>,
    ports: Arc<DataPorts>,
    server: SocketAddr,
    rig_ctx: crate::BoxContext,
}

impl BoxClient {
    fn start(rig: &Rig, server: SocketAddr) -> BoxClient {
        let (box_side, gateway_side) = tokio::io::duplex(64 * 1024);
        let ports = Arc::new(DataPorts::default());
        tokio::spawn(serve_ftp(
            gateway_side,
            server,
            rig.ctx.clone(),
            Arc::clone(&rig.fetcher),
            Arc::clone(&ports),
        ));
        BoxClient {
            control: BufReader::new(box_side),
            ports,
            server,
            rig_ctx: rig.ctx.clone(),
        }
    }

    /// One reply line (our server's are all one line), "" at the close.
    async fn reply(&mut self) -> String {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(20), self.control.read_line(&mut line))
            .await
            .expect("a reply in time")
            .expect("read");
        line.trim_end().to_owned()
    }

    async fn send(&mut self, command: &str) -> String {
        self.control
            .get_mut()
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .expect("send");
        self.reply().await
    }

    /// `PASV`, and the box's connection to the port it names, handed over as the
    /// gateway hands it (to the server's address, the box's container).
    async fn passive(&mut self) -> TcpStream {
        let reply = self.send("PASV").await;
        assert!(reply.starts_with("227 "), "{reply}");
        let numbers: Vec<u16> = reply
            .split(['(', ')'])
            .nth(1)
            .expect("parentheses")
            .split(',')
            .map(|n| n.parse().expect("number"))
            .collect();
        assert_eq!(
            numbers[..4]
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join("."),
            self.server.ip().to_string(),
            "the box is told the server's own address"
        );
        let port = numbers[4] * 256 + numbers[5];
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("address"))
            .await
            .expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        let connection = BoxConnection {
            stream,
            destination: SocketAddr::new(self.server.ip(), port),
            context: self.rig_ctx.clone(),
        };
        assert!(
            self.ports.claim(connection).is_none(),
            "the transfer takes it"
        );
        client
    }

    async fn login(&mut self, user: &str, password: &str) {
        assert_eq!(self.reply().await, "220 (vsFTPd 3.0.3)");
        assert_eq!(
            self.send(&format!("USER {user}")).await,
            "331 Please specify the password."
        );
        assert_eq!(
            self.send(&format!("PASS {password}")).await,
            "230 Login successful."
        );
    }

    /// `RETR name` over a passive connection: the replies and the bytes.
    async fn get(&mut self, name: &str) -> (String, Vec<u8>, String) {
        let mut data = self.passive().await;
        let first = self.send(&format!("RETR {name}")).await;
        let mut body = Vec::new();
        if !first.starts_with("150 ") {
            return (first, body, String::new());
        }
        tokio::time::timeout(Duration::from_secs(20), data.read_to_end(&mut body))
            .await
            .expect("the data connection closes")
            .expect("read");
        let last = self.reply().await;
        (first, body, last)
    }
}

fn rig(server: SocketAddr, tune: impl FnOnce(&mut hermes_core::config::EgressConfig)) -> Rig {
    super::tests::rig(&["127.0.0.0/8"], &[server.port()], tune)
}

fn text(event: &Event, field: &str) -> String {
    event
        .get(field)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

fn binary(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| i.wrapping_mul(2_654_435_761).to_be_bytes()[0])
        .collect()
}

#[tokio::test]
async fn a_retr_is_fetched_with_the_box_login_streamed_stored_and_reported() {
    let body = binary(20_000);
    let upstream = ftp_server(&[("pub/x.bin", body.clone())], Upstream::Serve).await;
    let rig = rig(upstream.address, |_| {});
    let mut client = BoxClient::start(&rig, upstream.address);
    client.login("bot", "s3cr3t").await;
    assert_eq!(client.send("SYST").await, "215 UNIX Type: L8");
    assert_eq!(client.send("TYPE I").await, "200 Switching to Binary mode.");
    assert_eq!(
        client.send("CWD pub").await,
        "250 Directory successfully changed."
    );
    assert_eq!(
        client.send("PWD").await,
        "257 \"/pub\" is the current directory"
    );
    assert_eq!(client.send("SIZE x.bin").await, "213 20000");
    let (first, got, last) = client.get("x.bin").await;
    assert_eq!(
        first,
        "150 Opening BINARY mode data connection for x.bin (20000 bytes)."
    );
    assert_eq!(got, body, "the box gets the file as served");
    assert_eq!(last, "226 Transfer complete.");
    assert_eq!(client.send("QUIT").await, "221 Goodbye.");
    let events = rig.events.of(EventId::FileDownload);
    assert_eq!(events.len(), 1, "{:?}", rig.events.all());
    let event = &events[0];
    let url = format!("ftp://127.0.0.1:{}/pub/x.bin", upstream.address.port());
    assert_eq!(text(event, "url"), url);
    assert_eq!(text(event, "shasum"), sha256_hex(&body));
    assert_eq!(text(event, "ftp_user"), "bot");
    assert_eq!(text(event, "ftp_password"), "s3cr3t");
    assert_eq!(text(event, "upstream"), upstream.address.to_string());
    let outfile = text(event, "outfile");
    assert_eq!(std::fs::read(outfile).expect("stored"), body);
    // Upstream saw the box's login, and the data connection reached it although
    // its 227 named 10.9.9.9.
    let log = upstream.log();
    let expected = [
        "USER bot",
        "PASS s3cr3t",
        "TYPE I",
        "SIZE /pub/x.bin",
        "PASV",
        "RETR /pub/x.bin",
        "DATA",
        "QUIT",
    ];
    assert_eq!(log, expected, "one login for SIZE and RETR");
    assert_eq!(rig.fetcher.upstream_connects(), 1);
}

#[tokio::test]
async fn a_missing_file_is_a_550_and_a_failed_event_with_the_login() {
    let upstream = ftp_server(&[], Upstream::Serve).await;
    let rig = rig(upstream.address, |_| {});
    let mut client = BoxClient::start(&rig, upstream.address);
    client.login("anonymous", "a@b.c").await;
    let (first, _, _) = client.get("/nothere.bin").await;
    assert_eq!(first, "550 Failed to open file.");
    // A SIZE that finds the file missing is reported once, its RETR not again.
    assert_eq!(
        client.send("SIZE gone.bin").await,
        "550 Could not get file size."
    );
    let (first, _, _) = client.get("gone.bin").await;
    assert_eq!(first, "550 Failed to open file.");
    // The session goes on, and a new data port works.
    assert_eq!(client.send("NOOP").await, "200 NOOP ok.");
    let failed = rig.events.of(EventId::FileDownloadFailed);
    assert_eq!(failed.len(), 2, "{:?}", rig.events.all());
    let gone = format!("ftp://127.0.0.1:{}/gone.bin", upstream.address.port());
    assert_eq!(text(&failed[1], "url"), gone);
    assert_eq!(text(&failed[1], "reason"), "ftp_error");
    assert!(!upstream.log().iter().any(|l| l == "RETR /gone.bin"));
    let url = format!("ftp://127.0.0.1:{}/nothere.bin", upstream.address.port());
    assert_eq!(text(&failed[0], "url"), url);
    assert_eq!(text(&failed[0], "reason"), "ftp_error");
    assert_eq!(text(&failed[0], "ftp_user"), "anonymous");
    assert!(text(&failed[0], "error").contains("550"));
    assert!(rig.events.of(EventId::FileDownload).is_empty());
}

#[tokio::test]
async fn without_size_upstream_the_box_gets_a_502_and_its_retr_the_file() {
    let body = binary(3000);
    let upstream = ftp_server(&[("x", body.clone())], Upstream::NoSize).await;
    let rig = rig(upstream.address, |_| {});
    let mut client = BoxClient::start(&rig, upstream.address);
    client.login("u", "p").await;
    assert_eq!(client.send("SIZE x").await, "502 Command not implemented.");
    let (first, got, _) = client.get("x").await;
    assert_eq!(
        first,
        "150 Opening BINARY mode data connection for x (3000 bytes)."
    );
    assert_eq!(got, body);
    assert!(rig.events.of(EventId::FileDownloadFailed).is_empty());
    assert_eq!(rig.fetcher.upstream_connects(), 1);
}

#[tokio::test]
async fn a_refused_upstream_login_fails_the_retr() {
    let upstream = ftp_server(&[("x", b"x".to_vec())], Upstream::RefuseLogin).await;
    let rig = rig(upstream.address, |_| {});
    let mut client = BoxClient::start(&rig, upstream.address);
    client.login("root", "wrong").await;
    let (first, _, _) = client.get("x").await;
    assert_eq!(first, "550 Failed to open file.");
    let failed = rig.events.of(EventId::FileDownloadFailed);
    assert_eq!(text(&failed[0], "reason"), "ftp_login");
    assert!(!upstream.log().iter().any(|l| l.starts_with("RETR")));
}

#[tokio::test]
async fn a_download_over_the_size_limit_is_cut_and_what_came_kept() {
    let body = binary(50_000);
    let upstream = ftp_server(&[("big.bin", body.clone())], Upstream::Serve).await;
    let rig = rig(upstream.address, |config| {
        config.limits.download_size = ByteSize::kib(8);
    });
    let mut client = BoxClient::start(&rig, upstream.address);
    client.login("u", "p").await;
    let (_, got, last) = client.get("big.bin").await;
    assert_eq!(got, body[..8192]);
    assert_eq!(last, "426 Failure writing network stream.");
    let events = rig.events.of(EventId::FileDownload);
    assert_eq!(events.len(), 1, "{:?}", rig.events.all());
    assert_eq!(text(&events[0], "reason"), "download_size");
    assert_eq!(
        events[0].get("truncated").and_then(|v| v.as_bool()),
        Some(true)
    );
    assert_eq!(text(&events[0], "shasum"), sha256_hex(&body[..8192]));
}

#[tokio::test]
async fn a_transfer_upstream_aborts_is_kept_as_incomplete() {
    let body = binary(10_000);
    let upstream = ftp_server(&[("x", body.clone())], Upstream::Abort).await;
    let rig = rig(upstream.address, |_| {});
    let mut client = BoxClient::start(&rig, upstream.address);
    client.login("u", "p").await;
    let (_, got, last) = client.get("x").await;
    assert_eq!(got, body[..5000]);
    assert_eq!(last, "426 Failure writing network stream.");
    let events = rig.events.of(EventId::FileDownload);
    assert_eq!(text(&events[0], "reason"), "incomplete");
}

#[tokio::test]
async fn hostile_or_silent_upstreams_fail_in_time() {
    for behaviour in [Upstream::Garbage, Upstream::EndlessLine, Upstream::Silent] {
        let upstream = ftp_server(&[], behaviour).await;
        let rig = rig(upstream.address, |config| {
            config.limits.fetch_timeout = Seconds::new(2);
        });
        let mut client = BoxClient::start(&rig, upstream.address);
        client.login("u", "p").await;
        let started = Instant::now();
        let (first, _, _) = client.get("x").await;
        assert_eq!(first, "550 Failed to open file.");
        assert!(started.elapsed() < Duration::from_secs(5));
        let failed = rig.events.of(EventId::FileDownloadFailed);
        let expected = if behaviour == Upstream::Silent {
            "fetch_timeout"
        } else {
            "bad_response"
        };
        assert_eq!(text(&failed[0], "reason"), expected, "{:?}", failed[0]);
    }
}

#[tokio::test]
async fn an_ssrf_refused_server_is_never_greeted_nor_contacted() {
    let rig = super::tests::rig(&["127.0.0.0/8"], &[], |_| {});
    for (server, reason) in [
        ("10.1.2.3:21", "private"),
        ("169.254.169.254:21", "metadata"),
    ] {
        let server: SocketAddr = server.parse().expect("address");
        let mut client = BoxClient::start(&rig, server);
        assert_eq!(client.reply().await, "", "closed without a greeting");
        let failed = rig.events.of(EventId::FileDownloadFailed);
        let event = failed.last().expect("a failure");
        assert_eq!(text(event, "url"), format!("ftp://{}/", server.ip()));
        assert_eq!(text(event, "reason"), reason);
    }
    assert_eq!(rig.fetcher.upstream_connects(), 0);
}

/// A box that asks SIZE (which opens the fetch, and takes a permit) and then stalls
/// gives the permit back: with one permit, another box's SIZE is answered.
#[tokio::test]
async fn a_size_whose_retr_never_comes_gives_its_permit_back() {
    let upstream = ftp_server(&[("x.bin", binary(100))], Upstream::Serve).await;
    let rig = rig(upstream.address, |c| c.limits.concurrent_fetches = 1);
    let mut stalled = BoxClient::start(&rig, upstream.address);
    stalled.login("bot", "s3cr3t").await;
    assert_eq!(stalled.send("SIZE x.bin").await, "213 100");
    let started = std::time::Instant::now();
    let mut other = BoxClient::start(&rig, upstream.address);
    other.login("bot", "s3cr3t").await;
    assert_eq!(other.send("SIZE x.bin").await, "213 100");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(8) && waited < Duration::from_secs(20),
        "{waited:?}"
    );
}

#[tokio::test]
async fn the_box_side_answers_like_a_server_without_going_upstream() {
    let rig = super::tests::rig(&["127.0.0.0/8"], &[2121], |_| {});
    let server: SocketAddr = "127.0.0.1:2121".parse().expect("address");
    let mut client = BoxClient::start(&rig, server);
    assert_eq!(client.reply().await, "220 (vsFTPd 3.0.3)");
    assert_eq!(
        client.send("RETR x").await,
        "530 Please login with USER and PASS."
    );
    assert_eq!(client.send("PASS x").await, "503 Login with USER first.");
    assert_eq!(
        client.send("USER a").await,
        "331 Please specify the password."
    );
    assert_eq!(client.send("PASS b").await, "230 Login successful.");
    assert_eq!(client.send("RETR x").await, "425 Use PORT or PASV first.");
    assert_eq!(
        client.send("PORT 10,0,2,15,4,1").await,
        "500 Illegal PORT command."
    );
    assert_eq!(
        client.send("EPRT |1|10.0.2.15|1025|").await,
        "500 Bad EPRT command."
    );
    assert_eq!(client.send("LIST").await, "502 Command not implemented.");
    assert_eq!(client.send("\u{1}\u{2}").await, "500 Unknown command.");
    let epsv = client.send("EPSV").await;
    assert!(
        epsv.starts_with("229 Entering Extended Passive Mode (|||"),
        "{epsv}"
    );
    assert_eq!(
        client.send("CDUP").await,
        "250 Directory successfully changed."
    );
    assert_eq!(client.send("MDTM x").await, "502 Command not implemented.");
    let long = format!("USER {}", "a".repeat(5000));
    assert_eq!(client.send(&long).await, "500 Input line too long.");
    assert_eq!(client.reply().await, "", "closed after it");
    assert_eq!(rig.fetcher.upstream_connects(), 0);
    assert!(rig.events.all().is_empty(), "{:?}", rig.events.all());
}

#[tokio::test]
async fn random_commands_never_panic_and_the_box_side_stays_bounded() {
    let rig = super::tests::rig(&["127.0.0.0/8"], &[2121], |_| {});
    let server: SocketAddr = "127.0.0.1:2121".parse().expect("address");
    let alphabet = b"USERPASRETRCWDPWDTYPEPASVEPSV /.\r\n\x00\xff";
    for round in 0..50 {
        let (mut box_side, gateway_side) = tokio::io::duplex(64 * 1024);
        let ports = Arc::new(DataPorts::default());
        let serve = tokio::spawn(serve_ftp(
            gateway_side,
            server,
            rig.ctx.clone(),
            Arc::clone(&rig.fetcher),
            Arc::clone(&ports),
        ));
        let noise: Vec<u8> = {
            let mut rng = rand::rng();
            (0..rng.random_range(0..4000))
                .map(|_| {
                    if round % 2 == 0 {
                        alphabet[rng.random_range(0..alphabet.len())]
                    } else {
                        rng.random()
                    }
                })
                .collect()
        };
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = box_side.write_all(&noise).await;
            let _ = box_side.shutdown().await;
            let _ = box_side.read_to_end(&mut sink).await;
            sink
        });
        let answered = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the box side closes in time")
            .expect("reader");
        assert!(answered.starts_with(b"220 (vsFTPd 3.0.3)\r\n"));
        tokio::time::timeout(Duration::from_secs(10), serve)
            .await
            .expect("serve ends")
            .expect("no panic");
        // The session's data ports went with it.
        assert_eq!(ports.waiting(), 0);
    }
    // Nothing reached upstream without a RETR over a data connection.
    assert_eq!(rig.fetcher.upstream_connects(), 0);
}
