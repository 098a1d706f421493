//! The configuration schema.
//!
//! It keeps the original prototype's sections and keys (`server`, `authentication`,
//! `container_pool` with `security`, `recording`, `logging`, `docker`) so its files load,
//! and adds `persona`. Unknown keys are rejected at every level, and every key that is
//! read has an effect: `config/hermes.example.yaml` documents what each one does.
//! Values are typed at load (sizes, durations, `max_startups`, address blocks), so a
//! file that loads is one `hermes run` can start with as far as the file can tell.

mod duration;
mod egress;
mod load;
mod max_startups;
mod resources;
mod set_aside;
mod size;
mod usernames;
mod validate;

use std::net::IpAddr;
use std::path::PathBuf;

use garde::Validate;
use serde::{Deserialize, Serialize};

use crate::address_block::AddressBlock;
use crate::persona;

pub use duration::{Days, Millis, Seconds};
pub use egress::{
    EgressConfig, EgressDnsConfig, EgressLimits, EgressMode, EgressNetworkConfig, EgressTlsConfig,
    RefusedAnswer,
};
pub use load::{ConfigError, ConfigIssue, load_file, parse_str};
pub use max_startups::MaxStartups;
pub use resources::{BootClock, CgroupDelegation, CpuPinning, LxcfsConfig, LxcfsMode};
pub use size::ByteSize;
pub use usernames::{UsernamePolicy, UsernamesConfig, valid_login_name};

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listener, host keys, global limits.
    #[garde(dive, custom(validate::server))]
    pub server: ServerConfig,
    /// What the server pretends to be.
    #[garde(dive)]
    pub persona: PersonaConfig,
    /// Which logins succeed.
    #[garde(dive, custom(validate::authentication))]
    pub authentication: AuthenticationConfig,
    /// The pre-warmed containers and their security profile.
    #[garde(dive, custom(validate::container_pool))]
    pub container_pool: ContainerPoolConfig,
    /// Session recordings (asciicast v2) and their metadata files.
    #[garde(dive)]
    pub recording: RecordingConfig,
    /// Operational log and event log.
    #[garde(dive)]
    pub logging: LoggingConfig,
    /// How to reach the Docker engine.
    #[garde(dive, custom(validate::docker))]
    pub docker: DockerConfig,
    /// What happens to port forwarding requests.
    #[garde(dive)]
    pub forwarding: ForwardingConfig,
    /// Files captured from sessions.
    #[garde(dive)]
    pub capture: CaptureConfig,
    /// Prometheus metrics and the health endpoint.
    #[garde(dive, custom(validate::metrics(&self.server)))]
    pub metrics: MetricsConfig,
    /// The box's network: DNS, fetched downloads, refused connections.
    #[garde(dive, custom(validate::egress(&self.container_pool, &self.docker, &self.capture)))]
    pub egress: EgressConfig,
}

/// `metrics`: Prometheus metrics (`/metrics`) and a health check (`/healthz`) over
/// HTTP, on an address of their own: never the attacker-facing SSH port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve them at all.
    #[garde(skip)]
    pub enabled: bool,
    /// Address and port to listen on (keep it off the internet: it is not
    /// authenticated).
    #[garde(skip)]
    pub listen: std::net::SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: false,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// `capture`: files created or changed in a session's container (and scp/sftp
/// uploads), copied at the end of the session (and after commands while it runs)
/// into a content-addressed store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Capture files at all.
    #[garde(skip)]
    pub enabled: bool,
    /// The store: one file per content, named by its SHA-256.
    #[garde(custom(validate::non_empty_path))]
    pub output_dir: PathBuf,
    /// Largest file copied, e.g. `32m`; larger ones get a `hermes.file.skipped`.
    #[garde(custom(validate::memory_size))]
    pub max_file_size: ByteSize,
    /// Most files copied from one session.
    #[garde(range(min = 1, max = 100000))]
    pub max_files_per_session: u32,
    /// Total size of the store; past it, new content is skipped (with an event).
    #[garde(custom(validate::memory_size))]
    pub max_store_size: ByteSize,
    /// Paths never copied: exact paths, or directories ending in `/`.
    #[garde(skip)]
    pub ignore_paths: Vec<String>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            output_dir: PathBuf::from("/data/downloads"),
            max_file_size: ByteSize::mib(32),
            max_files_per_session: 200,
            max_store_size: ByteSize::gib(2),
            // What every login and the persona's own boot and daemons write: sshd's
            // login records, rsyslog's logs, pid files, the login's MOTD, the boot's
            // runlevel, random seed and machine id, systemd's journal.
            ignore_paths: [
                "/var/log/wtmp",
                "/var/log/btmp",
                "/var/log/lastlog",
                "/run/utmp",
                "/var/run/utmp",
                "/var/log/auth.log",
                "/var/log/syslog",
                "/var/log/cron.log",
                "/var/log/kern.log",
                "/var/log/mail.log",
                "/var/log/user.log",
                "/var/log/messages",
                "/run/motd.dynamic",
                "/run/sshd.pid",
                "/run/crond.pid",
                "/run/crond.reboot",
                "/run/rsyslogd.pid",
                "/run/dbus/pid",
                "/run/runlevel",
                "/run/sendsigs.omit.d/rsyslog",
                "/var/log/dmesg",
                "/var/lib/urandom/random-seed",
                "/var/lib/dbus/machine-id",
                // systemd's: the journal (written by every login), its seed and
                // timers' stamps.
                "/var/log/journal/*/system.journal",
                "/var/log/journal/*/system@*.journal",
                "/var/log/journal/*/user-*.journal",
                "/var/lib/systemd/random-seed",
                "/var/lib/systemd/timers/stamp-*.timer",
                "/var/lib/logrotate/status",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }
}

