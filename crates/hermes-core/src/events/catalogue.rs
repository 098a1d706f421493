//! The one list of event ids Hermes emits, with the fields each carries.
//!
//! Cowrie ids keep Cowrie 3.x's names and fields so existing pipelines ingest them;
//! Hermes's own ids live under `hermes.`. Every emitted event is checked against this
//! table in tests (see [`EventId::check`]).

/// The JSON type of a field, as Cowrie's consumers expect it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// A string.
    Str,
    /// A non-negative integer.
    Int,
    /// A number (integer or float).
    Num,
    /// true or false.
    Bool,
    /// An array of strings.
    StrList,
}

impl FieldType {
    /// Whether `value` has this type.
    pub fn matches(self, value: &serde_json::Value) -> bool {
        match self {
            FieldType::Str => value.is_string(),
            FieldType::Int => value.is_u64(),
            FieldType::Num => value.is_number(),
            FieldType::Bool => value.is_boolean(),
            FieldType::StrList => value
                .as_array()
                .is_some_and(|items| items.iter().all(serde_json::Value::is_string)),
        }
    }

    /// The name used in docs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Str => "string",
            FieldType::Int => "integer",
            FieldType::Num => "number",
            FieldType::Bool => "boolean",
            FieldType::StrList => "array of strings",
        }
    }
}

/// A field name and its type.
pub type Field = (&'static str, FieldType);

use FieldType::{Bool, Int, Num, Str, StrList};

/// Fields on every event.
pub const COMMON_FIELDS: &[Field] = &[
    ("eventid", Str),
    ("timestamp", Str),
    ("sensor", Str),
    ("message", Str),
];

/// Fields on every event that belongs to a connection.
pub const CONNECTION_FIELDS: &[Field] = &[
    ("session", Str),
    ("src_ip", Str),
    ("src_port", Int),
    ("dst_ip", Str),
    ("dst_port", Int),
    ("protocol", Str),
];

macro_rules! catalogue {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal, connection: $conn:literal,
        fields: [$($field:literal : $ty:ident),* $(,)?]
        $(, optional: [$($opt:literal : $oty:ident),* $(,)?])?; )*) => {
        /// An event id.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventId {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl EventId {
            /// Every id, in catalogue order.
            pub const ALL: &'static [EventId] = &[$(EventId::$variant),*];

            /// The id as written in the `eventid` field.
            pub const fn as_str(self) -> &'static str {
                match self { $(EventId::$variant => $name,)* }
            }

            /// Fields this event always carries beyond the common (and connection) ones.
            pub const fn fields(self) -> &'static [Field] {
                match self { $(EventId::$variant => &[$(($field, $ty)),*],)* }
            }

            /// Fields this event carries in some cases (e.g. `password` only for
            /// password logins).
            pub const fn optional_fields(self) -> &'static [Field] {
                match self { $(EventId::$variant => &[$($(($opt, $oty)),*)?],)* }
            }

            /// Whether the event belongs to a connection (and so carries `session`,
            /// `src_ip` and the other connection fields).
            pub const fn is_connection_event(self) -> bool {
                match self { $(EventId::$variant => $conn,)* }
            }

            /// What the event means (its doc comment), for the documentation.
            pub fn description(self) -> &'static str {
                match self { $(EventId::$variant => concat!($($doc, " "),*),)* }
            }
        }
    };
}

