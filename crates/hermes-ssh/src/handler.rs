//! The russh [`Handler`]: protocol callbacks turned into calls on the core's
//! [`Connection`] and [`ChannelSession`](hermes_core::session::ChannelSession).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use russh::keys::{HashAlg, PublicKey};
use russh::server::{
    Auth, ChannelOpenHandle, Handler, Msg, PublicKeyOffer, Response, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet};
use tokio::task::JoinSet;

use hermes_core::escape::escape_untrusted;
use hermes_core::persona;
use hermes_core::session::{
    AuthMethod, AuthReply, Connection, DirectTcpip, GatewayDecision, OfferedKey, SessionPlace,
};

use crate::channel::{RusshClientChannel, run_capture, run_channel};
use crate::stream::StreamControl;

/// The largest packet accepted on a channel: sshd's 32 KiB.
pub(crate) const MAX_PACKET: u32 = 32 * 1024;

/// The window granted to the client on each channel: sshd's 64 packets.
pub(crate) const WINDOW_SIZE: u32 = 64 * MAX_PACKET;

/// Above this much client input queued for containers (the whole connection), the
/// client's windows are no longer widened: it may send what it was granted, then
/// waits, as sshd makes it wait when a child does not read. Twice a channel's window,
/// so that one transfer at full speed never trips it (at 1 MiB it did, and an upload
/// crawled on two-byte window grants).
const INPUT_BACKLOG_LIMIT: usize = 2 * WINDOW_SIZE as usize;

/// sshd's answer to a channel it cannot open: reason 2, "open failed" (session past
/// MaxSessions, channel types it does not serve).
fn open_failed() -> ChannelOpenFailure {
    ChannelOpenFailure::Other {
        code: 2,
        reason: "open failed".to_owned(),
    }
}

/// State the handler shares with the connection task.
pub(crate) struct ConnectionShared {
    /// Set once the client has logged in.
    pub(crate) authenticated: AtomicBool,
    /// One task per session channel; awaited before the connection is finished so
    /// recordings close before `session.closed` is emitted.
    pub(crate) channels: Mutex<JoinSet<()>>,
}

impl ConnectionShared {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(ConnectionShared {
            authenticated: AtomicBool::new(false),
            channels: Mutex::new(JoinSet::new()),
        })
    }
}

/// The per-connection handler.
pub(crate) struct SshHandler {
    conn: Arc<Connection>,
    shared: Arc<ConnectionShared>,
    control: Arc<StreamControl>,
    methods: MethodSet,
    /// The open session channels' places, given back when the client closes one
    /// (before its next message is read, as sshd frees a closed session).
    session_places: HashMap<ChannelId, SessionPlace>,
}

fn offered_key(key: &PublicKey) -> OfferedKey {
    let key_type = key.algorithm().to_string();
    let openssh = key
        .to_openssh()
        .map(|text| text.trim_end().to_owned())
        .unwrap_or_else(|_| key_type.clone());
    OfferedKey {
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        key_type,
        openssh,
    }
}

impl SshHandler {
    pub(crate) fn new(
        conn: Arc<Connection>,
        shared: Arc<ConnectionShared>,
        control: Arc<StreamControl>,
        keyboard_interactive: bool,
    ) -> Self {
        // Debian's packaged sshd_config offers publickey,password; keyboard-interactive
        // only when the persona turns it on.
        let mut kinds = vec![MethodKind::PublicKey, MethodKind::Password];
        if keyboard_interactive {
            kinds.push(MethodKind::KeyboardInteractive);
        }
        SshHandler {
            conn,
            shared,
            control,
            methods: MethodSet::from(&kinds[..]),
            session_places: HashMap::new(),
        }
    }

    /// A rejection that keeps advertising the persona's methods, so clients keep trying.
    fn reject(&self) -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(self.methods.clone()),
            partial_success: false,
        }
    }

    /// Turns the core's answer into russh's; at the last try, the client's next packet
    /// is held so it can be answered with sshd's disconnect instead of a failure.
    fn answer(&self, reply: AuthReply) -> Auth {
        if reply.accepted {
            return Auth::Accept;
        }
        if reply.last_try {
            self.control.close_gate();
        }
        self.reject()
    }

    async fn password(&mut self, method: AuthMethod, user: &str, password: &str) -> Auth {
        let reply = self.conn.password_attempt(method, user, password).await;
        self.answer(reply)
    }
}