/// `forwarding`: port forwarding is logged always and never connects anywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardingConfig {
    /// `refuse` answers `direct-tcpip` (ssh -L, -D) as an sshd behind an egress
    /// firewall does ("connect failed: Connection refused"); `capture` accepts the
    /// channel and logs what the client sends through it (spam, proxy abuse), up to
    /// `capture_bytes` and `capture_seconds`, then closes it.
    #[garde(skip)]
    pub direct_tcpip: DirectTcpipMode,
    /// Bytes logged per captured channel.
    #[garde(custom(validate::memory_size))]
    pub capture_bytes: ByteSize,
    /// How long a captured channel stays open, in seconds.
    #[garde(range(min = 1, max = 3600))]
    pub capture_seconds: Seconds,
    /// Captured channels one connection may hold at once; past it, refused.
    #[garde(range(min = 1, max = 1000))]
    pub max_captures_per_connection: u32,
}

impl Default for ForwardingConfig {
    fn default() -> Self {
        Self {
            direct_tcpip: DirectTcpipMode::Refuse,
            capture_bytes: ByteSize::kib(64),
            capture_seconds: Seconds::new(30),
            max_captures_per_connection: 16,
        }
    }
}

/// How `direct-tcpip` channels are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectTcpipMode {
    /// "open failed: connect failed: Connection refused".
    Refuse,
    /// Accepted; the client's data is logged, nothing is connected.
    Capture,
}

/// `server`: the listening socket and connection-wide limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    #[garde(skip)]
    pub host: IpAddr,
    /// TCP port to listen on; 0 is any free port (the `listening` log line says which),
    /// so that tests never race each other for one.
    #[garde(skip)]
    pub port: u16,
    /// Path of the RSA host key. The Ed25519 and ECDSA keys live beside it as
    /// `ssh_host_ed25519_key` and `ssh_host_ecdsa_key`. Missing keys are generated.
    #[garde(custom(validate::host_key_path))]
    pub host_key_path: PathBuf,
    /// Authenticated sessions (connections holding a container) allowed at once.
    #[garde(range(min = 1, max = 10000))]
    pub max_concurrent_sessions: u32,
    /// Absolute limit on one session from login, in seconds.
    #[garde(range(min = 1, max = 604_800))]
    pub session_timeout: Seconds,
    /// A logged-in session that receives no input from the client on any channel for
    /// this long, in seconds, is ended (bash's TMOUT auto-logout); 0 turns it off.
    #[garde(range(max = 604_800))]
    pub idle_timeout: Seconds,
    /// Name of this sensor in events (Cowrie's `sensor`); also scopes this instance's
    /// containers. Defaults to the machine's hostname.
    #[garde(inner(custom(validate::sensor_name)))]
    pub sensor_name: Option<String>,
    /// sshd's MaxStartups, `start:rate:full`: past `start` unauthenticated connections,
    /// new ones are dropped with probability `rate`% rising to 100% at `full`.
    #[garde(skip)]
    pub max_startups: MaxStartups,
    /// Unauthenticated connections one source address may hold (sshd's
    /// PerSourceMaxStartups). Kept below `max_startups`' start so one flooding source
    /// cannot push everyone else into random drops.
    #[garde(range(min = 1, max = 100_000))]
    pub per_source_max_startups: u32,
    /// Connections (authenticated or not) one source address may hold.
    #[garde(range(min = 1, max = 100_000))]
    pub max_connections_per_source: u32,
    /// Connections Hermes holds at once, all sources together.
    #[garde(range(min = 1, max = 1_000_000))]
    pub max_connections: u32,
    /// When `max_startups` or `max_connections` would refuse a new connection, close
    /// instead the stalled unauthenticated connection silent longest (no complete
    /// identification line yet, or silent `startup_idle` seconds), so a flood of idle
    /// connections cannot lock everyone out. Off: refuse as sshd does.
    #[garde(skip)]
    pub evict_stalled_startups: bool,
    /// How long, in seconds, an unauthenticated connection that sent its
    /// identification line may be silent before it counts as stalled.
    #[garde(range(min = 1, max = 3600))]
    pub startup_idle: Seconds,
    /// Per-source penalties (after OpenSSH's PerSourcePenalties).
    #[garde(dive)]
    pub penalties: PenaltyConfig,
    /// Refused connections are written as one `hermes.connection.refused` event per
    /// source and reason per this interval, in seconds, with their count.
    #[garde(range(min = 1, max = 3600))]
    pub refused_event_interval: Seconds,
    /// Every connection starts with a PROXY protocol header (v1 or v2) from a load
    /// balancer, and the client it names is the session's source. Off by default.
    #[garde(skip)]
    pub proxy_protocol: bool,
    /// The balancers (addresses or CIDR blocks) that may send that header; any other
    /// peer is closed on. Required with `proxy_protocol`, so that no client can name
    /// its own source by connecting around the balancer.
    #[garde(skip)]
    pub proxy_trusted: Vec<AddressBlock>,
    /// The nice value (-20..19) of Hermes's threads. sshd runs a process per session,
    /// Hermes a few threads for all of them, and the kernel shares a busy CPU per
    /// thread: at 0 the keystrokes of hundreds of sessions would queue behind the
    /// boxes' shells. Below 0 needs CAP_SYS_NICE; refused, Hermes warns and keeps its own.
    #[garde(range(min = -20, max = 19))]
    pub nice: i32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 2222,
            host_key_path: PathBuf::from("/data/keys/ssh_host_rsa_key"),
            max_concurrent_sessions: 10,
            session_timeout: Seconds::new(3600),
            idle_timeout: Seconds::new(900),
            sensor_name: None,
            max_startups: MaxStartups::default(),
            per_source_max_startups: 8,
            max_connections_per_source: 32,
            max_connections: 1024,
            evict_stalled_startups: true,
            startup_idle: Seconds::new(10),
            penalties: PenaltyConfig::default(),
            refused_event_interval: Seconds::new(60),
            proxy_protocol: false,
            proxy_trusted: Vec::new(),
            nice: -10,
        }
    }
}