catalogue! {
    /// A TCP connection was accepted.
    SessionConnect = "cowrie.session.connect", connection: true, fields: [];
    /// The client's identification string arrived.
    ClientVersion = "cowrie.client.version", connection: true, fields: ["version": Str];
    /// The client's key exchange offer (from its plaintext KEXINIT), with its HASSH.
    ClientKex = "cowrie.client.kex", connection: true,
        fields: ["hassh": Str, "hasshAlgorithms": Str, "kexAlgs": StrList, "keyAlgs": StrList,
                 "encCS": StrList, "macCS": StrList, "compCS": StrList, "langCS": StrList];
    /// The client offered a public key.
    ClientFingerprint = "cowrie.client.fingerprint", connection: true,
        fields: ["username": Str, "fingerprint": Str, "key": Str, "type": Str];
    /// An authentication attempt was accepted: `password` for password and
    /// keyboard-interactive logins, `fingerprint`, `key` and `type` for public keys.
    LoginSuccess = "cowrie.login.success", connection: true, fields: ["username": Str],
        optional: ["password": Str, "fingerprint": Str, "key": Str, "type": Str];
    /// An authentication attempt was refused (same fields as a success).
    LoginFailed = "cowrie.login.failed", connection: true, fields: ["username": Str],
        optional: ["password": Str, "fingerprint": Str, "key": Str, "type": Str];
    /// A terminal was requested or resized.
    ClientSize = "cowrie.client.size", connection: true, fields: ["width": Int, "height": Int];
    /// The client sent an `env` request (accepted or not).
    ClientVar = "cowrie.client.var", connection: true,
        fields: ["name": Str, "value": Str, "accepted": Bool];
    /// A session recording was opened (`ttylog`: its path).
    LogOpen = "cowrie.log.open", connection: true, fields: ["ttylog": Str];
    /// A command: an `exec` request exactly as sent, or a line entered in an
    /// interactive shell (reconstructed from the keystrokes). `realm` names the program
    /// that was running when the line was typed into it rather than into the shell;
    /// `approximate` marks a line with input that cannot be replayed exactly (tab
    /// completion, unknown keys).
    CommandInput = "cowrie.command.input", connection: true, fields: ["input": Str],
        optional: ["realm": Str, "approximate": Bool];
    /// A file that appeared or changed in the container during the session (with its
    /// path, `destfile`), or a body the box downloaded through the gateway (with
    /// `upstream`, the address it came from, and `upstream_bytes`, the bytes received
    /// from it; `truncated` when it was cut, what came before kept, `reason` saying
    /// why: `download_size`, `session_bytes`, `hourly_bytes`, `fetch_timeout`,
    /// `incomplete` (the server closed early) or `client_closed`), copied into the
    /// store (`outfile`, named by its SHA-256). `url` when known; `duplicate` when the
    /// store had it already. A gateway download has `destfile` when a command of the
    /// session asked for its URL and saves it to a file: the name as the command
    /// wrote it (`x.sh`, `/tmp/a`), not resolved (none for `curl` to stdout). Over
    /// HTTPS (`url` `https://...`, the gateway answering the box's TLS with a
    /// certificate of the sensor's CA, or with a mirror of upstream's that nobody
    /// trusts when upstream's did not verify, and always for the SSH client's
    /// forwards): `sni`, the name the client sent, and the certificate upstream
    /// showed (`upstream_cert_subject`, `upstream_cert_issuer`, `upstream_cert_sha256`
    /// of its DER, `upstream_cert_not_after`), with `upstream_cert_verified` when
    /// `egress.tls.verify_upstream` is on and, when it did not verify,
    /// `upstream_cert_error` saying why (a client that does not check, `curl -k`, got
    /// the body). A box's TFTP read request (`tftp -g`) is fetched the same way
    /// (`url` `tftp://server/file`, never cut: too large fails), and so is its FTP
    /// `RETR` (`ftpget`, `curl ftp://`: `url` `ftp://server/path`, with `ftp_user` and
    /// `ftp_password`, the login the box used, which Hermes logged in upstream with).
    FileDownload = "cowrie.session.file_download", connection: true,
        fields: ["outfile": Str, "shasum": Str, "size": Int, "duplicate": Bool],
        optional: ["url": Str, "destfile": Str, "upstream": Str, "upstream_bytes": Int,
                   "truncated": Bool, "reason": Str, "sni": Str,
                   "upstream_cert_subject": Str, "upstream_cert_issuer": Str,
                   "upstream_cert_sha256": Str, "upstream_cert_not_after": Str,
                   "ftp_user": Str, "ftp_password": Str,
                   "upstream_cert_verified": Bool, "upstream_cert_error": Str];
    /// A download through the gateway failed or was refused, nothing of it kept:
    /// `reason` is an SSRF refusal (`loopback`, `private`, `metadata`, ...: the
    /// upstream address was never contacted), a limit (`fetches_per_session`,
    /// `session_bytes`, `hourly_bytes`, `fetch_timeout`), `connect_failed`,
    /// `bad_request`, `bad_response`, `http_status` (not a 2xx: `error` has the status
    /// and any `Location`), `store_full` or `store_error`; over HTTPS also
    /// `tls_failed` (upstream's TLS handshake failed) and `tls_handshake` (the
    /// client's TLS with the gateway failed: a box not trusting the sensor's CA, or a
    /// client refusing the mirror of an upstream certificate that did not verify, as
    /// it would have refused the original: `upstream_cert_verified` false), with `sni`
    /// and the upstream certificate's fields as in `cowrie.session.file_download`
    /// when known; over TFTP also `tftp_error` (the server answered with an ERROR)
    /// and `download_size`; over FTP also `ftp_login` (upstream refused the box's
    /// login) and `ftp_error` (upstream refused the command: no such file), with
    /// `ftp_user` and `ftp_password` once the box logged in (a refused server is never
    /// greeted: `url` `ftp://server/`); `error` says it in words. At most 100 are
    /// reported per session (a box looping on a refused address).
    FileDownloadFailed = "cowrie.session.file_download.failed", connection: true,
        fields: ["url": Str, "error": Str, "reason": Str, "upstream": Str],
        optional: ["upstream_bytes": Int, "sni": Str, "upstream_cert_subject": Str,
                   "upstream_cert_issuer": Str, "upstream_cert_sha256": Str,
                   "upstream_cert_not_after": Str, "ftp_user": Str, "ftp_password": Str,
                   "upstream_cert_verified": Bool, "upstream_cert_error": Str];
    /// A file the client sent with scp or sftp (`filename` as the client named it).
    FileUpload = "cowrie.session.file_upload", connection: true,
        fields: ["filename": Str, "destfile": Str, "outfile": Str, "shasum": Str, "size": Int,
                 "duplicate": Bool];
    /// A `direct-tcpip` channel was requested (ssh -L, -D): the destination the client
    /// asked for (`dst_ip`, `dst_port`: as sent, a name or an address) and the
    /// originator it claims. Connected nowhere, unless `egress` is on: then the egress
    /// policy answers it as a box's connection (`cowrie.session.file_download` for
    /// HTTP and HTTPS it fetched, `hermes.egress.connection` for the rest).
    DirectTcpipRequest = "cowrie.direct-tcpip.request", connection: true,
        fields: ["dst_ip": Str, "dst_port": Int, "orig_ip": Str, "orig_port": Int, "accepted": Bool];
    /// Data the client sent into a captured `direct-tcpip` channel (`data` escaped:
    /// printable ASCII as is, other bytes as \xNN; `id` the channel).
    DirectTcpipData = "cowrie.direct-tcpip.data", connection: true,
        fields: ["dst_ip": Str, "dst_port": Int, "data": Str, "id": Int];
    /// A session recording was closed.
    LogClosed = "cowrie.log.closed", connection: true,
        fields: ["ttylog": Str, "size": Int, "duration_ms": Int, "duration": Num];
    /// The connection closed.
    SessionClosed = "cowrie.session.closed", connection: true,
        fields: ["duration_ms": Int, "duration": Num];
    /// A session that a killed (or crashed) Hermes left open, closed at the next start:
    /// its metadata now says `end_reason` `sensor_died`, `end_time` is the last time
    /// anything of it was written. Follows its `cowrie.session.closed`; written once
    /// (the journal entry that asked for it is removed once both are on disk).
    SessionRecovered = "hermes.session.recovered", connection: true,
        fields: ["end_reason": Str, "end_time": Str];
    /// Connections from one source refused before the SSH banner for one `reason`
    /// (`max_startups`, `per_source_max_startups`, `max_connections`,
    /// `max_connections_per_source`, `per_source_penalty`), summed over
    /// `server.refused_event_interval`: `count` of them between `first_seen` and
    /// `last_seen`. `session` names this record; `src_port` is the last one's.
    ConnectionRefused = "hermes.connection.refused", connection: true,
        fields: ["reason": Str, "count": Int, "first_seen": Str, "last_seen": Str];
    /// An unauthenticated connection was closed to make room for a new one (`reason`:
    /// the limit that was full, `max_startups` or `max_connections`): it had not sent
    /// a complete identification line, or had been silent for `server.startup_idle`
    /// seconds, and was silent longest (`silent_ms`).
    ConnectionEvicted = "hermes.connection.evicted", connection: true,
        fields: ["reason": Str, "silent_ms": Int];
    /// The client's identification line was not SSH-2.0; it got sshd's answer.
    ClientBadVersion = "hermes.client.bad_version", connection: true,
        fields: ["version": Str, "reply": Str];
    /// The connection reached `max_auth_tries`; its next attempt was answered with
    /// sshd's disconnect ("Too many authentication failures").
    AuthMaxTries = "hermes.auth.max_tries", connection: true, fields: ["failures": Int];
    /// The login grace time ran out before authentication.
    LoginGraceTimeout = "hermes.login.grace_timeout", connection: true, fields: ["seconds": Int];
    /// A container was handed to a session (`source`: `pool`, `on_demand`, `reused`,
    /// `shared`).
    ContainerAllocate = "hermes.container.allocate", connection: true,
        fields: ["container_id": Str, "source": Str];
    /// A returning source got its earlier container back (`reused`: started again;
    /// `shared`: joined while another of its sessions runs).
    ContainerReuse = "hermes.container.reuse", connection: true,
        fields: ["container_id": Str, "source": Str];
    /// A session's container was released (stopped and kept for forensics); after a
    /// linger, the last session's context is given.
    ContainerRelease = "hermes.container.release", connection: true, fields: ["container_id": Str];
    /// The source's last session ended and its container runs on (or, `frozen`,
    /// waits frozen) for `seconds` before it is released, as a real server runs on
    /// after a logout.
    ContainerLinger = "hermes.container.linger", connection: true,
        fields: ["container_id": Str, "seconds": Int, "frozen": Bool];
    /// A session stage failed (`container_allocation`, `box_sshd`: setting the
    /// account or logging in to the box's sshd, `box_channel`, `exec_start`, `stream`,
    /// `capacity`, `disk_limit`, `capture`).
    SessionError = "hermes.session.error", connection: true, fields: ["stage": Str, "error": Str];
    /// A channel's process started; `path` is how its input and output travel:
    /// `sshd_taken` (a program of the box's own sshd whose terminal or pipes Hermes
    /// holds from its host), `sshd` (a channel of the box's own sshd, over the box's
    /// network), `direct`
    /// (the container's own pipes, opened from Hermes's host) or `engine` (the
    /// engine's exec stream).
    ChannelProcess = "hermes.channel.process", connection: true,
        fields: ["channel": Int, "path": Str];
    /// A channel was refused: `session` past `persona.max_sessions`, `direct-tcpip`
    /// past the capture limit.
    ChannelRefused = "hermes.channel.refused", connection: true,
        fields: ["channel_type": Str, "reason": Str];
    /// A subsystem was requested (`sftp` runs the container's sftp-server; others are
    /// refused as sshd refuses them).
    Subsystem = "hermes.session.subsystem", connection: true,
        fields: ["name": Str, "accepted": Bool];
    /// The client sent a signal for the channel's process; `delivered` says whether it
    /// reached it.
    Signal = "hermes.session.signal", connection: true, fields: ["signal": Str, "delivered": Bool];
    /// X11 forwarding was requested (accepted as Debian's sshd_config does; no display
    /// is ever connected).
    X11Request = "hermes.forward.x11", connection: true,
        fields: ["auth_protocol": Str, "screen": Int, "single_connection": Bool, "accepted": Bool];
    /// Agent forwarding was requested (accepted as Debian's sshd_config does; the agent
    /// is never used).
    AgentRequest = "hermes.forward.agent", connection: true, fields: ["accepted": Bool];
    /// Remote forwarding (ssh -R) was requested; nothing ever listens.
    RemoteForward = "hermes.forward.remote", connection: true,
        fields: ["address": Str, "port": Int, "accepted": Bool], optional: ["allocated_port": Int];
    /// A file of the session was not stored: `reason` is `max_file_size`,
    /// `max_files_per_session`, `max_store_size`, `unreadable` or `store_error`.
    FileSkipped = "hermes.file.skipped", connection: true,
        fields: ["destfile": Str, "reason": Str], optional: ["size": Int];
    /// A recording could not be written (disk full): not created at all, or output
    /// left out until writes succeeded again. The session went on, what was written
    /// stays valid, and the metadata's `recording_error` says why.
    RecordError = "hermes.record.error", connection: true, fields: ["ttylog": Str, "error": Str];
    /// A box's DNS query (`query`: the name as dig prints it, odd bytes as `\DDD`;
    /// `type`: `A`, `AAAA`, ..., or `TYPEnnn`), answered with `rcode` (`NOERROR`,
    /// `NXDOMAIN`, `SERVFAIL`, `FORMERR`, ...; `none`: not answered) and `answers`
    /// (the addresses given) from `source`: `static` (`egress.dns.static_hosts`, or
    /// `static_only`), `upstream`, `cache` or `local` (unreadable or refused, without
    /// a lookup). An unreadable datagram has an empty `query` and `type`.
    EgressDns = "hermes.egress.dns", connection: true,
        fields: ["query": Str, "type": Str, "rcode": Str, "answers": StrList, "source": Str];
    /// A box's DNS queries over `egress.dns.queries_per_second` were dropped: `count`
    /// of them since the last such event (one a second at most). For an SSH
    /// client's forward whose lookup was over the rate, one event (`count` 1) each.
    EgressDnsLimited = "hermes.egress.dns.limited", connection: true, fields: ["count": Int];
    /// A box (`egress`) tried to reach something Hermes does not fetch: a TCP
    /// connection, a UDP datagram or a ping. `dst_ip`/`dst_port` are where it went
    /// (port 0 for ICMP), `transport` `tcp`, `udp`, `icmp` or `ip`, `app_protocol` a
    /// guess from the port and the first bytes (`http`, `tls`, `ssh`, `smtp`, `irc`,
    /// `stratum`, `dns`, `ping`, `unknown`), `first_bytes` what the box sent first
    /// (escaped, up to `egress.limits.first_bytes`: a TCP connection's when Hermes
    /// took it, on `egress.listen_ports` (or an SSH client's channel), a UDP
    /// datagram's always), `answer` what it got: `drop` (no answer: the client times
    /// out; a connection Hermes took is held open unanswered), `reject` (a reset or
    /// an ICMP error, as a firewall's REJECT) or `box_connection_limit` (reset: the
    /// box had too many open). The firewall's own answers are logged from the first
    /// packet of each flow, at most 100 a second per box after a burst of 2,000. An
    /// SSH client's `direct-tcpip` channel under the same policy has `forward_host` (the host as
    /// the client named it; `dst_ip` the address it resolved to), an empty
    /// `container_id`, `reject` meaning the channel open failed ("Connection
    /// refused") and `drop` the channel held open unanswered; `reason` is the SSRF
    /// refusal (`port`, `metadata`, `loopback`, ...) when `egress.mode` is `fetch`
    /// and the policy refused the address.
    EgressConnection = "hermes.egress.connection", connection: true,
        fields: ["container_id": Str, "app_protocol": Str, "first_bytes": Str, "answer": Str],
        optional: ["forward_host": Str, "reason": Str, "transport": Str];
    /// A stopped container was removed by the retention rules.
    ContainerRemove = "hermes.container.remove", connection: false,
        fields: ["container_id": Str, "reason": Str];
    /// Events were lost: the event queue was full (a sink far slower than the
    /// sessions), or the event log could not be written (disk full) for longer than
    /// its backlog (`logging.event_backlog_size`) holds. Written as soon as it can be,
    /// after the events that waited.
    EventsDropped = "hermes.events.dropped", connection: false, fields: ["count": Int];
}

