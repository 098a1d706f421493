//! Orchestration of one SSH connection: authentication decisions, the container lease,
//! timeouts, and the end of the session (release, metadata, events).
//!
//! The SSH adapter creates a [`Connection`] per TCP connection, reports what the client
//! does, and opens a [`ChannelSession`] per session channel. The core answers through the
//! small [`ClientConnection`] and [`ClientChannel`] traits, so it never sees the SSH
//! library.

mod auth;
mod channel;
mod files;
mod forward;
mod forward_egress;
mod input;
mod launch;
mod lease;
mod linger;
mod login_ready;
pub mod messages;
mod pump;
mod recording;
mod reload;
mod resize;
mod session_place;
mod slots;
mod sshd_path;
mod standby;
#[cfg(test)]
mod tests;
mod typing_pause;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, watch};
// The session's clock is tokio's, so that tests with paused time drive its timeouts.
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

pub use auth::{AuthMethod, AuthReply, ClientKex, OfferedKey};
pub use channel::ChannelSession;
pub use forward::{DirectTcpip, ForwardCapture};
pub use forward_egress::{GatewayDecision, GatewayForward, PendingForward};
pub use login_ready::BOX_LOGIN_WAIT;
pub use reload::ReloadReport;
pub use session_place::SessionPlace;
pub use slots::SessionSlots;
pub use standby::standby_spec;

use crate::admission::refusals::{RefusalLog, Summary};
use crate::admission::{Admission, DropReason, Limits, Ticket};
use crate::auth::{ConnectionAuthState, CredentialPolicy, FailureTiming};
use crate::capture::{CaptureLimits, FileStore, SessionFiles};
use crate::commands::Command;
use crate::config::Config;
use crate::events::{ConnectionContext, EventBuilder, EventBus, EventId};
use crate::ids::SessionId;
use crate::machines::{Machine, MachineRegistry};
use crate::record::{
    CommandRecord, EndReason, Journal, MetadataWriter, OpenSession, Replace, SessionMetadata,
};
use crate::sandbox::{Lease, Sandbox};

/// Sends to the client on one session channel. Implemented by the SSH adapter.
#[async_trait]
pub trait ClientChannel: Send + Sync {
    /// Sends stdout bytes (flow-controlled: waits for the client's window).
    async fn data(&self, bytes: Bytes) -> std::io::Result<()>;
    /// Sends stderr bytes.
    async fn stderr(&self, bytes: Bytes) -> std::io::Result<()>;
    /// Sends the exit status.
    async fn exit_status(&self, status: u32) -> std::io::Result<()>;
    /// Sends EOF.
    async fn eof(&self) -> std::io::Result<()>;
    /// Closes the channel.
    async fn close(&self) -> std::io::Result<()>;
}

/// A place for one more session channel on a connection (see `max_sessions`).
pub struct SessionReservation(CountedPlace);

/// Controls the whole SSH connection. Implemented by the SSH adapter.
pub trait ClientConnection: Send + Sync {
    /// Ends the connection (SSH disconnect with "by application", as sshd does when a
    /// session is terminated).
    fn disconnect(&self);
}

/// What every connection shares: configuration, policy, event bus, sandbox, limits.
pub struct SessionServices {
    /// The loaded configuration.
    pub config: Arc<Config>,
    /// Which logins succeed (replaced by a reload; see [`SessionServices::policy`]).
    policy: RwLock<Arc<CredentialPolicy>>,
    /// How long failed attempts take.
    pub timing: FailureTiming,
    /// Admission control before authentication.
    pub admission: Arc<Admission>,
    /// Where events go.
    pub events: EventBus,
    /// Where shells run.
    pub sandbox: Arc<dyn Sandbox>,
    /// Which container each returning source gets back.
    pub machines: Arc<MachineRegistry>,
    /// One permit per authenticated session (`server.max_concurrent_sessions`).
    pub session_slots: SessionSlots,
    /// Becomes true when Hermes shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Where captured files go, and the limits (None: capture is off).
    pub capture: Option<CaptureServices>,
    /// Logged-in sessions not closed yet, for the next start when Hermes is killed
    /// (None when recording is off: there is no metadata to close).
    journal: Option<Journal>,
    /// Refused connections not yet written out.
    refusals: Mutex<RefusalLog>,
    /// Connections whose end (final capture, release, last events) is still running.
    finalizing: TaskTracker,
    /// Lingering boxes' timers, and their last capture and stop.
    linger_timers: TaskTracker,
    /// Boxes running on after their source's last session.
    lingering: linger::Lingering,
    /// Writes metadata files, retrying those a full disk refused.
    pub metadata: Arc<MetadataWriter>,
    /// Which session each leased container serves (its traffic is theirs).
    pub box_owners: Arc<crate::boxnet::BoxOwners>,
    /// Where `direct-tcpip` channels go when `egress` is on (set once at start).
    forward_gateway: OnceLock<Arc<dyn crate::forward_gateway::ForwardGateway>>,
    /// Runs sessions through the box's own sshd (set once at start; unset: through
    /// the engine).
    box_sshd: OnceLock<Arc<dyn crate::box_sshd::BoxSshd>>,
}