/// `server.penalties`: a source whose unauthenticated connections keep ending without
/// an authentication attempt collects penalty time; once it holds `min` seconds, its
/// new connections are refused until the time runs out. Connections that tried a
/// password or key are never penalised: they are what a honeypot is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct PenaltyConfig {
    /// Penalties on or off.
    #[garde(skip)]
    pub enabled: bool,
    /// Penalty added when a connection closes without an authentication attempt, in
    /// seconds.
    #[garde(range(max = 3600))]
    pub noauth: Seconds,
    /// Penalty added when the login grace time runs out, in seconds.
    #[garde(range(max = 3600))]
    pub grace_exceeded: Seconds,
    /// Penalty added when the connection is closed to make room for a new one, in
    /// seconds.
    #[garde(range(max = 3600))]
    pub evicted: Seconds,
    /// Penalty a source must hold before it is refused, in seconds.
    #[garde(range(min = 1, max = 86_400))]
    pub min: Seconds,
    /// Cap on a source's penalty, in seconds; at least `min`.
    #[garde(range(min = 1, max = 86_400), custom(validate::penalty_max(&self.min)))]
    pub max: Seconds,
    /// Source addresses tracked at most; past it, the one closest to expiry is
    /// forgotten.
    #[garde(range(min = 1, max = 10_000_000))]
    pub max_sources: u32,
}

impl Default for PenaltyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            noauth: Seconds::new(1),
            grace_exceeded: Seconds::new(10),
            evicted: Seconds::new(10),
            min: Seconds::new(15),
            max: Seconds::new(600),
            max_sources: 65_536,
        }
    }
}

/// `persona`: the server Hermes impersonates. Defaults to Debian 12's packaged OpenSSH.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct PersonaConfig {
    /// Hostname inside the containers (the shell prompt shows it).
    #[garde(custom(validate::hostname))]
    pub hostname: String,
    /// SSH identification string, or `auto` to take it from the target image's
    /// `hermes.persona.ssh_banner` label so banner and installed OpenSSH agree.
    #[garde(custom(validate::ssh_banner))]
    pub ssh_banner: String,
    /// Give each box, before it starts, the past of a server that has run for a
    /// while: weeks of rotated auth.log and syslog, wtmp, btmp and lastlog (the
    /// admin's logins, cron, scanners, reboots). One past per sensor; off: the box's
    /// logs begin at its boot and nobody ever logged in.
    #[garde(skip)]
    pub past: bool,
    /// Offer keyboard-interactive authentication (Debian's sshd_config says no).
    #[garde(skip)]
    pub keyboard_interactive: bool,
    /// Failed authentication attempts allowed on one connection (sshd's MaxAuthTries):
    /// the attempt that reaches it is answered with a disconnect.
    #[garde(range(min = 1, max = 100))]
    pub max_auth_tries: u32,
    /// PAM's failure delay, in milliseconds (pam_unix: 2000). Each failed password is
    /// answered after PAM's randomised delay, rounded up by sshd's per-user timing rule,
    /// as on Debian. 0 answers at once (for benchmarks).
    #[garde(range(max = 10_000))]
    pub auth_failure_delay_ms: Millis,
    /// How long a client has to log in before it is disconnected, in seconds (sshd's
    /// LoginGraceTime); 0 means no limit.
    #[garde(range(max = 3600))]
    pub login_grace_time: Seconds,
    /// Time without any packet from the client after which a keepalive is sent, in
    /// seconds (sshd's ClientAliveInterval); 0, Debian's default, sends none.
    #[garde(range(max = 86_400))]
    pub client_alive_interval: Seconds,
    /// Unanswered keepalives after which the connection is dropped (sshd's
    /// ClientAliveCountMax).
    #[garde(range(min = 1, max = 1000))]
    pub client_alive_count_max: u32,
    /// Session channels one connection may hold open (sshd's MaxSessions).
    #[garde(range(min = 1, max = 1000))]
    pub max_sessions: u32,
    /// Key exchange methods offered, in order.
    #[garde(custom(validate::kex_algorithms))]
    pub kex_algorithms: Vec<String>,
    /// Host key algorithms offered, in order.
    #[garde(custom(validate::host_key_algorithms))]
    pub host_key_algorithms: Vec<String>,
    /// Ciphers offered (both directions), in order.
    #[garde(custom(validate::ciphers))]
    pub ciphers: Vec<String>,
    /// MACs offered (both directions), in order.
    #[garde(custom(validate::macs))]
    pub macs: Vec<String>,
    /// Compression methods offered, in order.
    #[garde(custom(validate::compression))]
    pub compression: Vec<String>,
}