impl EventId {
    /// Checks that `event` (a JSON object) has exactly the fields this id promises,
    /// each with its type: the common ones, the connection ones for connection events,
    /// its own, nothing else; `timestamp` in ISO 8601 UTC with microseconds and `Z`,
    /// `session` as 12 lowercase hex characters.
    pub fn check(self, event: &serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
        let mut expected: Vec<Field> = COMMON_FIELDS.to_vec();
        if self.is_box_event() && !event.contains_key("session") {
            expected.push(("container_id", Str));
        } else if self.is_connection_event() {
            expected.extend_from_slice(CONNECTION_FIELDS);
        }
        expected.extend_from_slice(self.fields());
        for (field, ty) in &expected {
            match event.get(*field) {
                None => return Err(format!("{} lacks `{field}`", self.as_str())),
                Some(value) if !ty.matches(value) => {
                    return Err(format!(
                        "{}: `{field}` is {value}, not a {}",
                        self.as_str(),
                        ty.name()
                    ));
                }
                Some(_) => {}
            }
        }
        for (key, value) in event {
            if expected.iter().any(|(name, _)| name == key) {
                continue;
            }
            match self.optional_fields().iter().find(|(name, _)| name == key) {
                None => return Err(format!("{} has unexpected `{key}`", self.as_str())),
                Some((_, ty)) if !ty.matches(value) => {
                    return Err(format!(
                        "{}: `{key}` is {value}, not a {}",
                        self.as_str(),
                        ty.name()
                    ));
                }
                Some(_) => {}
            }
        }
        let timestamp = event
            .get("timestamp")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if !is_iso8601_micros(timestamp) {
            return Err(format!(
                "timestamp {timestamp:?} is not YYYY-MM-DDTHH:MM:SS.ffffffZ"
            ));
        }
        if let Some(session) = event.get("session").and_then(|v| v.as_str())
            && !(session.len() == 12
                && session
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            return Err(format!(
                "session {session:?} is not 12 lowercase hex characters"
            ));
        }
        match event.get("eventid").and_then(|v| v.as_str()) {
            Some(id) if id == self.as_str() => Ok(()),
            other => Err(format!("eventid {other:?} is not {}", self.as_str())),
        }
    }