/// The file store and the limits of `capture`.
pub struct CaptureServices {
    /// The content-addressed store, shared by every session.
    pub store: Arc<FileStore>,
    /// Per-session limits.
    pub limits: CaptureLimits,
}

impl SessionServices {
    /// Bundles the services; the session cap comes from the configuration.
    pub fn new(
        config: Arc<Config>,
        events: EventBus,
        sandbox: Arc<dyn Sandbox>,
        shutdown: watch::Receiver<bool>,
        capture: Option<CaptureServices>,
    ) -> Arc<Self> {
        Arc::new(SessionServices {
            policy: RwLock::new(Arc::new(CredentialPolicy::from_config(
                &config.authentication,
            ))),
            timing: FailureTiming::new(config.persona.auth_failure_delay_ms.get()),
            admission: Admission::new(Limits::from_config(&config.server)),
            session_slots: SessionSlots::new(config.server.max_concurrent_sessions),
            machines: MachineRegistry::load(&config.container_pool.reuse),
            journal: config
                .recording
                .enabled
                .then(|| Journal::new(&config.recording.output_dir)),
            refusals: Mutex::new(RefusalLog::new(config.server.refused_event_interval.get())),
            config,
            events,
            sandbox,
            shutdown,
            capture,
            finalizing: TaskTracker::new(),
            linger_timers: TaskTracker::new(),
            lingering: linger::Lingering::default(),
            metadata: Arc::new(MetadataWriter::default()),
            box_owners: Arc::default(),
            forward_gateway: OnceLock::new(),
            box_sshd: OnceLock::new(),
        })
    }

    /// Hands `direct-tcpip` channels to `gateway` from now on (egress on). Only the
    /// first call counts.
    pub fn set_forward_gateway(&self, gateway: Arc<dyn crate::forward_gateway::ForwardGateway>) {
        let _ = self.forward_gateway.set(gateway);
    }

    /// Runs sessions through the box's own sshd from now on. Only the first call
    /// counts.
    pub fn set_box_sshd(&self, sshd: Arc<dyn crate::box_sshd::BoxSshd>) {
        let _ = self.box_sshd.set(sshd);
    }

    /// Whether sessions run through the box's own sshd.
    pub fn uses_box_sshd(&self) -> bool {
        self.box_sshd.get().is_some()
    }

    /// The credential policy in force (a reload swaps it; a connection's next attempt
    /// uses the new one).
    pub fn policy(&self) -> Arc<CredentialPolicy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn recording_dir(&self) -> Option<PathBuf> {
        let recording = &self.config.recording;
        recording.enabled.then(|| recording.output_dir.clone())
    }

    /// Waits until every ended connection has finished its final capture, released
    /// its container and written its last events, or `timeout` passes; once Hermes
    /// is shutting down, also until every lingering box had its last capture and
    /// stopped. Returns how many were still running.
    pub async fn wait_finalized(&self, timeout: Duration) -> usize {
        self.finalizing.close();
        let lingering = *self.shutdown.borrow();
        if lingering {
            self.linger_timers.close();
        }
        let all = async {
            self.finalizing.wait().await;
            if lingering {
                self.linger_timers.wait().await;
            }
        };
        if tokio::time::timeout(timeout, all).await.is_err() {
            return self.finalizing.len()
                + if lingering {
                    self.linger_timers.len()
                } else {
                    0
                };
        }
        0
    }
}

