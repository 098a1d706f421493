//! Hermes's own FTP client for the upstream fetch: log in with the box's
//! credentials, binary type, passive mode, `RETR`. Every reply is awaited within a
//! timeout and read within the wire module's bounds; the data connection goes to the
//! control connection's peer, never to the address a `227` names.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::wire::{self, Reply, ReplyError};

/// How long the client waits for the server.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// For a TCP connection (control or data).
    pub connect: Duration,
    /// For each reply.
    pub reply: Duration,
}

/// Why the fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The control or data connection could not be made.
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, String),
    /// The server did not answer in time.
    #[error("no reply to {0} in time")]
    Timeout(&'static str),
    /// The server closed or broke the control connection, or sent what is not FTP.
    #[error("after {0}: {1}")]
    Protocol(&'static str, ReplyError),
    /// The server refused the login.
    #[error("login refused: {}", .0.summary())]
    Login(Reply),
    /// The server refused a command (the file is not there, for `RETR`).
    #[error("{verb} refused: {}", .1.summary(), verb = .0)]
    Refused(&'static str, Reply),
    /// A `227`/`229` without a port in it.
    #[error("no port in the passive reply: {}", .0.summary())]
    NoPassivePort(Reply),
    /// The data connection's address is not one a fetch may contact.
    #[error("data connection to {0} refused ({1})")]
    DataRefused(SocketAddr, &'static str),
    /// Writing a command failed.
    #[error("sending {0}: {1}")]
    Send(&'static str, std::io::Error),
}

/// A logged-in control connection.
pub struct Control {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    peer: SocketAddr,
    timeouts: ClientTimeouts,
}

impl Control {
    /// Connects to `server` and logs in as `user` with `password`.
    pub async fn login(
        server: SocketAddr,
        user: &str,
        password: &str,
        timeouts: ClientTimeouts,
    ) -> Result<Control, ClientError> {
        let stream = connect(server, timeouts.connect).await?;
        let (read, writer) = stream.into_split();
        let mut control = Control {
            reader: BufReader::new(read),
            writer,
            peer: server,
            timeouts,
        };
        let greeting = control.reply("the greeting").await?;
        if greeting.code != 220 {
            return Err(ClientError::Refused("the connection", greeting));
        }
        let answer = control.command("USER", user).await?;
        let answer = match answer.code {
            230 => answer,
            331 | 332 => control.command("PASS", password).await?,
            _ => return Err(ClientError::Login(answer)),
        };
        if !answer.is_complete() {
            return Err(ClientError::Login(answer));
        }
        let binary = control.command("TYPE", "I").await?;
        if !binary.is_complete() {
            return Err(ClientError::Refused("TYPE", binary));
        }
        Ok(control)
    }

    /// Asks for a passive data port and connects to it at the control connection's
    /// peer, once `check` allows that address.
    pub async fn open_data(
        &mut self,
        check: impl Fn(SocketAddr) -> Result<(), &'static str>,
    ) -> Result<TcpStream, ClientError> {
        let port = match self.peer {
            SocketAddr::V4(_) => {
                let reply = self.command("PASV", "").await?;
                if reply.code == 227 {
                    wire::pasv_port(&reply.text).ok_or(ClientError::NoPassivePort(reply))?
                } else {
                    self.epsv().await?
                }
            }
            SocketAddr::V6(_) => self.epsv().await?,
        };
        let address = SocketAddr::new(self.peer.ip(), port);
        check(address).map_err(|reason| ClientError::DataRefused(address, reason))?;
        connect(address, self.timeouts.connect).await
    }

    async fn epsv(&mut self) -> Result<u16, ClientError> {
        let reply = self.command("EPSV", "").await?;
        if reply.code != 229 {
            return Err(ClientError::Refused("EPSV", reply));
        }
        wire::epsv_port(&reply.text).ok_or(ClientError::NoPassivePort(reply))
    }

    /// Asks for `path`; the server's byte count when its `150` says it.
    pub async fn retrieve(&mut self, path: &str) -> Result<Option<u64>, ClientError> {
        let reply = self.command("RETR", path).await?;
        if !reply.is_preliminary() {
            return Err(ClientError::Refused("RETR", reply));
        }
        Ok(wire::announced_size(&reply.text))
    }

    /// The server's answer to `SIZE path` (in binary type, set at login).
    pub async fn size(&mut self, path: &str) -> Result<Reply, ClientError> {
        self.command("SIZE", path).await
    }

    /// After the data connection closed: the server's final reply to `RETR`.
    pub async fn finish(&mut self) -> Result<Reply, ClientError> {
        self.reply("RETR").await
    }

    /// Says goodbye, not waiting long for the answer.
    pub async fn quit(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            self.writer.write_all(b"QUIT\r\n").await?;
            let _ = wire::read_reply(&mut self.reader).await;
            std::io::Result::Ok(())
        })
        .await;
    }

    async fn command(&mut self, verb: &'static str, arg: &str) -> Result<Reply, ClientError> {
        let line = if arg.is_empty() {
            format!("{verb}\r\n")
        } else {
            format!("{verb} {arg}\r\n")
        };
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|error| ClientError::Send(verb, error))?;
        self.reply(verb).await
    }

    async fn reply(&mut self, after: &'static str) -> Result<Reply, ClientError> {
        match tokio::time::timeout(self.timeouts.reply, wire::read_reply(&mut self.reader)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(error)) => Err(ClientError::Protocol(after, error)),
            Err(_) => Err(ClientError::Timeout(after)),
        }
    }
}

async fn connect(address: SocketAddr, timeout: Duration) -> Result<TcpStream, ClientError> {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => Err(ClientError::Connect(address, error.to_string())),
        Err(_) => Err(ClientError::Connect(address, "timed out".to_owned())),
    }
}
