//! The accept loop and the life of one connection on the SSH side.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::{MethodKind, MethodSet, SshId};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use hermes_core::session::{ClientConnection, Connection, SessionServices};

use crate::algorithms::build_offer;
use crate::handler::{ConnectionShared, SshHandler};
use crate::tap::TappedStream;

/// What the SSH side needs beyond the core's services.
pub struct SshSettings {
    /// Identification string (without CR LF).
    pub banner: String,
    /// Host keys (at least one).
    pub host_keys: Vec<PrivateKey>,
    /// Offer keyboard-interactive.
    pub keyboard_interactive: bool,
    /// sshd's MaxAuthTries.
    pub max_auth_tries: u32,
    /// sshd's LoginGraceTime; None for no limit.
    pub login_grace: Option<Duration>,
}

/// The SSH server: a russh configuration and the core services it drives.
pub struct SshServer {
    config: Arc<russh::server::Config>,
    services: Arc<SessionServices>,
    keyboard_interactive: bool,
    login_grace: Option<Duration>,
}

/// Ends a connection from the core (timeouts, shutdown) through russh's handle.
struct RusshConnection {
    handle: russh::server::Handle,
}

impl ClientConnection for RusshConnection {
    fn disconnect(&self) {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    String::new(),
                    String::new(),
                )
                .await;
        });
    }
}

impl SshServer {
    /// Builds the russh configuration from the persona.
    pub fn new(settings: SshSettings, services: Arc<SessionServices>) -> Self {
        let offer = build_offer();
        if !offer.unsupported.is_empty() {
            tracing::info!(target: "hermes::ssh", left_out = ?offer.unsupported, "persona algorithms the SSH library does not implement are not offered");
        }
        let config = russh::server::Config {
            server_id: SshId::Standard(settings.banner.into()),
            methods: MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..]),
            // The core applies the persona's failure delay itself (with jitter).
            auth_rejection_time: Duration::ZERO,
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: settings.host_keys,
            preferred: offer.preferred,
            // The first "none" probe is rejected too and does not count for sshd.
            max_auth_attempts: settings.max_auth_tries as usize + 1,
            inactivity_timeout: None,
            keepalive_interval: None,
            nodelay: true,
            ..Default::default()
        };
        SshServer {
            config: Arc::new(config),
            services,
            keyboard_interactive: settings.keyboard_interactive,
            login_grace: settings.login_grace,
        }
    }

    /// Accepts connections until `shutdown` turns true, then waits up to `drain` for
    /// open connections to end (they are told to), and aborts the rest.
    pub async fn serve(
        &self,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
        drain: Duration,
    ) {
        let mut connections = JoinSet::new();
        let connection_shutdown = shutdown.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let local = stream.local_addr().unwrap_or(peer);
                        connections.spawn(self.connection(stream, peer, local, connection_shutdown.clone()));
                    }
                    Err(error) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(target: "hermes::ssh", %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = shutdown_requested(&mut shutdown) => break,
                Some(_) = connections.join_next() => {}
            }
        }
        drop(listener);
        tracing::info!(target: "hermes::ssh", open = connections.len(), "listener closed; waiting for connections to end");
        let drained = tokio::time::timeout(drain, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(target: "hermes::ssh", left = connections.len(), "connections still open after the drain period; closing them");
            connections.shutdown().await;
        }
    }

    fn connection(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let config = Arc::clone(&self.config);
        let services = Arc::clone(&self.services);
        let keyboard_interactive = self.keyboard_interactive;
        let login_grace = self.login_grace;
        async move {
            let conn = Connection::accept(services, peer, local);
            run_connection(
                conn,
                stream,
                config,
                keyboard_interactive,
                login_grace,
                shutdown,
            )
            .await;
        }
    }
}

async fn run_connection(
    conn: Arc<Connection>,
    stream: TcpStream,
    config: Arc<russh::server::Config>,
    keyboard_interactive: bool,
    login_grace: Option<Duration>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let shared = ConnectionShared::new();
    let handler = SshHandler::new(Arc::clone(&conn), Arc::clone(&shared), keyboard_interactive);
    let reporter = Arc::clone(&conn);
    let tapped = TappedStream::new(stream, move |line: String| reporter.client_version(&line));
    // run_stream returns once the client's identification line is read: bound it by
    // the login grace time, as sshd does.
    let grace = login_grace.unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
    let started =
        tokio::time::timeout(grace, russh::server::run_stream(config, tapped, handler)).await;
    let mut running = match started {
        Ok(Ok(running)) => running,
        Ok(Err(error)) => {
            tracing::debug!(target: "hermes::ssh", session_id = %conn.session_id(), %error, "SSH handshake failed");
            conn.finish();
            return;
        }
        Err(_) => {
            tracing::debug!(target: "hermes::ssh", session_id = %conn.session_id(), "no identification before the login grace time");
            conn.finish();
            return;
        }
    };
    let handle = running.handle();
    conn.attach_client(Arc::new(RusshConnection {
        handle: handle.clone(),
    }));
    let grace_timer = tokio::time::sleep(grace);
    tokio::pin!(grace_timer);
    let mut grace_armed = login_grace.is_some();
    let mut shutdown_seen = false;
    loop {
        tokio::select! {
            result = &mut running => {
                if let Err(error) = result {
                    tracing::debug!(target: "hermes::ssh", session_id = %conn.session_id(), %error, "SSH session ended with an error");
                }
                break;
            }
            _ = &mut grace_timer, if grace_armed => {
                grace_armed = false;
                if !shared.authenticated.load(Ordering::Acquire) {
                    tracing::info!(target: "hermes::ssh", session_id = %conn.session_id(), "login grace time over; disconnecting");
                    let _ = handle.disconnect(russh::Disconnect::ByApplication, String::new(), String::new()).await;
                }
            }
            _ = shutdown_requested(&mut shutdown), if !shutdown_seen => {
                shutdown_seen = true;
                // Logged-in sessions are ended by the core, with the shutdown message.
                if !shared.authenticated.load(Ordering::Acquire) {
                    let _ = handle.disconnect(russh::Disconnect::ByApplication, String::new(), String::new()).await;
                }
            }
        }
    }
    // Let every channel finish its recording before the connection's last events.
    let mut channels =
        std::mem::take(&mut *shared.channels.lock().unwrap_or_else(|p| p.into_inner()));
    while channels.join_next().await.is_some() {}
    conn.finish();
}

/// Resolves when shutdown is requested; never if the sender is gone without asking.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|down| *down).await.is_err() {
        std::future::pending::<()>().await;
    }
}