/// Records a connection that admission control refused: it is counted into its
/// source's summary (see [`RefusalLog`]), written as one event per source and reason
/// per interval.
pub fn connection_dropped(
    services: &SessionServices,
    src: SocketAddr,
    dst: SocketAddr,
    reason: DropReason,
) {
    let src = SocketAddr::new(src.ip().to_canonical(), src.port());
    let full = services.refusals().record(
        src,
        dst,
        reason,
        tokio::time::Instant::now(),
        SystemTime::now(),
    );
    write_refusals(services, full);
    tracing::debug!(target: "hermes::admission", source_ip = %src.ip(), reason = reason.as_str(), "connection refused");
}

fn write_refusals(services: &SessionServices, summaries: Vec<Summary>) {
    for summary in summaries {
        let context = ConnectionContext {
            session: SessionId::random(),
            src: summary.src,
            dst: summary.dst,
        };
        let first_seen = crate::time::iso8601_micros(summary.first);
        let last_seen = crate::time::iso8601_micros(summary.last);
        services.events.emit(
            EventBuilder::connection(EventId::ConnectionRefused, &context)
                .field("reason", summary.reason.as_str())
                .field("count", summary.count)
                .message(format!(
                    "{} connection(s) from {} refused ({}) between {first_seen} and {last_seen}",
                    summary.count,
                    summary.src.ip(),
                    summary.reason.as_str()
                ))
                .field("first_seen", first_seen)
                .field("last_seen", last_seen),
        );
    }
}

impl SessionServices {
    fn refusals(&self) -> MutexGuard<'_, RefusalLog> {
        self.refusals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the refusal summaries whose interval has ended; with `all`, every one
    /// (at shutdown, so none is lost).
    pub fn write_refusals(&self, all: bool) {
        let summaries = {
            let mut log = self.refusals();
            if all {
                log.drain()
            } else {
                log.due(tokio::time::Instant::now())
            }
        };
        write_refusals(self, summaries);
    }
}

/// The state of a connection's container.
#[derive(Debug, Clone, PartialEq)]
enum LeaseState {
    /// Not asked for (not logged in yet).
    NotRequested,
    /// Being created or taken from the pool.
    Pending,
    /// Ready to run processes.
    Ready(Lease),
    /// None can be had: why, for the client message and metadata.
    Failed(EndReason),
    /// The session is over and its container given back (or never got): a channel
    /// starting now ends as one whose client closed.
    Released,
}

/// Mutable per-connection state, behind a mutex never held across an await.
struct ConnectionState {
    auth: ConnectionAuthState,
    /// Failures that count for `max_auth_tries` (sshd's rule: all but the first "none").
    counted_failures: u32,
    none_seen: bool,
    ticket: Option<Ticket>,
    metadata: SessionMetadata,
    permit: Option<OwnedSemaphorePermit>,
    /// The returning-source machine the container came from, when reuse is on.
    machine: Option<Arc<Machine>>,
    /// Files changed since then are this session's (the end of the session before
    /// it, when it took its box lingering); None: since the session began.
    files_since: Option<SystemTime>,
    /// The session that left the box lingering, when this one took it: it holds
    /// the box again should this session never use it.
    took_lingering: Option<linger::LastUse>,
    channels_opened: u32,
    finished: bool,
    /// When the metadata file was last rewritten for a change.
    metadata_written: Option<Instant>,
    /// The session has an open-session journal entry to remove when it is closed.
    journaled: bool,
}

/// Shortest time between two rewrites of a running session's metadata file.
const METADATA_REWRITE_GAP: Duration = Duration::from_secs(1);

