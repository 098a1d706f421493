//! The test internet's FTP server, ours, in Rust: its threads enter the web
//! server container's network namespace, so it listens on port 21 at the test
//! server's address (nothing on the host's own addresses). Passive mode only; it
//! logs every command line it reads, for the test to see what reached it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::internet::TestInternet;

/// An FTP server at the test internet's address; stops when dropped.
pub struct FtpServer {
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FtpServer {
    /// Serves `files` (name, contents) on port 21 of `internet`'s server.
    pub fn start(internet: &TestInternet, files: &[(&str, Vec<u8>)]) -> FtpServer {
        let pid = internet.server_pid();
        let address = internet.server;
        let files: Arc<HashMap<String, Vec<u8>>> = Arc::new(
            files
                .iter()
                .map(|(name, body)| ((*name).to_owned(), body.clone()))
                .collect(),
        );
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, listening) = std::sync::mpsc::channel();
        let thread = {
            let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
            std::thread::spawn(move || {
                // This thread, and the ones it starts, live in the server's namespace.
                let namespace =
                    std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("server netns");
                // SAFETY: setns on a descriptor this thread owns; it moves only
                // this thread into the namespace.
                let entered = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
                let listener = TcpListener::bind((address, 21)).expect("bind ftp");
                listener.set_nonblocking(true).expect("nonblocking");
                ready.send(()).expect("ready");
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (files, log) = (Arc::clone(&files), Arc::clone(&log));
                            std::thread::spawn(move || {
                                let _ = session(stream, address, &files, &log);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        listening
            .recv_timeout(Duration::from_secs(10))
            .expect("the FTP server listens");
        FtpServer {
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// Every command line the server read, in order.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn session(
    stream: TcpStream,
    address: Ipv4Addr,
    files: &HashMap<String, Vec<u8>>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?.take(64 * 1024));
    let mut writer = stream;
    writer.write_all(b"220 Test FTP server ready.\r\n")?;
    let mut data: Option<TcpListener> = None;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_owned();
        log.lock().expect("log").push(line.clone());
        let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let answer = match verb.to_ascii_uppercase().as_str() {
            "USER" => "331 Password required.".to_owned(),
            "PASS" => "230 Logged in.".to_owned(),
            "SYST" => "215 UNIX Type: L8".to_owned(),
            "PWD" => "257 \"/\" is current directory.".to_owned(),
            "TYPE" => "200 Type set.".to_owned(),
            "CWD" => "250 OK.".to_owned(),
            "PASV" | "EPSV" => {
                let listener = TcpListener::bind((address, 0))?;
                let port = listener.local_addr()?.port();
                data = Some(listener);
                let [a, b, c, d] = address.octets();
                if verb.eq_ignore_ascii_case("PASV") {
                    format!(
                        "227 Entering Passive Mode ({a},{b},{c},{d},{},{}).",
                        port >> 8,
                        port & 0xff
                    )
                } else {
                    format!("229 Entering Extended Passive Mode (|||{port}|)")
                }
            }
            "SIZE" => match files.get(name_of(arg)) {
                Some(body) => format!("213 {}", body.len()),
                None => "550 No such file.".to_owned(),
            },
            "RETR" => {
                let Some(body) = files.get(name_of(arg)) else {
                    writer.write_all(b"550 No such file.\r\n")?;
                    continue;
                };
                let Some(listener) = data.take() else {
                    writer.write_all(b"425 Use PASV first.\r\n")?;
                    continue;
                };
                writer.write_all(
                    format!(
                        "150 Opening BINARY mode data connection ({} bytes).\r\n",
                        body.len()
                    )
                    .as_bytes(),
                )?;
                let mut connection = accept_within(&listener, Duration::from_secs(10))?;
                connection.write_all(body)?;
                drop(connection);
                "226 Transfer complete.".to_owned()
            }
            "QUIT" => {
                writer.write_all(b"221 Goodbye.\r\n")?;
                return Ok(());
            }
            _ => "502 Not implemented.".to_owned(),
        };
        writer.write_all(format!("{answer}\r\n").as_bytes())?;
    }
}

/// The client's data connection, if it comes in time.
fn accept_within(listener: &TcpListener, wait: Duration) -> std::io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(error) if std::time::Instant::now() > deadline => return Err(error),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// The file a path names (the server has one flat directory).
fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