impl Handler for SshHandler {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        let reply = self.conn.auth_none(user).await;
        Ok(self.answer(reply))
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(self.password(AuthMethod::Password, user, password).await)
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Logged always; refused unless the policy accepts keys, so bots get to the
        // password prompt as on a server whose authorized_keys do not know them.
        let reply = self
            .conn
            .pubkey_offer(user, &offered_key(offer.public_key))
            .await;
        Ok(self.answer(reply))
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.conn.pubkey_login(user, &offered_key(key.public_key)) {
            Ok(Auth::Accept)
        } else {
            Ok(self.reject())
        }
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        if !self.methods.contains(&MethodKind::KeyboardInteractive) {
            return Ok(self.reject());
        }
        let Some(mut response) = response else {
            // PAM's single prompt, as sshd with KbdInteractiveAuthentication yes asks.
            return Ok(Auth::Partial {
                name: Cow::Borrowed(""),
                instructions: Cow::Borrowed(""),
                prompts: Cow::Owned(vec![(Cow::Borrowed("Password: "), false)]),
            });
        };
        let answer = response
            .next()
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        match answer {
            Some(password) => Ok(self
                .password(AuthMethod::KeyboardInteractive, user, &password)
                .await),
            None => Ok(self.reject()),
        }
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        self.shared.authenticated.store(true, Ordering::Release);
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(reservation) = self.conn.reserve_session() else {
            reply.reject(open_failed()).await;
            return Ok(());
        };
        reply.accept().await;
        let id = channel.id();
        let (read, write) = channel.split();
        let (client, closed) = RusshClientChannel::new(write);
        let session = self.conn.open_channel(reservation, Arc::new(client));
        // Channels that ended on Hermes's side are never closed here (russh forgets
        // them): their entries go once their state has.
        self.session_places.retain(|_, place| place.is_live());
        self.session_places.insert(id, session.place());
        self.spawn_channel_task(run_channel(read, closed, session));
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(place) = self.session_places.remove(&channel) {
            place.release();
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Nothing is connected anywhere but through the egress gateway.
        match self.conn.direct_tcpip(
            host_to_connect,
            port_to_connect,
            originator_address,
            originator_port,
        ) {
            DirectTcpip::Refuse { description } => {
                reply
                    .reject(ChannelOpenFailure::Other {
                        code: 2,
                        reason: description.to_owned(),
                    })
                    .await;
            }
            DirectTcpip::Capture(capture) => {
                reply.accept().await;
                self.spawn_channel_task(run_capture(channel, capture));
            }
            // The answer waits for the gateway (a name lookup), as sshd's waits for
            // its connect; the connection's other channels go on meanwhile.
            DirectTcpip::Gateway(pending) => self.spawn_channel_task(async move {
                match pending.decide().await {
                    GatewayDecision::Refuse { description } => {
                        reply
                            .reject(ChannelOpenFailure::Other {
                                code: 2,
                                reason: description.to_owned(),
                            })
                            .await;
                    }
                    GatewayDecision::Accept(forward) => {
                        reply.accept().await;
                        // The channel closes when its stream is dropped.
                        forward.run(channel.into_stream()).await;
                    }
                }
            }),
        }
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // sshd connects to the path and fails at once for a socket that does not
        // exist: "open failed". Logged like any refused channel.
        self.conn.channel_refused(
            "direct-streamlocal@openssh.com",
            &format!("no socket at {}", escape_untrusted(socket_path)),
        );
        reply.reject(open_failed()).await;
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // A client does not open X11 channels to a server; sshd answers "open failed".
        reply.reject(open_failed()).await;
        Ok(())
    }

    async fn channel_open_forwarded_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.reject(open_failed()).await;
        Ok(())
    }

    fn adjust_window(&mut self, _channel: ChannelId, _current: u32) -> u32 {
        // russh widens a window as data arrives, not as it is consumed. While input
        // piles up in front of containers, the target shrinks to two bytes: russh tops
        // a window up only once it falls below half the target, so the client spends
        // what it holds and then gets two bytes a packet, until a packet arrives after
        // the backlog has drained and the full window comes back.
        if self.conn.input_backlog() > INPUT_BACKLOG_LIMIT {
            2
        } else {
            WINDOW_SIZE
        }
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        match self.conn.remote_forward(address, *port) {
            Some(bound) => {
                *port = bound;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self.conn.cancel_remote_forward(address, port))
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // AllowAgentForwarding yes; the channel records it (ChannelMsg::AgentForward).
        Ok(true)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if persona::accepts_env(variable_name) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Debian's sshd_config names only sftp; sshd answers others with a failure.
        if persona::subsystem_command(name).is_some() {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Debian's sshd_config: X11Forwarding yes (and xauth is installed). The
        // channel records it (ChannelMsg::RequestX11).
        session.channel_success(channel)
    }
}

impl SshHandler {
    /// Runs a channel's task; the connection waits for them all before it closes, so
    /// recordings and captures end before `session.closed`.
    fn spawn_channel_task(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut channels = self
            .shared
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        channels.spawn(task);
    }
}