impl Default for PersonaConfig {
    fn default() -> Self {
        let owned = |names: Vec<&str>| names.into_iter().map(str::to_owned).collect();
        Self {
            hostname: "web-prod-01".to_owned(),
            ssh_banner: "auto".to_owned(),
            past: true,
            keyboard_interactive: false,
            max_auth_tries: 6,
            auth_failure_delay_ms: Millis::new(2000),
            login_grace_time: Seconds::new(120),
            client_alive_interval: Seconds::new(0),
            client_alive_count_max: 3,
            max_sessions: 10,
            kex_algorithms: owned(persona::offered(persona::KEX, persona::SUPPORTED_KEX)),
            host_key_algorithms: owned(persona::offered(
                persona::HOST_KEY,
                persona::SUPPORTED_HOST_KEY,
            )),
            ciphers: owned(persona::offered(
                persona::CIPHERS,
                persona::SUPPORTED_CIPHERS,
            )),
            macs: owned(persona::offered(persona::MACS, persona::SUPPORTED_MACS)),
            compression: owned(persona::offered(
                persona::COMPRESSION,
                persona::SUPPORTED_COMPRESSION,
            )),
        }
    }
}

/// `authentication`: the credential policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct AuthenticationConfig {
    /// Which rule decides logins. When absent: `accept_after_failures` if
    /// `accept_all_after_failures` is set (the prototype's files), `sticky` otherwise.
    #[garde(skip)]
    pub mode: Option<AuthMode>,
    /// Username/password pairs that always log in. A username may appear several
    /// times; each of its passwords works. `*` in either matches any text.
    #[garde(dive)]
    pub static_credentials: Vec<Credential>,
    /// `accept_after_failures` mode: after this many failed attempts on one
    /// connection, the next attempt is accepted whatever it is (default 3).
    #[garde(inner(range(min = 1, max = 1000)))]
    pub accept_all_after_failures: Option<u32>,
    /// `sticky` mode settings.
    #[garde(dive)]
    pub sticky: Option<StickyConfig>,
    /// Accept any public key (logged either way). Off: keys are logged and refused.
    #[garde(skip)]
    pub accept_public_keys: bool,
    /// Which login names the mode's rule, a wildcard pair or a public key may let in.
    #[garde(dive)]
    pub usernames: UsernamesConfig,
}

impl AuthenticationConfig {
    /// The rule in force (see [`AuthenticationConfig::mode`]).
    pub fn effective_mode(&self) -> AuthMode {
        self.mode
            .unwrap_or(if self.accept_all_after_failures.is_some() {
                AuthMode::AcceptAfterFailures
            } else {
                AuthMode::Sticky
            })
    }

    /// `accept_all_after_failures`, or its default.
    pub fn accept_after(&self) -> u32 {
        self.accept_all_after_failures.unwrap_or(3)
    }

    /// The `sticky` settings, or their defaults.
    pub fn sticky_settings(&self) -> StickyConfig {
        self.sticky.clone().unwrap_or_default()
    }
}

/// How logins are decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Only `static_credentials`.
    Static,
    /// Static credentials, plus any attempt after N failures on one connection (the
    /// prototype's rule).
    AcceptAfterFailures,
    /// Static credentials, plus: each source must fail a random number of attempts;
    /// the pair that then succeeds is the only one (with the static ones) that works
    /// from that source for `remember_for`.
    Sticky,
}

/// `authentication.sticky`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct StickyConfig {
    /// Fewest failures a source needs before a login succeeds.
    #[garde(range(min = 0, max = 1000))]
    pub min_failures: u32,
    /// Most failures a source needs (the number is drawn between the two bounds).
    #[garde(range(min = 0, max = 1000))]
    pub max_failures: u32,
    /// How long a source's successful pair is remembered (and its failure count
    /// kept), in seconds.
    #[garde(range(min = 60, max = 31_536_000))]
    pub remember_for: Seconds,
    /// File that keeps this state across restarts.
    #[garde(custom(validate::non_empty_path))]
    pub state_file: PathBuf,
}

