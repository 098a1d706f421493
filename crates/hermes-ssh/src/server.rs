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

use hermes_core::address_block::AddressBlock;
use hermes_core::admission::Ticket;
use hermes_core::session::{ClientConnection, Connection, SessionServices, connection_dropped};

use crate::algorithms::{AlgorithmNames, build_offer};
use crate::handler::{ConnectionShared, MAX_PACKET, SshHandler, WINDOW_SIZE};
use crate::ident::{self, Outcome};
use crate::proxy_protocol::{self, ProxiedAddresses};
use crate::stream::{ClientStream, StreamControl};

/// What the SSH side needs beyond the core's services.
pub struct SshSettings {
    /// Identification string (without CR LF).
    pub banner: String,
    /// Host keys (at least one).
    pub host_keys: Vec<PrivateKey>,
    /// Algorithms offered.
    pub algorithms: AlgorithmNames,
    /// Offer keyboard-interactive.
    pub keyboard_interactive: bool,
    /// sshd's MaxAuthTries.
    pub max_auth_tries: u32,
    /// sshd's LoginGraceTime; None for no limit.
    pub login_grace: Option<Duration>,
    /// sshd's ClientAliveInterval and ClientAliveCountMax; None sends no keepalives.
    pub client_alive: Option<(Duration, u32)>,
    /// A load balancer's PROXY protocol header in front of every connection.
    pub proxy: Option<ProxySettings>,
}

/// Who may send a PROXY protocol header, and how long it may take.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// The balancers' addresses.
    pub trusted: Vec<AddressBlock>,
    /// The header must be complete this soon after the connection.
    pub header_timeout: Duration,
}

/// Everything one connection task needs, shared by all of them.
struct ServerShared {
    config: Arc<russh::server::Config>,
    services: Arc<SessionServices>,
    banner: String,
    keyboard_interactive: bool,
    login_grace: Option<Duration>,
    proxy: Option<ProxySettings>,
}

/// The SSH server: a russh configuration and the core services it drives.
pub struct SshServer {
    shared: Arc<ServerShared>,
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

/// Messages one channel may have waiting while the core is busy with an earlier one
/// (starting its process, say); past it the connection's reader waits. Requests are
/// not bound by the flow-control window, and a packet may carry 256 KiB, so this
/// bounds what a channel's pending requests hold: 16 of them, 4 MiB at most.
const CHANNEL_BACKLOG: usize = 16;

impl SshServer {
    /// Builds the russh configuration from the persona.
    pub fn new(settings: SshSettings, services: Arc<SessionServices>) -> Self {
        let offer = build_offer(&settings.algorithms);
        if !offer.unsupported.is_empty() {
            tracing::warn!(target: "hermes::ssh", left_out = ?offer.unsupported, "algorithms without an implementation are not offered");
        }
        let config = russh::server::Config {
            server_id: SshId::Standard(settings.banner.clone().into()),
            methods: MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..]),
            // The core applies sshd's failure timing itself.
            auth_rejection_time: Duration::ZERO,
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: settings.host_keys,
            preferred: offer.preferred,
            // MaxAuthTries is enforced by the core with sshd's disconnect; this is only
            // a backstop for clients that never stop.
            max_auth_attempts: settings.max_auth_tries as usize * 2 + 10,
            inactivity_timeout: None,
            keepalive_interval: settings.client_alive.map(|(interval, _)| interval),
            keepalive_max: settings
                .client_alive
                .map(|(_, count)| count as usize)
                .unwrap_or(3),
            window_size: WINDOW_SIZE,
            maximum_packet_size: MAX_PACKET,
            channel_buffer_size: CHANNEL_BACKLOG,
            nodelay: true,
            ..Default::default()
        };
        SshServer {
            shared: Arc::new(ServerShared {
                config: Arc::new(config),
                services,
                banner: settings.banner,
                keyboard_interactive: settings.keyboard_interactive,
                login_grace: settings.login_grace,
                proxy: settings.proxy,
            }),
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
        let mut refusal_tick = tokio::time::interval(REFUSAL_TICK);
        refusal_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = refusal_tick.tick() => self.shared.services.write_refusals(false),
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let local = stream.local_addr().unwrap_or(peer);
                        if let Some(proxy) = &self.shared.proxy {
                            if !proxy.trusted.iter().any(|block| block.matches(peer.ip())) {
                                tracing::warn!(target: "hermes::ssh", %peer, "connection from outside proxy_trusted closed (PROXY protocol is on)");
                                continue;
                            }
                            connections.spawn(proxied_connection(
                                Arc::clone(&self.shared),
                                stream,
                                peer,
                                local,
                                connection_shutdown.clone(),
                            ));
                            continue;
                        }
                        if let Some(ticket) = admit(&self.shared, peer, local) {
                            connections.spawn(run_connection(
                                Arc::clone(&self.shared),
                                stream,
                                peer,
                                local,
                                ticket,
                                connection_shutdown.clone(),
                            ));
                        }
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
        // Nothing is refused any more: write out every refusal still being summed.
        self.shared.services.write_refusals(true);
    }
}