/// One SSH connection, from TCP accept to close.
pub struct Connection {
    services: Arc<SessionServices>,
    context: ConnectionContext,
    started: Instant,
    state: Mutex<ConnectionState>,
    lease: watch::Sender<LeaseState>,
    /// Set once, when the session must end early; channels watch it.
    terminated: watch::Sender<Option<EndReason>>,
    /// The channels' output pumps: each holds a token until it has written its last
    /// words, so an early end can wait for them before it disconnects.
    pumps: TaskTracker,
    client: OnceLock<Arc<dyn ClientConnection>>,
    /// Client input queued for processes, all channels together (see `input`).
    input_backlog: Arc<AtomicUsize>,
    /// When the client last sent input, in ms since `started` (for `idle_timeout`).
    last_input_ms: AtomicU64,
    /// Session channels open (`persona.max_sessions`).
    sessions_open: Arc<AtomicU32>,
    forwards: forward::ForwardState,
    /// The session's directory for recordings and metadata (dated by its start).
    record_dir: Option<PathBuf>,
    /// What the session's capture passes have found.
    files: Mutex<SessionFiles>,
    /// One capture pass at a time (the start-of-session listing first).
    capture_lock: Arc<tokio::sync::Mutex<()>>,
    /// A pass is due shortly.
    capture_scheduled: AtomicBool,
    /// The metadata file's versions: the last taken (under the state's lock), and the
    /// one on disk (held while writing), so that a rewrite finishing late never
    /// replaces a newer one.
    metadata_version: AtomicU64,
    metadata_on_disk: Arc<Mutex<u64>>,
    /// A rewrite of the running session's metadata is waiting for its moment.
    metadata_scheduled: AtomicBool,
    /// This connection, for the tasks it schedules itself (the metadata rewrite).
    me: Weak<Connection>,
    /// The session's first process has started.
    process_started: watch::Sender<bool>,
    /// The session's login to its box's own sshd.
    box_slot: tokio::sync::Mutex<sshd_path::BoxSlot>,
    /// A connection to the box's sshd made while the client logs in.
    box_ahead: Mutex<sshd_path::Ahead>,
    /// The login to the box's sshd has settled (an accepted password waits for it).
    login_ready: login_ready::LoginReady,
}

/// One of at most `max` places counted in a shared counter (session channels,
/// captured forwards), given back when dropped.
pub(crate) struct CountedPlace(Arc<AtomicU32>);

impl CountedPlace {
    /// Takes a place, or None when `max` are taken.
    pub(crate) fn take(counter: &Arc<AtomicU32>, max: u32) -> Option<CountedPlace> {
        let taken = counter.fetch_add(1, Ordering::AcqRel);
        let place = CountedPlace(Arc::clone(counter));
        (taken < max).then_some(place)
    }
}

impl Drop for CountedPlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Connection {
    /// Registers a new TCP connection and emits `cowrie.session.connect`.
    pub fn accept(
        services: Arc<SessionServices>,
        src: SocketAddr,
        dst: SocketAddr,
        ticket: Option<Ticket>,
    ) -> Arc<Self> {
        let context = ConnectionContext {
            session: SessionId::random(),
            src,
            dst,
        };
        let src_ip = src.ip().to_canonical().to_string();
        let dst_ip = dst.ip().to_canonical().to_string();
        services.events.emit(
            EventBuilder::connection(EventId::SessionConnect, &context).message(format!(
                "New connection: {src_ip}:{} ({dst_ip}:{}) [session: {}]",
                src.port(),
                dst.port(),
                context.session
            )),
        );
        tracing::info!(target: "hermes::session", session_id = %context.session, source_ip = %src_ip, src_port = src.port(), "connection accepted");
        let start_time = SystemTime::now();
        let record_dir = services
            .recording_dir()
            .map(|dir| dir.join(crate::record::dated_dir(start_time)));
        let metadata = SessionMetadata {
            session: context.session.to_string(),
            src_ip,
            src_port: src.port(),
            dst_ip,
            dst_port: dst.port(),
            client_version: None,
            username: None,
            auth_attempts: Vec::new(),
            start_time,
            end_time: None,
            container_id: None,
            commands: Vec::new(),
            commands_omitted: 0,
            files: Vec::new(),
            exit_status: None,
            end_reason: EndReason::Running,
            recordings: Vec::new(),
            terminal: None,
            recording_truncated: false,
            recording_error: None,
        };
        Arc::new_cyclic(|me| Connection {
            me: me.clone(),
            services,
            context,
            started: Instant::now(),
            state: Mutex::new(ConnectionState {
                auth: ConnectionAuthState::default(),
                counted_failures: 0,
                none_seen: false,
                ticket,
                metadata,
                permit: None,
                machine: None,
                files_since: None,
                took_lingering: None,
                channels_opened: 0,
                finished: false,
                metadata_written: None,
                journaled: false,
            }),
            lease: watch::channel(LeaseState::NotRequested).0,
            terminated: watch::channel(None).0,
            pumps: TaskTracker::new(),
            client: OnceLock::new(),
            input_backlog: Arc::new(AtomicUsize::new(0)),
            last_input_ms: AtomicU64::new(0),
            sessions_open: Arc::new(AtomicU32::new(0)),
            forwards: forward::ForwardState::default(),
            record_dir,
            files: Mutex::new(SessionFiles::default()),
            capture_lock: Arc::new(tokio::sync::Mutex::new(())),
            capture_scheduled: AtomicBool::new(false),
            metadata_version: AtomicU64::new(0),
            metadata_on_disk: Arc::new(Mutex::new(0)),
            metadata_scheduled: AtomicBool::new(false),
            process_started: watch::channel(false).0,
            box_slot: tokio::sync::Mutex::default(),
            box_ahead: Mutex::new(sshd_path::Ahead::NotTried),
            login_ready: login_ready::LoginReady::default(),
        })
    }