impl Default for StickyConfig {
    fn default() -> Self {
        Self {
            min_failures: 2,
            max_failures: 5,
            remember_for: Seconds::new(86_400),
            state_file: PathBuf::from("/data/state/auth-sticky.json"),
        }
    }
}

/// One accepted username/password pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// Login name, compared exactly; `*` matches any text.
    #[garde(length(min = 1, max = 256))]
    pub username: String,
    /// Password, compared exactly; `*` matches any text.
    #[garde(length(max = 1024))]
    pub password: String,
}

/// `container_pool`: the pre-warmed containers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerPoolConfig {
    /// Ready (started, unused) containers kept at all times.
    #[garde(range(min = 1, max = 200))]
    pub size: u32,
    /// How long one container create-and-start may take before it is abandoned, in
    /// seconds.
    #[garde(range(min = 5, max = 600))]
    pub spawn_timeout: Seconds,
    /// Target image (build it with `images/target/build.sh`).
    #[garde(length(min = 1, max = 256))]
    pub image: String,
    /// The image used instead when `image` boots systemd and the host cannot give a
    /// box the cgroup systemd needs (`security.cgroup_delegation`): the same server
    /// with Debian's sysvinit (`images/target/build.sh IMAGE sysvinit`).
    #[garde(length(min = 1, max = 256))]
    pub fallback_image: String,
    /// How long a container may serve one session before it is stopped, in seconds.
    #[garde(range(min = 60, max = 604_800))]
    pub max_session_duration: Seconds,
    /// Stopped containers (kept for forensics) are removed after this long, in days;
    /// 0 keeps them forever.
    #[garde(range(max = 3650))]
    pub cleanup_stopped_after_days: Days,
    /// Running containers (ready plus in use) at most. Past it, logins still succeed
    /// but the session is told the machine is out of resources and closed.
    #[garde(range(min = 1, max = 10_000))]
    pub max_containers: u32,
    /// Stopped containers kept at most; the oldest go first.
    #[garde(range(min = 1, max = 1_000_000))]
    pub max_stopped_containers: u32,
    /// Disk the stopped containers' writable layers may use in all, e.g. `20g`; the
    /// oldest go first.
    #[garde(custom(validate::memory_size))]
    pub max_stopped_disk: ByteSize,
    /// Returning attackers get their previous machine back.
    #[garde(dive)]
    pub reuse: ReuseConfig,
    /// Isolation and resource limits of every container.
    #[garde(dive)]
    pub security: SecurityConfig,
    /// Who runs the attacker's session in the box: `box_sshd`, the box's own OpenSSH
    /// (Hermes logs in to it over the box's network, from the attacker's address;
    /// needs `egress` on), or `engine`, Hermes's session helper started through the
    /// container engine. With `box_sshd` and egress off, sessions use the engine.
    #[garde(skip)]
    pub session_server: SessionServer,
    /// With `box_sshd`, how a channel's bytes reach its program: `taken`, Hermes
    /// takes the program's terminal or pipes from the box's sshd process (where this
    /// host lets it: the engine here, and the right to trace the box's processes),
    /// so that typing costs what it costs under one sshd; `relay`, every byte goes
    /// through the box's sshd as it would from a real client.
    #[garde(skip)]
    pub box_sshd_io: BoxSshdIo,
}

/// How a channel's bytes reach a program the box's sshd runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxSshdIo {
    /// Hermes holds the program's terminal or pipes; sshd runs it and reports its end.
    #[default]
    Taken,
    /// Through the box's sshd, over the box's network.
    Relay,
}

/// Who runs a session in the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionServer {
    /// The box's own sshd, reached over the box's network.
    #[default]
    BoxSshd,
    /// Hermes's session helper, started through the engine's exec.
    Engine,
}

/// `container_pool.reuse`: a source that logs in again gets its own machine back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct ReuseConfig {
    /// Give returning sources their previous container.
    #[garde(skip)]
    pub enabled: bool,
    /// What identifies a returning attacker.
    #[garde(skip)]
    pub key: ReuseKey,
    /// How long after a session ends its container is kept for the source's next
    /// login, in seconds.
    #[garde(range(min = 60, max = 31_536_000))]
    pub ttl: Seconds,
    /// How long a box keeps running after its last session ends, in seconds, as a
    /// real server runs on after a logout (0: stopped at once). Lingering boxes count
    /// toward `max_containers`; at that cap, the one lingering longest is stopped
    /// first.
    #[garde(range(min = 0, max = 86_400))]
    pub linger: Seconds,
    /// Lingering boxes are frozen (`docker pause`) and thawed at the next login:
    /// nothing the attacker left runs meanwhile (no CPU), but its state is kept.
    #[garde(skip)]
    pub freeze_lingering: bool,
    /// Containers one source address may own at once (with `key: source_and_user`);
    /// past it, its most recently used container serves the new session.
    #[garde(range(min = 1, max = 1000))]
    pub max_containers_per_source: u32,
    /// Where the source-to-container map is kept across restarts.
    #[garde(custom(validate::non_empty_path))]
    pub state_file: PathBuf,
}