    /// Whether the event is about a box's traffic (`hermes.egress.*`): it carries the
    /// connection fields of the session the box serves, or, when it serves none (a
    /// process left running), `container_id` in their place.
    pub fn is_box_event(self) -> bool {
        self.as_str().starts_with("hermes.egress.")
    }

    /// Looks an id up by its name.
    pub fn from_name(name: &str) -> Option<EventId> {
        EventId::ALL.iter().copied().find(|id| id.as_str() == name)
    }
}

/// `2026-06-23T14:15:26.253618Z`.
fn is_iso8601_micros(text: &str) -> bool {
    let bytes = text.as_bytes();
    let pattern = b"dddd-dd-ddTdd:dd:dd.ddddddZ";
    bytes.len() == pattern.len()
        && bytes.iter().zip(pattern).all(|(b, p)| match p {
            b'd' => b.is_ascii_digit(),
            other => b == other,
        })
}

/// The catalogue as a Markdown table (what `hermes events` prints and the README
/// carries).
pub fn markdown_table() -> String {
    let mut out =
        String::from("| eventid | fields besides the common ones | when |\n|---|---|---|\n");
    for id in EventId::ALL {
        let mut fields: Vec<String> = id
            .fields()
            .iter()
            .map(|(name, ty)| format!("`{name}` ({})", ty.name()))
            .collect();
        fields.extend(
            id.optional_fields()
                .iter()
                .map(|(name, ty)| format!("`{name}`? ({})", ty.name())),
        );
        let description = id
            .description()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            id.as_str(),
            fields.join(", "),
            description
        ));
    }
    out
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
            .map(|(name, _)| *name)
            .filter(|f| !matches!(*f, "dst_ip" | "dst_port"));
        for field in reserved {
            for id in EventId::ALL {
                let declared = id
                    .fields()
                    .iter()
                    .chain(id.optional_fields())
                    .any(|(name, _)| *name == field);
                assert!(
                    !declared,
                    "{} declares the shared field {field}",
                    id.as_str()
                );
            }
        }
    }

    /// docs/events.md is the catalogue, generated; `HERMES_WRITE_DOCS=1` rewrites it.
    #[test]
    fn the_event_documentation_is_the_catalogue() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/events.md");
        let expected = format!("{}{}", include_str!("events-header.md"), markdown_table());
        if std::env::var_os("HERMES_WRITE_DOCS").is_some() {
            std::fs::write(path, &expected).expect("write docs/events.md");
        }
        let actual = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            actual == expected,
            "docs/events.md is out of date: run HERMES_WRITE_DOCS=1 cargo test -p hermes-core the_event_documentation"
        );
    }

    #[test]
    fn box_events_name_the_session_or_else_the_container() {
        let (bus, _queue) = crate::events::EventBus::new("s");
        let context = crate::events::ConnectionContext {
            session: crate::ids::SessionId::random(),
            src: "198.51.100.7:40000".parse().expect("addr"),
            dst: "10.0.0.5:22".parse().expect("addr"),
        };
        let limited = |b: crate::events::EventBuilder| b.field("count", 3).build(bus.sensor());
        let id = EventId::EgressDnsLimited;
        assert!(id.is_box_event() && !EventId::ContainerAllocate.is_box_event());
        let owned = limited(crate::events::EventBuilder::connection(id, &context));
        assert_eq!(id.check(owned.as_json()), Ok(()));
        let global = crate::events::EventBuilder::global(id).field("container_id", "c");
        assert_eq!(id.check(limited(global).as_json()), Ok(()));
        // Neither the session nor the container: refused.
        let orphan = limited(crate::events::EventBuilder::global(id));
        assert!(id.check(orphan.as_json()).is_err());
        // Other connection events still need their session.
        let global = crate::events::EventBuilder::global(EventId::AuthMaxTries)
            .field("failures", 1)
            .build(bus.sensor());
        assert!(EventId::AuthMaxTries.check(global.as_json()).is_err());
    }

    #[test]
    fn lookup_round_trips() {
        for id in EventId::ALL {
            assert_eq!(EventId::from_name(id.as_str()), Some(*id));
        }
        assert_eq!(EventId::from_name("cowrie.nope"), None);
    }
}
