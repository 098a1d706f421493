//! Fakes of what the core drives ([`Sandbox`](crate::sandbox::Sandbox), its processes,
//! the SSH client's channels and connection) and an event recorder, so the session
//! logic (timeouts, limits, leases, failures, the client's messages) is tested in
//! process under tokio's paused clock. Built for the crate's tests and with the
//! `testing` feature.

mod channel;
mod client;
mod events;
mod process;
mod sandbox;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use channel::{ChannelDriver, ChannelRequest};
pub use client::{ClientOp, FakeClientChannel, FakeClientConnection};
pub use events::RecordedEvents;
pub use process::FakeProcess;
pub use sandbox::{FakeSandbox, Stage};

use crate::capture::{CaptureLimits, FileStore};
use crate::config::{ByteSize, Config, Credential, Millis, Seconds};
use crate::session::{AuthMethod, CaptureServices, Connection, SessionServices};

/// The few settings the session tests vary, in plain units.
#[derive(Debug, Clone)]
pub struct TestLimits {
    /// `server.session_timeout`.
    pub session_timeout: Duration,
    /// `server.idle_timeout` (zero: off).
    pub idle_timeout: Duration,
    /// `persona.max_sessions`.
    pub max_sessions: u32,
    /// `server.max_concurrent_sessions`.
    pub max_concurrent_sessions: u32,
    /// `container_pool.security.disk_limit`, bytes (a multiple of 1024).
    pub disk_limit: u64,
    /// `recording.output_dir`, with recording on (None: off).
    pub recordings: Option<PathBuf>,
    /// `container_pool.reuse.state_file`, with reuse on (None: off).
    pub reuse_state: Option<PathBuf>,
    /// `container_pool.reuse.linger` (zero here unless a test asks: most tests of
    /// reuse want the box stopped at the end of each session).
    pub linger: Duration,
    /// `container_pool.reuse.freeze_lingering`.
    pub freeze_lingering: bool,
}

impl Default for TestLimits {
    fn default() -> Self {
        TestLimits {
            session_timeout: Duration::from_secs(3600),
            idle_timeout: Duration::ZERO,
            max_sessions: 10,
            max_concurrent_sessions: 10,
            disk_limit: 1 << 30,
            recordings: None,
            reuse_state: None,
            linger: Duration::ZERO,
            freeze_lingering: false,
        }
    }
}

/// The login test sessions use (a static credential of [`config`]).
pub const LOGIN: (&str, &str) = ("root", "root");

/// A second account that always logs in (a static credential of [`config`]).
pub const OTHER_LOGIN: (&str, &str) = ("admin", "admin");

/// The configuration the session tests run with: the defaults, `root`/`root` always
/// logs in at once, and `limits`. The one place tests build a [`Config`].
pub fn config(limits: &TestLimits) -> Config {
    let mut config = Config::default();
    config.persona.auth_failure_delay_ms = Millis::new(0);
    config.authentication.static_credentials = [LOGIN, OTHER_LOGIN]
        .iter()
        .map(|(username, password)| Credential {
            username: (*username).to_owned(),
            password: (*password).to_owned(),
        })
        .collect();
    config.server.session_timeout = Seconds::new(limits.session_timeout.as_secs());
    config.server.idle_timeout = Seconds::new(limits.idle_timeout.as_secs());
    config.server.max_concurrent_sessions = limits.max_concurrent_sessions;
    config.persona.max_sessions = limits.max_sessions;
    config.container_pool.security.disk_limit = ByteSize::kib(limits.disk_limit / 1024);
    config.recording.enabled = limits.recordings.is_some();
    if let Some(dir) = &limits.recordings {
        config.recording.output_dir = dir.clone();
    }
    config.container_pool.reuse.enabled = limits.reuse_state.is_some();
    if let Some(file) = &limits.reuse_state {
        config.container_pool.reuse.state_file = file.clone();
    }
    config.container_pool.reuse.linger = Seconds::new(limits.linger.as_secs());
    config.container_pool.reuse.freeze_lingering = limits.freeze_lingering;
    config
}