impl Default for ReuseConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            key: ReuseKey::Source,
            ttl: Seconds::new(86_400),
            linger: Seconds::new(600),
            freeze_lingering: false,
            max_containers_per_source: 3,
            state_file: PathBuf::from("/data/state/containers.json"),
        }
    }
}

/// What identifies a returning attacker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReuseKey {
    /// The source address.
    Source,
    /// The source address and the login name.
    SourceAndUser,
}

impl Default for ContainerPoolConfig {
    fn default() -> Self {
        Self {
            size: 3,
            spawn_timeout: Seconds::new(30),
            image: "hermes-target:latest".to_owned(),
            fallback_image: "hermes-target:sysvinit".to_owned(),
            max_session_duration: Seconds::new(3600),
            cleanup_stopped_after_days: Days::new(7),
            max_containers: 50,
            max_stopped_containers: 500,
            max_stopped_disk: ByteSize::gib(20),
            reuse: ReuseConfig::default(),
            security: SecurityConfig::default(),
            session_server: SessionServer::default(),
            box_sshd_io: BoxSshdIo::default(),
        }
    }
}

/// `container_pool.security`: the container security profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Docker network mode; `none` keeps attackers off every network. `host` and
    /// `container:*` are refused.
    #[garde(custom(validate::network_mode))]
    pub network_mode: String,
    /// Memory limit, e.g. `256m` (k, m or g suffix).
    #[garde(custom(validate::memory_limit))]
    pub memory_limit: ByteSize,
    /// CPU limit in cores.
    #[garde(range(min = 0.1, max = 8.0))]
    pub cpu_quota: f64,
    /// Each box on one whole core of its own (`core`) or on all of them (`off`).
    #[garde(skip)]
    pub cpu_pinning: CpuPinning,
    /// LXCFS's /proc files bound over the box's, so `free`, `nproc` and `uptime` show
    /// the box's limits, not the host's.
    #[garde(dive)]
    pub lxcfs: LxcfsConfig,
    /// Whether a box of a systemd image gets a cgroup of its own (`auto`) or the
    /// `fallback_image` is used instead (`off`).
    #[garde(skip)]
    pub cgroup_delegation: CgroupDelegation,
    /// A boot clock of the box's own (`auto`, `required`, `off`): its uptime, PID 1's
    /// start time and every process's age count from the box's boot. Needs the
    /// engine's `hermes-box` runtime, so not with another `runtime`.
    #[garde(custom(validate::boot_clock(&self.runtime)))]
    pub boot_clock: BootClock,
    /// Maximum number of processes in the container.
    #[garde(range(min = 10, max = 100_000))]
    pub pids_limit: u32,
    /// Size of `/dev/shm`, the container's only tmpfs (attacker-writable paths are kept
    /// off tmpfs so forensics can see them), e.g. `50m`.
    #[garde(custom(validate::memory_size))]
    pub tmpfs_size: ByteSize,
    /// Linux capabilities.
    #[garde(dive)]
    pub capabilities: CapabilitiesConfig,
    /// Docker `--security-opt` values (not `seccomp`: that is [`Self::seccomp`]).
    #[garde(inner(custom(validate::security_opt)))]
    pub security_opt: Vec<String>,
    /// The seccomp profile of the containers.
    #[garde(skip)]
    pub seccomp: SeccompProfile,
    /// Size of a container's writable layer at which its sessions are ended and it is
    /// stopped (checked every few seconds), e.g. `1g`.
    #[garde(custom(validate::memory_size))]
    pub disk_limit: ByteSize,
    /// Largest file a process in the container may write (RLIMIT_FSIZE), e.g. `512m`.
    #[garde(custom(validate::memory_size))]
    pub max_file_size: ByteSize,
    /// OCI runtime (e.g. `runsc` for gVisor) when the engine has it; the engine's
    /// default otherwise.
    #[garde(inner(custom(validate::runtime_name)))]
    pub runtime: Option<String>,
    /// Docker user-namespace mode: `host` opts out of a daemon-wide `userns-remap`;
    /// unset follows the daemon.
    #[garde(inner(custom(validate::userns_mode)))]
    pub userns_mode: Option<String>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            network_mode: "none".to_owned(),
            memory_limit: ByteSize::mib(256),
            cpu_quota: 0.5,
            cpu_pinning: CpuPinning::Core,
            lxcfs: LxcfsConfig::default(),
            cgroup_delegation: CgroupDelegation::Auto,
            boot_clock: BootClock::Auto,
            pids_limit: 100,
            tmpfs_size: ByteSize::mib(50),
            capabilities: CapabilitiesConfig::default(),
            security_opt: vec!["no-new-privileges:true".to_owned()],
            seccomp: SeccompProfile::Hermes,
            disk_limit: ByteSize::gib(1),
            max_file_size: ByteSize::mib(512),
            runtime: None,
            userns_mode: None,
        }
    }
}

/// Which seccomp profile the containers get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeccompProfile {
    /// Hermes's own: Docker's default minus io_uring and other high-risk calls.
    Hermes,
    /// The engine's built-in default profile.
    DockerDefault,
}

