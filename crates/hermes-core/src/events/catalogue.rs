//! The one list of event ids Hermes emits, with the fields each carries.
//!
//! Cowrie ids keep Cowrie 3.x's names and fields so existing pipelines ingest them;
//! Hermes's own ids live under `hermes.`. Every emitted event is checked against this
//! table in tests (see [`EventId::check`]).

/// Fields on every event.
pub const COMMON_FIELDS: &[&str] = &["eventid", "timestamp", "sensor", "message"];

/// Fields on every event that belongs to a connection.
pub const CONNECTION_FIELDS: &[&str] = &[
    "session", "src_ip", "src_port", "dst_ip", "dst_port", "protocol",
];

macro_rules! catalogue {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, connection: $conn:literal,
        fields: [$($field:literal),* $(,)?] $(, optional: [$($opt:literal),* $(,)?])?; )*) => {
        /// An event id.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventId {
            $( $(#[$doc])* $variant, )*
        }

        impl EventId {
            /// Every id, in catalogue order.
            pub const ALL: &'static [EventId] = &[$(EventId::$variant),*];

            /// The id as written in the `eventid` field.
            pub const fn as_str(self) -> &'static str {
                match self { $(EventId::$variant => $name,)* }
            }

            /// Fields this event always carries beyond the common (and connection) ones.
            pub const fn fields(self) -> &'static [&'static str] {
                match self { $(EventId::$variant => &[$($field),*],)* }
            }

            /// Fields this event carries in some cases (e.g. `password` only for
            /// password logins).
            pub const fn optional_fields(self) -> &'static [&'static str] {
                match self { $(EventId::$variant => &[$($($opt),*)?],)* }
            }

            /// Whether the event belongs to a connection (and so carries `session`,
            /// `src_ip` and the other connection fields).
            pub const fn is_connection_event(self) -> bool {
                match self { $(EventId::$variant => $conn,)* }
            }
        }
    };
}

catalogue! {
    /// A TCP connection was accepted.
    SessionConnect = "cowrie.session.connect", connection: true, fields: [];
    /// The client's identification string arrived.
    ClientVersion = "cowrie.client.version", connection: true, fields: ["version"];
    /// The client's key exchange offer (from its plaintext KEXINIT), with its HASSH.
    ClientKex = "cowrie.client.kex", connection: true,
        fields: ["hassh", "hasshAlgorithms", "kexAlgs", "keyAlgs", "encCS", "macCS", "compCS", "langCS"];
    /// The client offered a public key.
    ClientFingerprint = "cowrie.client.fingerprint", connection: true,
        fields: ["username", "fingerprint", "key", "type"];
    /// An authentication attempt was accepted: `password` for password and
    /// keyboard-interactive logins, `fingerprint`, `key` and `type` for public keys.
    LoginSuccess = "cowrie.login.success", connection: true, fields: ["username"],
        optional: ["password", "fingerprint", "key", "type"];
    /// An authentication attempt was refused (same fields as a success).
    LoginFailed = "cowrie.login.failed", connection: true, fields: ["username"],
        optional: ["password", "fingerprint", "key", "type"];
    /// A terminal was requested or resized.
    ClientSize = "cowrie.client.size", connection: true, fields: ["width", "height"];
    /// The client sent an `env` request (accepted or not).
    ClientVar = "cowrie.client.var", connection: true, fields: ["name", "value", "accepted"];
    /// The client asked to run a command (`exec`).
    CommandInput = "cowrie.command.input", connection: true, fields: ["input"];
    /// A `direct-tcpip` channel was requested (ssh -L, -D): the destination the client
    /// asked for (`dst_ip`, `dst_port`: as sent, a name or an address) and the
    /// originator it claims. Never connected anywhere.
    DirectTcpipRequest = "cowrie.direct-tcpip.request", connection: true,
        fields: ["dst_ip", "dst_port", "orig_ip", "orig_port", "accepted"];
    /// Data the client sent into a captured `direct-tcpip` channel (`data` escaped:
    /// printable ASCII as is, other bytes as \xNN; `id` the channel).
    DirectTcpipData = "cowrie.direct-tcpip.data", connection: true,
        fields: ["dst_ip", "dst_port", "data", "id"];
    /// A session recording was closed.
    LogClosed = "cowrie.log.closed", connection: true, fields: ["ttylog", "size", "duration_ms", "duration"];
    /// The connection closed.
    SessionClosed = "cowrie.session.closed", connection: true, fields: ["duration_ms", "duration"];
    /// The connection was refused before the SSH banner by an admission rule
    /// (`max_startups`, per-source or global caps).
    ConnectionDrop = "hermes.connection.drop", connection: true, fields: ["reason"];
    /// The client's identification line was not SSH-2.0; it got sshd's answer.
    ClientBadVersion = "hermes.client.bad_version", connection: true, fields: ["version", "reply"];
    /// The connection reached `max_auth_tries`; its next attempt was answered with
    /// sshd's disconnect ("Too many authentication failures").
    AuthMaxTries = "hermes.auth.max_tries", connection: true, fields: ["failures"];
    /// The login grace time ran out before authentication.
    LoginGraceTimeout = "hermes.login.grace_timeout", connection: true, fields: ["seconds"];
    /// A container was handed to a session.
    ContainerAllocate = "hermes.container.allocate", connection: true, fields: ["container_id", "source"];
    /// A session's container was released (stopped and kept for forensics).
    ContainerRelease = "hermes.container.release", connection: true, fields: ["container_id"];
    /// A session could not get a container or a shell; it was told and closed.
    SessionError = "hermes.session.error", connection: true, fields: ["stage", "error"];
    /// A channel was refused: `session` past `persona.max_sessions`, `direct-tcpip`
    /// past the capture limit.
    ChannelRefused = "hermes.channel.refused", connection: true, fields: ["channel_type", "reason"];
    /// A subsystem was requested (`sftp` runs the container's sftp-server; others are
    /// refused as sshd refuses them).
    Subsystem = "hermes.session.subsystem", connection: true, fields: ["name", "accepted"];
    /// The client sent a signal for the channel's process; `delivered` says whether it
    /// reached it.
    Signal = "hermes.session.signal", connection: true, fields: ["signal", "delivered"];
    /// X11 forwarding was requested (accepted as Debian's sshd_config does; no display
    /// is ever connected).
    X11Request = "hermes.forward.x11", connection: true,
        fields: ["auth_protocol", "screen", "single_connection", "accepted"];
    /// Agent forwarding was requested (accepted as Debian's sshd_config does; the agent
    /// is never used).
    AgentRequest = "hermes.forward.agent", connection: true, fields: ["accepted"];
    /// Remote forwarding (ssh -R) was requested; nothing ever listens.
    RemoteForward = "hermes.forward.remote", connection: true,
        fields: ["address", "port", "accepted"], optional: ["allocated_port"];
    /// A stopped container was removed by the retention rules.
    ContainerRemove = "hermes.container.remove", connection: false, fields: ["container_id", "reason"];
}