/// The shared services over a [`FakeSandbox`], with their events recorded.
pub struct Rig {
    /// What every connection shares.
    pub services: Arc<SessionServices>,
    /// The engine.
    pub sandbox: Arc<FakeSandbox>,
    /// Every event emitted.
    pub events: RecordedEvents,
    shutdown: watch::Sender<bool>,
}

impl Rig {
    /// Services built from `config` (see [`config`]), file capture off.
    pub fn new(config: Config) -> Rig {
        Self::build(config, None)
    }

    /// Services built from `config`, capturing files into a store at `store`.
    pub fn with_capture(config: Config, store: &Path) -> Rig {
        let store = FileStore::open(store, u64::MAX)
            .unwrap_or_else(|error| panic!("test file store: {error}"));
        Self::build(
            config,
            Some(CaptureServices {
                store: Arc::new(store),
                limits: CaptureLimits {
                    max_file_size: 1 << 20,
                    max_files_per_session: 100,
                    ignore_paths: Vec::new(),
                },
            }),
        )
    }

    fn build(config: Config, capture: Option<CaptureServices>) -> Rig {
        let sandbox = FakeSandbox::new();
        let (bus, events) = RecordedEvents::new();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let services = SessionServices::new(
            Arc::new(config),
            bus,
            Arc::clone(&sandbox) as Arc<dyn crate::sandbox::Sandbox>,
            shutdown_rx,
            capture,
        );
        Rig {
            services,
            sandbox,
            events,
            shutdown,
        }
    }

    /// Hermes is shutting down.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// A client connects from `src` (its identification line sent).
    pub fn connect_from(&self, src: &str) -> FakeSession {
        let src: SocketAddr = src
            .parse()
            .unwrap_or_else(|error| panic!("test address {src}: {error}"));
        let dst = SocketAddr::from(([127, 0, 0, 1], 2222));
        let conn = Connection::accept(Arc::clone(&self.services), src, dst, None);
        let client = FakeClientConnection::new();
        conn.attach_client(Arc::clone(&client) as Arc<dyn crate::session::ClientConnection>);
        conn.client_version("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3");
        FakeSession { conn, client }
    }

    /// A client connects from 198.51.100.7.
    pub fn connect(&self) -> FakeSession {
        self.connect_from("198.51.100.7:50000")
    }

    /// Waits until every finished connection has released its container and written
    /// its last events; panics if one is still at it after (paused-clock) five minutes.
    pub async fn finalized(&self) {
        let left = self.services.wait_finalized(Duration::from_secs(300)).await;
        assert_eq!(left, 0, "connections still finishing");
    }
}

/// One client connection.
pub struct FakeSession {
    /// The core's connection.
    pub conn: Arc<Connection>,
    /// Its client end.
    pub client: Arc<FakeClientConnection>,
}

impl FakeSession {
    /// Logs in with [`LOGIN`]; returns whether it was accepted.
    pub async fn login(&self) -> bool {
        self.login_as(LOGIN).await
    }

    /// Logs in with `(username, password)`; returns whether it was accepted.
    pub async fn login_as(&self, (username, password): (&str, &str)) -> bool {
        self.conn
            .password_attempt(AuthMethod::Password, username, password)
            .await
            .accepted
    }

    /// Opens a session channel, or None when `max_sessions` refuses it.
    pub fn open_channel(&self) -> Option<ChannelDriver> {
        let reservation = self.conn.reserve_session()?;
        let client = FakeClientChannel::new();
        let session = self.conn.open_channel(
            reservation,
            Arc::clone(&client) as Arc<dyn crate::session::ClientChannel>,
        );
        Some(ChannelDriver::start(session, client))
    }

    /// The connection is gone (the SSH adapter's last call).
    pub fn finish(&self) {
        self.conn.finish();
    }
}

/// Lets every task that can run do so (advances the paused clock by a millisecond).
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// `future`'s output, or a panic naming `what` if it takes longer than `limit` of the
/// (paused) clock: a test that would hang fails instead.
pub async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not happen within {limit:?}"),
    }
}