    /// A command line of channel `channel`: logged as `cowrie.command.input`, kept in
    /// the metadata, read for the URLs it fetches, and (`then_capture`: a line of an
    /// interactive or scripted shell) followed by a capture pass. An `exec` request is
    /// not: its channel's end comes soon, and the pass then is the one that counts.
    pub(super) fn command(self: &Arc<Self>, channel: u32, command: Command, then_capture: bool) {
        let mut event = EventBuilder::connection(EventId::CommandInput, &self.context)
            .field("input", command.input.clone());
        let message = match &command.realm {
            Some(realm) => {
                event = event.field("realm", realm.clone());
                format!("CMD ({realm}): {}", command.input)
            }
            None => format!("CMD: {}", command.input),
        };
        if command.approximate {
            event = event.field("approximate", true);
        }
        self.services.events.emit(event.message(message));
        tracing::info!(target: "hermes::session", session_id = %self.context.session, command = %crate::escape::escape_untrusted(&command.input), realm = %command.realm.as_deref().map(crate::escape::escape_untrusted).unwrap_or_default(), "command");
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .command(&command.input);
        {
            let mut state = self.state();
            let metadata = &mut state.metadata;
            if metadata.commands.len() < crate::record::MAX_COMMANDS {
                metadata.commands.push(CommandRecord {
                    time: crate::time::now_iso8601(),
                    channel,
                    input: crate::events::cut_with_length(command.input, MAX_COMMAND_BYTES),
                    realm: command.realm,
                    approximate: command.approximate,
                });
            } else {
                metadata.commands_omitted += 1;
            }
        }
        self.metadata_changed();
        if then_capture {
            self.schedule_capture();
        }
    }

    /// Rewrites the metadata file after a change worth keeping if Hermes dies. While
    /// the session runs, the rewrite is one scheduled task: it waits out
    /// [`METADATA_REWRITE_GAP`] since the last one (a bot's thousand commands are not
    /// a thousand rewrites) and then a pause in the session's input, and writes what
    /// the metadata holds by then on a blocking thread. A command's Enter must not
    /// wait behind a file being replaced for every session that pressed Enter at the
    /// same moment (ext4 writes a renamed-over file's data out at the rename). The
    /// end is written at once.
    fn metadata_changed(&self) {
        let finished = {
            let state = self.state();
            if state.metadata.username.is_none() {
                return;
            }
            state.finished
        };
        let runtime = tokio::runtime::Handle::try_current();
        let (Some(conn), Ok(runtime), false) = (self.me.upgrade(), runtime, finished) else {
            self.state().metadata_written = Some(Instant::now());
            if let Some(write) = self.metadata_write(Replace::Durable) {
                write();
            }
            return;
        };
        if self.metadata_scheduled.swap(true, Ordering::AcqRel) {
            // The one on its way takes the metadata as it is when it writes.
            return;
        }
        runtime.spawn(async move {
            let last = conn.state().metadata_written;
            if let Some(last) = last {
                tokio::time::sleep_until(last + METADATA_REWRITE_GAP).await;
            }
            conn.until_typing_pauses().await;
            conn.metadata_scheduled.store(false, Ordering::Release);
            if conn.state().finished {
                // The end's own rewrite has it all.
                return;
            }
            conn.state().metadata_written = Some(Instant::now());
            // The next rewrite, or the end's, soon replaces this one.
            if let Some(write) = conn.metadata_write(Replace::Interim) {
                let _ = tokio::task::spawn_blocking(write).await;
            }
        });
    }