impl EventId {
    /// Checks that `event` (a JSON object) has exactly the fields this id promises:
    /// the common ones, the connection ones for connection events, its own, nothing else.
    pub fn check(self, event: &serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
        let mut expected: Vec<&str> = COMMON_FIELDS.to_vec();
        if self.is_connection_event() {
            expected.extend_from_slice(CONNECTION_FIELDS);
        }
        expected.extend_from_slice(self.fields());
        for field in &expected {
            if !event.contains_key(*field) {
                return Err(format!("{} lacks `{field}`", self.as_str()));
            }
        }
        for key in event.keys() {
            if !expected.contains(&key.as_str()) && !self.optional_fields().contains(&key.as_str())
            {
                return Err(format!("{} has unexpected `{key}`", self.as_str()));
            }
        }
        match event.get("eventid").and_then(|v| v.as_str()) {
            Some(id) if id == self.as_str() => Ok(()),
            other => Err(format!("eventid {other:?} is not {}", self.as_str())),
        }
    }

    /// Looks an id up by its name.
    pub fn from_name(name: &str) -> Option<EventId> {
        EventId::ALL.iter().copied().find(|id| id.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_namespaced() {
        let mut names: Vec<_> = EventId::ALL.iter().map(|id| id.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EventId::ALL.len());
        for name in names {
            assert!(
                name.starts_with("cowrie.") || name.starts_with("hermes."),
                "{name}"
            );
        }
    }

    #[test]
    fn no_event_field_shadows_a_field_every_event_has() {
        // dst_ip/dst_port of the direct-tcpip events are the forward's destination,
        // as in Cowrie's schema; every other shared name is reserved.
        let reserved = COMMON_FIELDS
            .iter()
            .chain(CONNECTION_FIELDS)
            .filter(|f| !matches!(**f, "dst_ip" | "dst_port"));
        for field in reserved {
            for id in EventId::ALL {
                assert!(
                    !id.fields().contains(field) && !id.optional_fields().contains(field),
                    "{} declares the shared field {field}",
                    id.as_str()
                );
            }
        }
    }

    #[test]
    fn lookup_round_trips() {
        for id in EventId::ALL {
            assert_eq!(EventId::from_name(id.as_str()), Some(*id));
        }
        assert_eq!(EventId::from_name("cowrie.nope"), None);
    }
}
