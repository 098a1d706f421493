//! An in-process SSH client (russh) for tests that need exact bytes, resizes or
//! timings the OpenSSH client does not expose.

use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle, Msg};
use russh::keys::PublicKeyOrCertificate;
use russh::{Channel, ChannelMsg};

pub struct AcceptAnyKey;

impl client::Handler for AcceptAnyKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// A logged-in connection.
pub struct Client {
    pub handle: Handle<AcceptAnyKey>,
}

/// An SSH connection to a loopback port, not logged in yet.
pub async fn connect(port: u16) -> Result<Handle<AcceptAnyKey>, russh::Error> {
    // Like OpenSSH for interactive sessions: no Nagle delay on small packets.
    let config = Arc::new(client::Config {
        nodelay: true,
        ..Default::default()
    });
    client::connect(config, ("127.0.0.1", port), AcceptAnyKey).await
}

/// An SSH connection to a loopback port from `source` (any 127.0.0.0/8 address is
/// this machine's, so each test source can be a distinct attacker), not logged in yet.
pub async fn connect_from(
    port: u16,
    source: std::net::Ipv4Addr,
) -> Result<Handle<AcceptAnyKey>, russh::Error> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((source, 0).into())?;
    let stream = socket
        .connect((std::net::Ipv4Addr::LOCALHOST, port).into())
        .await?;
    stream.set_nodelay(true)?;
    client::connect_stream(Arc::new(client::Config::default()), stream, AcceptAnyKey).await
}

impl Client {
    /// Connects from `source` and logs in with a password; panics when it fails.
    pub async fn login_from(
        port: u16,
        source: std::net::Ipv4Addr,
        user: &str,
        password: &str,
    ) -> Client {
        let handle = connect_from(port, source).await.expect("connect");
        Self::authenticate(handle, user, password).await
    }

    /// Connects and logs in with a password; panics when the login fails.
    pub async fn login(port: u16, user: &str, password: &str) -> Client {
        let handle = connect(port).await.expect("connect");
        Self::authenticate(handle, user, password).await
    }

    async fn authenticate(mut handle: Handle<AcceptAnyKey>, user: &str, password: &str) -> Client {
        let result = handle
            .authenticate_password(user, password)
            .await
            .expect("auth exchange");
        assert!(result.success(), "login {user}/{password} refused");
        Client { handle }
    }

    /// Opens a session channel with a terminal of `width` x `height` and a shell.
    pub async fn shell(&self, width: u32, height: u32) -> Shell {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .expect("open session");
        channel
            .request_pty(true, "xterm-256color", width, height, 0, 0, &[])
            .await
            .expect("pty");
        channel.request_shell(true).await.expect("shell");
        Shell::new(channel)
    }

    /// Opens a session channel running `command` without a terminal.
    pub async fn exec(&self, command: &str) -> Shell {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .expect("open session");
        channel.exec(true, command).await.expect("exec");
        Shell::new(channel)
    }
}

/// The prompt of the tests' root login.
pub const ROOT_PROMPT: &str = "root@web-prod-01:~# ";

/// Logs in as root/toor and opens a shell; panics unless the prompt comes.
pub async fn root_shell(port: u16) -> (Client, Shell) {
    let client = Client::login(port, "root", "toor").await;
    let mut shell = client.shell(200, 50).await;
    assert!(
        shell
            .read_until(ROOT_PROMPT, 0, Duration::from_secs(20))
            .await,
        "{}",
        shell.text()
    );
    (client, shell)
}

/// An interactive shell channel and everything it has received.
pub struct Shell {
    pub channel: Channel<Msg>,
    pub received: Vec<u8>,
    pub exit_status: Option<u32>,
    pub closed: bool,
}

impl Shell {
    /// Wraps a channel on which nothing has been received yet.
    pub fn new(channel: Channel<Msg>) -> Shell {
        Shell {
            channel,
            received: Vec::new(),
            exit_status: None,
            closed: false,
        }
    }

    pub async fn send(&self, text: &str) {
        self.channel.data(text.as_bytes()).await.expect("send");
    }

    /// Reads until `needle` has been received (after `from`), or the timeout.
    pub async fn read_until(&mut self, needle: &str, from: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if contains(
                &self.received[from.min(self.received.len())..],
                needle.as_bytes(),
            ) {
                return true;
            }
            if self.closed {
                return false;
            }
            match tokio::time::timeout_at(deadline, self.channel.wait()).await {
                Err(_) => return false,
                Ok(message) => self.absorb(message),
            }
        }
    }

    /// Reads until `needle` has been received, failing the test with the last of the
    /// output when it has not within `timeout`.
    pub async fn expect(&mut self, needle: &str, timeout: Duration) {
        if !self.read_until(needle, 0, timeout).await {
            let text = self.text();
            let tail: String = text
                .chars()
                .rev()
                .take(300)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            panic!("no {needle:?} within {timeout:?}; the output ends: {tail}");
        }
    }

    /// Reads until more than `count` bytes have been received (or the timeout).
    pub async fn wait_for_bytes(&mut self, count: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.received.len() <= count && !self.closed {
            match tokio::time::timeout_at(deadline, self.channel.wait()).await {
                Err(_) => return false,
                Ok(message) => self.absorb(message),
            }
        }
        self.received.len() > count
    }

    /// Reads until the channel closes (or the timeout).
    pub async fn read_to_close(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.closed {
            match tokio::time::timeout_at(deadline, self.channel.wait()).await {
                Err(_) => return false,
                Ok(message) => self.absorb(message),
            }
        }
        true
    }

    fn absorb(&mut self, message: Option<ChannelMsg>) {
        match message {
            Some(ChannelMsg::Data { data }) => self.received.extend_from_slice(&data),
            Some(ChannelMsg::ExtendedData { data, .. }) => self.received.extend_from_slice(&data),
            Some(ChannelMsg::ExitStatus { exit_status }) => self.exit_status = Some(exit_status),
            Some(ChannelMsg::Close) | None => self.closed = true,
            Some(_) => {}
        }
    }

    /// Runs `command`, waits for the next `prompt`, and returns what it printed.
    pub async fn run(&mut self, command: &str, prompt: &str) -> String {
        let mark = self.received.len();
        self.send(&format!("{command}; echo __done$((6*7))\n"))
            .await;
        assert!(
            self.read_until("__done42", mark, Duration::from_secs(30))
                .await,
            "no end marker after {command:?}: {}",
            self.text()
        );
        assert!(
            self.read_until(prompt, mark + 1, Duration::from_secs(10))
                .await
        );
        let text = String::from_utf8_lossy(&self.received[mark..]).into_owned();
        text.split("__done42").next().unwrap_or_default().to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }
}

/// The lines a command printed, from [`Shell::run`]'s text: without the echoed
/// command line, terminal mode switches and carriage returns.
pub fn output_lines(out: &str) -> Vec<String> {
    out.replace("\u{1b}[?2004l", "")
        .split('\n')
        .skip(1)
        .map(|line| line.trim_matches('\r').to_owned())
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