    /// Client input queued on its way into containers, in bytes, all channels
    /// together. The SSH adapter stops widening the client's window while it is high.
    pub fn input_backlog(&self) -> usize {
        self.input_backlog.load(Ordering::Acquire)
    }

    /// The client sent input: the session is not idle.
    fn input_seen(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_input_ms.store(now, Ordering::Release);
    }

    /// Returns once the session's input has paused (at most a few seconds).
    async fn until_typing_pauses(&self) {
        typing_pause::until_input_pauses(|| self.last_input(), typing_pause::MAX_POSTPONE).await;
    }

    /// When the session last saw input.
    fn last_input(&self) -> Instant {
        self.started + Duration::from_millis(self.last_input_ms.load(Ordering::Acquire))
    }

    /// The client stopped answering keepalives; the SSH side has dropped it.
    pub fn client_not_responding(&self) {
        let mut state = self.state();
        if state.metadata.end_reason == EndReason::Running {
            state.metadata.end_reason = EndReason::ClientNotResponding;
        }
        drop(state);
        tracing::info!(target: "hermes::session", session_id = %self.context.session, "client not responding to keepalives; dropped");
    }

    /// Logs a channel open that was refused, and why.
    pub fn channel_refused(&self, channel_type: &str, reason: &str) {
        self.services.events.emit(
            EventBuilder::connection(EventId::ChannelRefused, &self.context)
                .field("channel_type", channel_type)
                .field("reason", reason)
                .message(format!("{channel_type} channel refused: {reason}")),
        );
    }

    /// The session id.
    pub fn session_id(&self) -> SessionId {
        self.context.session
    }

    /// The connection's event context.
    pub fn context(&self) -> &ConnectionContext {
        &self.context
    }

    /// Lets the core end the connection (timeouts, shutdown).
    pub fn attach_client(&self, client: Arc<dyn ClientConnection>) {
        let _ = self.client.set(client);
    }

    fn state(&self) -> MutexGuard<'_, ConnectionState> {
        // A panic while holding the lock cannot leave the state half-updated in a way
        // that matters more than losing the session; keep going with what is there.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The client's identification string arrived.
    pub fn client_version(&self, version: &str) {
        self.services.events.emit(
            EventBuilder::connection(EventId::ClientVersion, &self.context)
                .field("version", version)
                .message(format!("Remote SSH version: {version}")),
        );
        self.state().metadata.client_version = Some(version.to_owned());
    }

    /// Login succeeded: take a session permit, start getting a container, arm timeouts.
    fn logged_in(self: &Arc<Self>, username: &str) {
        // Dropped wherever getting the box and logging in to it ends (here too, at
        // capacity).
        let settles = self.login_ready.settles();
        self.input_seen();
        let permit = self.services.session_slots.try_take();
        let at_capacity = permit.is_none();
        {
            let mut state = self.state();
            state.metadata.username = Some(username.to_owned());
            state.permit = permit;
            if let Some(ticket) = &state.ticket {
                ticket.authenticated();
            }
        }
        self.write_metadata();
        self.journal_opened();
        if at_capacity {
            tracing::warn!(target: "hermes::session", session_id = %self.context.session, "max_concurrent_sessions reached; session will be refused");
            self.emit_session_error(
                "capacity",
                &format!(
                    "server.max_concurrent_sessions ({}) reached",
                    self.services.session_slots.max()
                ),
            );
            self.lease
                .send_replace(LeaseState::Failed(EndReason::Capacity));
            return;
        }
        self.lease.send_replace(LeaseState::Pending);
        let conn = Arc::clone(self);
        tokio::spawn(async move { conn.acquire_lease(settles).await });
        let conn = Arc::clone(self);
        tokio::spawn(async move { conn.watch_limits().await });
    }