/// `container_pool.security.capabilities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct CapabilitiesConfig {
    /// Capabilities removed (`ALL` for all of them).
    #[garde(inner(custom(validate::capability)))]
    pub drop: Vec<String>,
    /// Capabilities added back after the drop.
    #[garde(inner(custom(validate::capability)))]
    pub add: Vec<String>,
}

impl CapabilitiesConfig {
    /// Whether root in a box holds `name` (e.g. `SYS_CHROOT`): added back, or never
    /// dropped (the engine's default set has it).
    pub fn grants(&self, name: &str) -> bool {
        let same = |c: &String| c.trim_start_matches("CAP_").eq_ignore_ascii_case(name);
        let dropped = self
            .drop
            .iter()
            .any(|c| c.eq_ignore_ascii_case("ALL") || same(c));
        self.add.iter().any(same) || !dropped
    }
}

impl Default for CapabilitiesConfig {
    fn default() -> Self {
        Self {
            drop: vec!["ALL".to_owned()],
            // Docker's own default set less MKNOD, NET_RAW, SETFCAP and AUDIT_WRITE:
            // root reads and changes any file of the box, kills any of its processes,
            // chroots (sshd's privilege separation) and binds low ports, as a root
            // does. Nothing here reaches past the box (SECURITY.md, "Root in the box").
            add: [
                "CHOWN",
                "DAC_OVERRIDE",
                "FOWNER",
                "FSETID",
                "KILL",
                "SETGID",
                "SETUID",
                "SETPCAP",
                "NET_BIND_SERVICE",
                "SYS_CHROOT",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }
}

/// `recording`: asciicast v2 recordings and their metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Record sessions at all.
    #[garde(skip)]
    pub enabled: bool,
    /// Directory of `<session>.cast` and `<session>.json`.
    #[garde(custom(validate::non_empty_path))]
    pub output_dir: PathBuf,
    /// Recording format; asciicast v2 is the only one (`asciinema` is accepted as a
    /// synonym, as the prototype spelled it).
    #[garde(skip)]
    pub format: RecordingFormat,
    /// Which groups of fields the metadata file carries.
    #[garde(skip)]
    pub capture_metadata: Vec<MetadataField>,
    /// Largest recording file, e.g. `64m`: past it, output is no longer recorded (the
    /// metadata says so), so an attacker cannot fill the recordings disk.
    #[garde(custom(validate::memory_size))]
    pub max_recording_size: ByteSize,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            output_dir: PathBuf::from("/data/recordings"),
            format: RecordingFormat::Asciicast,
            capture_metadata: MetadataField::ALL.to_vec(),
            max_recording_size: ByteSize::mib(64),
        }
    }
}

/// Recording file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingFormat {
    /// asciicast v2 (<https://docs.asciinema.org/manual/asciicast/v2/>).
    #[serde(alias = "asciinema", alias = "asciicast-v2")]
    Asciicast,
}

/// Field groups of a session's metadata file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataField {
    /// Source and destination address and port, client version.
    ConnectionInfo,
    /// Every username/password tried, with its result.
    AuthenticationAttempts,
    /// Start, end and duration.
    SessionDuration,
    /// The container that served the session.
    ContainerId,
    /// Commands requested with `exec`.
    CommandsExecuted,
}

impl MetadataField {
    /// Every group, the default.
    pub const ALL: [MetadataField; 5] = [
        MetadataField::ConnectionInfo,
        MetadataField::AuthenticationAttempts,
        MetadataField::SessionDuration,
        MetadataField::ContainerId,
        MetadataField::CommandsExecuted,
    ];
}

/// `logging`: the operational log (for operators) and the event log (for SIEMs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Least severe operational message written; `--log-level` overrides it.
    #[garde(skip)]
    pub level: LogLevel,
    /// Operational log line format.
    #[garde(skip)]
    pub format: LogFormat,
    /// Directory of `hermes.log` (operational log) and the event log.
    #[garde(custom(validate::non_empty_path))]
    pub output_dir: PathBuf,
    /// Where operational log lines go: `stdout` (for a container's or systemd's
    /// journal), `file` (`<output_dir>/hermes.log`), or both.
    #[garde(length(min = 1))]
    pub destinations: Vec<LogDestination>,
    /// Fields each operational log line carries when they apply.
    #[garde(skip)]
    pub include_fields: Vec<LogField>,
    /// File name of the JSON-lines event log (Cowrie schema) inside `output_dir`.
    #[garde(custom(validate::file_name))]
    pub event_file: String,
    /// When the event log is rotated: `daily` (to `<event_file>.YYYY-MM-DD`, as
    /// Cowrie), `size` (past `event_rotation_size`), or `never`.
    #[garde(skip)]
    pub event_rotation: EventRotation,
    /// Size at which `size` rotation starts a new file, e.g. `100m`.
    #[garde(custom(validate::memory_size))]
    pub event_rotation_size: ByteSize,
    /// Event lines kept in memory while the event log cannot be written (a full
    /// disk), e.g. `16m`; past it events are counted as dropped.
    #[garde(custom(validate::memory_size))]
    pub event_backlog_size: ByteSize,
}