/// How often refusal summaries whose interval has ended are written.
const REFUSAL_TICK: Duration = Duration::from_secs(1);

/// Admission (per-source and global limits): a ticket, or None when the connection
/// is to be dropped as sshd drops it past MaxStartups (before the banner).
fn admit(shared: &ServerShared, peer: SocketAddr, local: SocketAddr) -> Option<Ticket> {
    let services = &shared.services;
    match services.admission.admit(peer.ip().to_canonical()) {
        Ok(ticket) => Some(ticket),
        Err(reason) => {
            connection_dropped(services, peer, local, reason);
            None
        }
    }
}

/// Reads the balancer's PROXY header, then admits and runs the connection as the
/// client it names.
async fn proxied_connection(
    shared: Arc<ServerShared>,
    mut stream: TcpStream,
    balancer: SocketAddr,
    local: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(proxy) = &shared.proxy else {
        return;
    };
    let header = tokio::select! {
        header = proxy_protocol::read_header(&mut stream, proxy.header_timeout) => header,
        // Nothing was admitted or logged for it yet: shutdown just closes it.
        _ = shutdown_requested(&mut shutdown) => return,
    };
    let (peer, local, health_check) = match header {
        Ok(ProxiedAddresses::Tcp {
            source,
            destination,
        }) => (source, destination, false),
        Ok(ProxiedAddresses::Local) => (balancer, local, true),
        Err(error) => {
            tracing::warn!(target: "hermes::ssh", %balancer, %error, "connection closed");
            return;
        }
    };
    if let Some(ticket) = admit(&shared, peer, local) {
        if health_check {
            // The balancer's own checks never log in; they must not get it refused.
            ticket.progress().exempt_from_penalties();
        }
        run_connection(Arc::clone(&shared), stream, peer, local, ticket, shutdown).await;
    }
}