    /// Ends the session early: open channels print the stage's message, then the
    /// connection is closed.
    pub async fn terminate(&self, reason: EndReason) {
        if self.terminated.borrow().is_some() || self.state().finished {
            return;
        }
        tracing::info!(target: "hermes::session", session_id = %self.context.session, reason = reason.as_str(), "terminating session");
        self.state().metadata.end_reason = reason;
        self.terminated.send_replace(Some(reason));
        // The channels write their message before the disconnect; a client that does
        // not read gets [`TELL_WAIT`], not more.
        self.pumps.close();
        let _ = tokio::time::timeout(TELL_WAIT, self.pumps.wait()).await;
        if let Some(client) = self.client.get() {
            client.disconnect();
        }
    }

    /// Waits until the container is ready, or says why there will be none.
    async fn wait_for_lease(&self) -> Result<Lease, EndReason> {
        let mut rx = self.lease.subscribe();
        let state = rx
            .wait_for(|s| {
                matches!(
                    s,
                    LeaseState::Ready(_) | LeaseState::Failed(_) | LeaseState::Released
                )
            })
            .await
            .map(|s| s.clone());
        lease::outcome(state.ok())
    }

    /// Takes a place for a session channel, or None past `persona.max_sessions` (the
    /// channel is then refused as sshd refuses it).
    pub fn reserve_session(&self) -> Option<SessionReservation> {
        let max = self.services.config.persona.max_sessions;
        let Some(place) = CountedPlace::take(&self.sessions_open, max) else {
            tracing::info!(target: "hermes::session", session_id = %self.context.session, max, "session channel refused: max_sessions reached");
            self.channel_refused("session", &format!("persona.max_sessions ({max}) reached"));
            return None;
        };
        Some(SessionReservation(place))
    }

    /// Opens a session channel in a place taken with [`Connection::reserve_session`].
    pub fn open_channel(
        self: &Arc<Self>,
        reservation: SessionReservation,
        client: Arc<dyn ClientChannel>,
    ) -> ChannelSession {
        let index = {
            let mut state = self.state();
            let index = state.channels_opened;
            state.channels_opened += 1;
            index
        };
        let place = session_place::HeldPlace::new(reservation.0);
        let client = Arc::new(session_place::PlaceReleasingClient {
            inner: client,
            place: Arc::clone(&place),
        });
        ChannelSession::new(Arc::clone(self), client, index, place)
    }

    /// What the client is told when the session ends for `reason`.
    fn end_message(&self, reason: EndReason) -> String {
        messages::end_message(
            reason,
            &self.username(),
            &self.services.config.persona.hostname,
        )
    }

    /// Emits an event about this connection: `build` adds its fields and message.
    fn emit(&self, id: EventId, build: impl FnOnce(EventBuilder) -> EventBuilder) {
        self.services
            .events
            .emit(build(EventBuilder::connection(id, &self.context)));
    }

    /// The name the client logged in with (empty before login).
    fn username(&self) -> String {
        self.state().metadata.username.clone().unwrap_or_default()
    }

    /// Updates the session's metadata (written on its next save).
    fn update_metadata(&self, update: impl FnOnce(&mut SessionMetadata)) {
        update(&mut self.state().metadata);
    }

    fn emit_session_error(&self, stage: &str, error: &str) {
        self.services.events.emit(
            EventBuilder::connection(EventId::SessionError, &self.context)
                .field("stage", stage)
                .field("error", error)
                .message(format!("Session error during {stage}: {error}")),
        );
    }

    fn metadata_path(&self) -> Option<PathBuf> {
        self.record_dir
            .as_ref()
            .map(|dir| dir.join(format!("{}.json", self.context.session)))
    }

    fn write_metadata(&self) {
        if let Some(write) = self.metadata_write(Replace::Durable) {
            write();
        }
    }