/// Where operational log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogDestination {
    /// Standard output.
    Stdout,
    /// `hermes.log` in the log directory.
    File,
}

/// How the event log is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventRotation {
    /// A new file every UTC day.
    Daily,
    /// A new file past `event_rotation_size`.
    Size,
    /// One file (rotated, if at all, by an external tool).
    Never,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            format: LogFormat::Json,
            output_dir: PathBuf::from("/data/logs"),
            destinations: vec![LogDestination::Stdout, LogDestination::File],
            include_fields: LogField::ALL.to_vec(),
            event_file: "hermes.json".to_owned(),
            event_rotation: EventRotation::Daily,
            event_rotation_size: ByteSize::mib(100),
            event_backlog_size: ByteSize::mib(16),
        }
    }
}

/// Operational log severity, in the prototype's (Python) spelling; any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    /// Everything, including protocol detail.
    #[serde(alias = "trace")]
    Trace,
    /// Debugging detail.
    #[serde(alias = "debug")]
    Debug,
    /// Normal operation.
    #[serde(alias = "info")]
    Info,
    /// Something unusual.
    #[serde(alias = "warn", alias = "WARN", alias = "warning")]
    Warning,
    /// A failure.
    #[serde(alias = "error", alias = "CRITICAL", alias = "critical")]
    Error,
}

/// Operational log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// `timestamp LEVEL message key=value...`.
    Text,
}

/// Fields of an operational log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogField {
    /// UTC time of the line.
    Timestamp,
    /// The session id, when the line belongs to a session.
    SessionId,
    /// The login name, once known.
    Username,
    /// The client's address.
    SourceIp,
    /// What happened, as a short stable name (the log target).
    EventType,
}

impl LogField {
    /// Every field, the default.
    pub const ALL: [LogField; 5] = [
        LogField::Timestamp,
        LogField::SessionId,
        LogField::Username,
        LogField::SourceIp,
        LogField::EventType,
    ];
}

/// `docker`: where the engine is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// Unix socket of the engine, used when `base_url` is not set.
    #[garde(custom(validate::non_empty_path))]
    pub socket_path: PathBuf,
    /// `unix:///path/to/docker.sock`, `tcp://host:port` or `http://host:port`, for
    /// example a Docker socket proxy. Overrides `socket_path`.
    #[garde(inner(custom(validate::docker_url)))]
    pub base_url: Option<String>,
    /// Where exec streams (the sessions' shells) are opened, when not at `base_url`:
    /// the socket proxy serves them on a port of its own (HAProxy cannot pass the
    /// engine's connection upgrade on its HTTP port).
    #[garde(inner(custom(validate::docker_url)))]
    pub stream_url: Option<String>,
    /// TLS with a client certificate for a `tcp://` or `https://` engine on another
    /// host (Docker's `--tlsverify` files).
    #[garde(dive)]
    pub tls: Option<DockerTlsConfig>,
    /// The engine behind a `tcp://` or `http://` `base_url` runs on this machine and
    /// Hermes sees its containers' processes (the compose stack: its socket proxy,
    /// `pid: host`). Egress enters each box's network namespace through its process,
    /// so it needs this; an engine on another host cannot give boxes a network.
    #[garde(skip)]
    pub same_host: bool,
}

/// `docker.tls`: PEM files as `dockerd --tlsverify` clients use them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct DockerTlsConfig {
    /// The CA that signed the engine's certificate.
    #[garde(custom(validate::non_empty_path))]
    pub ca: PathBuf,
    /// This client's certificate.
    #[garde(custom(validate::non_empty_path))]
    pub cert: PathBuf,
    /// Its private key.
    #[garde(custom(validate::non_empty_path))]
    pub key: PathBuf,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            socket_path: PathBuf::from("/var/run/docker.sock"),
            base_url: None,
            stream_url: None,
            tls: None,
            same_host: false,
        }
    }
}

impl Config {
    /// Why sessions cannot run through the box's own sshd under this configuration
    /// (they run through the engine's exec then); None when they can.
    pub fn box_sshd_unavailable(&self) -> Option<&'static str> {
        if self.container_pool.session_server != SessionServer::BoxSshd {
            return Some("container_pool.session_server is engine");
        }
        if self.egress.mode == EgressMode::Off {
            return Some("egress is off, so boxes have no network for their sshd");
        }
        if !self
            .container_pool
            .security
            .capabilities
            .grants("SYS_CHROOT")
        {
            return Some(
                "the boxes' capabilities leave out SYS_CHROOT, which the box's sshd needs for its privilege separation",
            );
        }
        None
    }

    /// The sensor name: configured, or this machine's hostname.
    pub fn sensor_name(&self) -> String {
        if let Some(name) = &self.server.sensor_name {
            return name.clone();
        }
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| validate::sensor_name(s, &()).is_ok())
            .unwrap_or_else(|| "hermes".to_owned())
    }

    /// The effective configuration as YAML, as `hermes check-config` prints it.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}