async fn run_connection(
    shared: Arc<ServerShared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    ticket: Ticket,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let progress = ticket.progress();
    let conn = Connection::accept(Arc::clone(&shared.services), peer, local, Some(ticket));
    // Every way out of this task ends the connection: returns, and an abort when the
    // drain period is over.
    let _finish = conn.finish_on_drop();
    let grace = shared
        .login_grace
        .unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
    let started = tokio::time::Instant::now();

    let exchanged = tokio::select! {
        outcome = ident::exchange(&mut stream, &shared.banner, grace, &progress) => outcome,
        reason = progress.evicted() => {
            conn.evicted(reason, progress.silent());
            return;
        }
        // Not logged in: shutdown closes it at once, as sshd's listener going away
        // does (a slow client must not hold shutdown for the whole drain).
        _ = shutdown_requested(&mut shutdown) => return,
    };
    let line = match exchanged {
        Ok(Outcome::Accepted(line)) => {
            conn.client_version(&line);
            line
        }
        Ok(Outcome::Refused { reply, line }) => {
            conn.bad_version(&line, reply);
            return;
        }
        Ok(Outcome::Unsupported(line)) => {
            conn.client_version(&line);
            tracing::info!(target: "hermes::ssh", session_id = %conn.session_id(), "identification sshd accepts but the SSH library does not; closing");
            return;
        }
        Ok(Outcome::TimedOut) => {
            conn.login_grace_expired(grace.as_secs());
            return;
        }
        Ok(Outcome::Closed) | Err(_) => return,
    };

    let control = StreamControl::new();
    let connection_shared = ConnectionShared::new();
    let handler = SshHandler::new(
        Arc::clone(&conn),
        Arc::clone(&connection_shared),
        Arc::clone(&control),
        shared.keyboard_interactive,
    );
    let reporter = Arc::clone(&conn);
    let client_stream = ClientStream::new(
        stream,
        &line,
        shared.banner.len() + 2,
        Arc::clone(&control),
        Arc::clone(&progress),
        move |kex| reporter.client_kex(&kex),
    );
    let mut running = match russh::server::run_stream(
        Arc::clone(&shared.config),
        client_stream,
        handler,
    )
    .await
    {
        Ok(running) => running,
        Err(error) => {
            tracing::debug!(target: "hermes::ssh", session_id = %conn.session_id(), %error, "SSH session did not start");
            return;
        }
    };
    let handle = running.handle();
    conn.attach_client(Arc::new(RusshConnection {
        handle: handle.clone(),
    }));

    let grace_timer = tokio::time::sleep_until(started + grace);
    tokio::pin!(grace_timer);
    let mut grace_armed = shared.login_grace.is_some();
    let max_tries_timer = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(max_tries_timer);
    let mut max_tries = MaxTries::Waiting;
    let mut shutdown_seen = false;
    let mut evicted = false;
    let authenticated = || connection_shared.authenticated.load(Ordering::Acquire);
    loop {
        tokio::select! {
            result = &mut running => {
                match result {
                    Err(russh::Error::KeepaliveTimeout) => conn.client_not_responding(),
                    Err(error) => {
                        tracing::debug!(target: "hermes::ssh", session_id = %conn.session_id(), %error, "SSH session ended with an error");
                    }
                    Ok(()) => {}
                }
                break;
            }
            _ = &mut grace_timer, if grace_armed => {
                grace_armed = false;
                if !authenticated() {
                    // sshd logs "Timeout before authentication" and exits: no message.
                    conn.login_grace_expired(grace.as_secs());
                    control.kill();
                }
            }
            _ = control.held_bytes_arrived(), if max_tries == MaxTries::Waiting => {
                // The attempt past MaxAuthTries: answered after sshd's delay, with its
                // disconnect instead of a failure.
                let delay = conn.max_tries_reached();
                max_tries_timer.as_mut().reset(tokio::time::Instant::now() + delay);
                max_tries = MaxTries::Delaying;
            }
            _ = &mut max_tries_timer, if max_tries == MaxTries::Delaying => {
                max_tries = MaxTries::Done;
                let _ = handle
                    .disconnect(russh::Disconnect::ProtocolError, "Too many authentication failures".to_owned(), String::new())
                    .await;
            }
            // Only an unauthenticated connection is ever chosen; one that logs in at the
            // same moment is closed all the same (its places were given back).
            reason = progress.evicted(), if !evicted => {
                evicted = true;
                conn.evicted(reason, progress.silent());
                control.kill();
            }
            _ = shutdown_requested(&mut shutdown), if !shutdown_seen => {
                shutdown_seen = true;
                // Logged-in sessions are ended by the core, with the shutdown message.
                if !authenticated() {
                    control.kill();
                }
            }
        }
    }
    // Let every channel finish its recording before the connection's last events.
    let mut channels = std::mem::take(
        &mut *connection_shared
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    while channels.join_next().await.is_some() {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MaxTries {
    Waiting,
    Delaying,
    Done,
}

/// Resolves when shutdown is requested; never if the sender is gone without asking.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|down| *down).await.is_err() {
        std::future::pending::<()>().await;
    }
}