    /// The metadata as it is now, and what writes it unless a newer version has been
    /// written meanwhile.
    fn metadata_write(&self, how: Replace) -> Option<impl FnOnce() + Send + 'static> {
        let path = self.metadata_path()?;
        let (mut metadata, version) = {
            let state = self.state();
            let version = self.metadata_version.fetch_add(1, Ordering::AcqRel) + 1;
            (state.metadata.clone(), version)
        };
        metadata.files = self
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .captured
            .clone();
        let on_disk = Arc::clone(&self.metadata_on_disk);
        let writer = Arc::clone(&self.services.metadata);
        let fields = self.services.config.recording.capture_metadata.clone();
        let session = self.context.session;
        Some(move || {
            let mut written_version = on_disk.lock().unwrap_or_else(|p| p.into_inner());
            if *written_version >= version {
                return;
            }
            *written_version = version;
            let written = metadata
                .to_bytes(&fields)
                .and_then(|text| writer.write(&path, text, how));
            if let Err(error) = written {
                tracing::error!(target: "hermes::record", session_id = %session, path = %path.display(), %error, "cannot write session metadata; retried until it is written");
            }
        })
    }

    /// Records the session in the open-session journal (after its first metadata file:
    /// the next start closes what the journal lists).
    fn journal_opened(&self) {
        let Some(journal) = &self.services.journal else {
            return;
        };
        let open = {
            let state = self.state();
            let metadata = &state.metadata;
            OpenSession {
                src_ip: metadata.src_ip.clone(),
                src_port: metadata.src_port,
                dst_ip: metadata.dst_ip.clone(),
                dst_port: metadata.dst_port,
                start_us: metadata
                    .start_time
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_micros() as u64)
                    .unwrap_or(0),
                metadata: crate::record::dated_dir(metadata.start_time)
                    .join(format!("{}.json", self.context.session)),
            }
        };
        match journal.opened(self.context.session, &open) {
            Ok(()) => self.state().journaled = true,
            Err(error) => {
                tracing::error!(target: "hermes::record", session_id = %self.context.session, %error, "cannot record the session as open")
            }
        }
    }

    /// The session is closed: its journal entry goes.
    fn journal_closed(&self) {
        let journaled = std::mem::take(&mut self.state().journaled);
        if let (true, Some(journal)) = (journaled, &self.services.journal)
            && let Err(error) = journal.closed(self.context.session)
        {
            tracing::error!(target: "hermes::record", session_id = %self.context.session, %error, "cannot remove the session's open-session journal entry");
        }
    }

    /// The SSH connection is gone (for whatever reason): in the background, the final
    /// capture pass, the container's release, the final metadata and
    /// `cowrie.session.closed`. Idempotent.
    pub fn finish(self: &Arc<Self>) {
        {
            let mut state = self.state();
            if state.finished {
                return;
            }
            state.finished = true;
            state.permit = None;
            state.ticket = None;
            state.metadata.end_time = Some(SystemTime::now());
            if state.metadata.end_reason == EndReason::Running {
                state.metadata.end_reason = if state.metadata.exit_status.is_some() {
                    EndReason::Exited
                } else {
                    EndReason::ClientClosed
                };
            }
        }
        // Wake anything still waiting on this connection.
        if self.terminated.borrow().is_none() {
            self.terminated.send_replace(Some(EndReason::ClientClosed));
        }
        let elapsed = self.started.elapsed();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Only when the runtime itself is gone: nothing can be written any more.
            tracing::error!(target: "hermes::session", session_id = %self.context.session, "connection ended outside the runtime; its end is not recorded");
            return;
        };
        let conn = Arc::clone(self);
        // Detached, and tracked: a connection task cut at shutdown must not cut this
        // short, and shutdown waits for it.
        self.services.finalizing.spawn_on(async move {
            conn.release_lease().await;
            conn.metadata_changed();
            let duration_ms = elapsed.as_millis() as u64;
            conn.services.events.emit(
                EventBuilder::connection(EventId::SessionClosed, &conn.context)
                    .field("duration_ms", duration_ms)
                    .field(
                        "duration",
                        (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
                    )
                    .message(format!("Connection lost after {duration_ms} milliseconds")),
            );
            conn.journal_closed();
            tracing::info!(target: "hermes::session", session_id = %conn.context.session, duration_ms, "connection closed");
        }, &runtime);
    }

    /// A guard that [`finish`](Self::finish)es the connection when dropped: made right
    /// after accept, it ends the connection on every way out of its task, an abort at
    /// shutdown included.
    pub fn finish_on_drop(self: &Arc<Self>) -> FinishOnDrop {
        FinishOnDrop(Arc::clone(self))
    }
}

/// Finishes its connection when dropped (see [`Connection::finish_on_drop`]).
pub struct FinishOnDrop(Arc<Connection>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// How long an early end waits for its channels to write their message.
const TELL_WAIT: Duration = Duration::from_secs(2);

/// Bytes of one command line the metadata keeps (the recording keeps all of it).
const MAX_COMMAND_BYTES: usize = 64 * 1024;
