//! What a test asks of its Hermes, and the typed [`Config`] built from it: the test
//! settings (loopback, port 0, its own sensor and directories) plus the test's own
//! changes, validated here so that a bad test config fails at the test.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hermes_core::address_block::AddressBlock;
use hermes_core::config::{
    AuthMode, Config, Credential, EgressMode, LogFormat, LogLevel, Millis, ReuseKey, Seconds,
    StickyConfig,
};

use crate::harness::image;

/// A change a test makes to the configuration, in typed Rust.
pub type ConfigChange = Arc<dyn Fn(&mut Config) + Send + Sync>;

/// Knobs the tests turn.
#[derive(Clone)]
pub struct Options {
    pub credentials: Vec<(&'static str, &'static str)>,
    /// `authentication.mode`, as spelled in the file.
    pub mode: &'static str,
    /// `accept_all_after_failures` (mode `accept_after_failures`).
    pub accept_after: u32,
    /// `sticky.min_failures` and `max_failures` (mode `sticky`).
    pub sticky: (u32, u32),
    pub accept_public_keys: bool,
    pub max_auth_tries: u32,
    pub pool_size: u32,
    pub max_sessions: u32,
    pub keyboard_interactive: bool,
    pub failure_delay_ms: u64,
    /// `persona.login_grace_time` in seconds.
    pub login_grace: u64,
    /// `container_pool.reuse.enabled` (off by default here: most tests want a fresh
    /// container per session from the one test address).
    pub reuse: bool,
    /// `container_pool.reuse.key`, as spelled in the file.
    pub reuse_key: &'static str,
    /// `container_pool.image`.
    pub image: String,
    /// `docker.base_url`.
    pub docker_url: Option<String>,
    /// `metrics` on, at 127.0.0.1 port 0 (the bound port is in `Hermes::metrics_port`).
    pub metrics: bool,
    /// Reuse a sensor name (to meet an earlier instance's containers).
    pub sensor: Option<String>,
    /// Recordings somewhere else than `<dir>/recordings` (a small filesystem).
    pub recording_dir: Option<PathBuf>,
    /// The event log and operational log somewhere else than `<dir>/logs`.
    pub log_dir: Option<PathBuf>,
    /// Further changes, applied in order after everything above (see
    /// [`Options::configure`]).
    pub changes: Vec<ConfigChange>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            credentials: vec![("root", "toor"), ("admin", "admin"), ("admin", "s3cret")],
            mode: "static",
            accept_after: 3,
            sticky: (2, 2),
            accept_public_keys: false,
            max_auth_tries: 6,
            pool_size: 1,
            max_sessions: 10,
            keyboard_interactive: false,
            failure_delay_ms: 0,
            login_grace: 120,
            reuse: false,
            reuse_key: "source",
            image: image(),
            docker_url: None,
            metrics: false,
            sensor: None,
            recording_dir: None,
            log_dir: None,
            changes: Vec::new(),
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("credentials", &self.credentials)
            .field("mode", &self.mode)
            .field("accept_after", &self.accept_after)
            .field("sticky", &self.sticky)
            .field("accept_public_keys", &self.accept_public_keys)
            .field("max_auth_tries", &self.max_auth_tries)
            .field("pool_size", &self.pool_size)
            .field("max_sessions", &self.max_sessions)
            .field("keyboard_interactive", &self.keyboard_interactive)
            .field("failure_delay_ms", &self.failure_delay_ms)
            .field("login_grace", &self.login_grace)
            .field("reuse", &self.reuse)
            .field("reuse_key", &self.reuse_key)
            .field("image", &self.image)
            .field("docker_url", &self.docker_url)
            .field("metrics", &self.metrics)
            .field("sensor", &self.sensor)
            .field("recording_dir", &self.recording_dir)
            .field("log_dir", &self.log_dir)
            .field("changes", &self.changes.len())
            .finish()
    }
}

/// Where one Hermes instance keeps its files.
pub struct Paths<'a> {
    /// Its temporary directory (keys, state, downloads).
    pub base: &'a Path,
    pub recordings: &'a Path,
    pub logs: &'a Path,
}

impl Options {
    /// Adds a change to the configuration, e.g.
    /// `Options::default().configure(|c| c.server.idle_timeout = Seconds::new(2))`.
    pub fn configure(mut self, change: impl Fn(&mut Config) + Send + Sync + 'static) -> Self {
        self.changes.push(Arc::new(change));
        self
    }

    /// The configuration of an instance with this sensor name and these directories:
    /// the defaults, the test settings, then the test's changes. Panics, naming the
    /// key, when the result is not a configuration `hermes run` would load.
    #[track_caller]
    pub fn config(&self, sensor: &str, hostname: &str, paths: &Paths<'_>) -> Config {
        let mut config = Config::default();
        let base = paths.base;

        let server = &mut config.server;
        server.host = IpAddr::from([127, 0, 0, 1]);
        server.port = 0;
        server.host_key_path = base.join("keys/ssh_host_rsa_key");
        server.max_concurrent_sessions = self.max_sessions;
        server.sensor_name = Some(sensor.to_owned());

        let persona = &mut config.persona;
        persona.hostname = hostname.to_owned();
        persona.keyboard_interactive = self.keyboard_interactive;
        persona.auth_failure_delay_ms = Millis::new(self.failure_delay_ms);
        persona.max_auth_tries = self.max_auth_tries;
        persona.login_grace_time = Seconds::new(self.login_grace);

        let mode: AuthMode = spelled("authentication.mode", self.mode);
        let authentication = &mut config.authentication;
        authentication.mode = Some(mode);
        authentication.accept_public_keys = self.accept_public_keys;
        authentication.static_credentials = self
            .credentials
            .iter()
            .map(|(username, password)| Credential {
                username: (*username).to_owned(),
                password: (*password).to_owned(),
            })
            .collect();
        match mode {
            AuthMode::AcceptAfterFailures => {
                authentication.accept_all_after_failures = Some(self.accept_after);
            }
            AuthMode::Sticky => {
                authentication.sticky = Some(StickyConfig {
                    min_failures: self.sticky.0,
                    max_failures: self.sticky.1,
                    state_file: base.join("state/sticky.json"),
                    ..StickyConfig::default()
                });
            }
            AuthMode::Static => {}
        }

        let pool = &mut config.container_pool;
        pool.size = self.pool_size;
        pool.image = self.image.clone();
        pool.reuse.enabled = self.reuse;
        pool.reuse.key = spelled::<ReuseKey>("container_pool.reuse.key", self.reuse_key);
        pool.reuse.state_file = base.join("state/containers.json");
        // Most tests of reuse want the box stopped at the end of each session (a
        // test of lingering boxes asks for them with `configure`).
        pool.reuse.linger = Seconds::new(0);

        config.recording.output_dir = paths.recordings.to_owned();
        config.capture.output_dir = base.join("downloads");
        config.docker.base_url = self.docker_url.clone();
        if self.metrics {
            config.metrics.enabled = true;
            config.metrics.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        }

        // The shipped default fetches from the internet: in tests, nothing may leave
        // the machine. Names exist only in a test's own map, and the only upstream
        // ever contacted is a loopback address where nothing listens, unless the test
        // sets up an internet of its own. An engine reached over TCP (another host, as
        // far as Hermes knows) gives boxes no network.
        config.egress.dns.static_only = true;
        config.egress.upstream_allow = vec![nowhere()];
        if self
            .docker_url
            .as_deref()
            .is_some_and(|url| !url.starts_with("unix://"))
        {
            config.egress.mode = EgressMode::Off;
        }

        config.logging.level = LogLevel::Debug;
        config.logging.format = LogFormat::Json;
        config.logging.output_dir = paths.logs.to_owned();

        for change in &self.changes {
            change(&mut config);
        }
        validated(config)
    }
}

/// The upstream the tests' gateways may contact when a test sets up no internet of
/// its own: a loopback address nothing listens on, so every fetch fails at once.
fn nowhere() -> AddressBlock {
    match AddressBlock::parse("127.0.0.254/32") {
        Ok(block) => block,
        Err(e) => panic!("the tests' upstream block: {e}"),
    }
}

/// The value a key takes when the file spells it `text`.
#[track_caller]
fn spelled<T: serde::de::DeserializeOwned>(key: &str, text: &str) -> T {
    match serde_json::from_value(serde_json::Value::String(text.to_owned())) {
        Ok(value) => value,
        Err(e) => panic!("the test's configuration: {key}: {text:?} is not a value of it: {e}"),
    }
}

/// The configuration as `hermes run` reads it back from `to_yaml`: the same load and
/// validation, so a test asking for something invalid fails here with the key and why.
#[track_caller]
fn validated(config: Config) -> Config {
    let yaml = config.to_yaml();
    match hermes_core::config::parse_str(&yaml, "the test's configuration") {
        Ok(loaded) => {
            assert!(
                loaded == config,
                "the test's configuration does not load back as built:\n{yaml}"
            );
            loaded
        }
        Err(e) => panic!("{e}\n{yaml}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(options: &Options) -> Config {
        let base = Path::new("/tmp/hermes-test");
        let (recordings, logs) = (base.join("recordings"), base.join("logs"));
        options.config(
            "test-sensor",
            "web-prod-01",
            &Paths {
                base,
                recordings: &recordings,
                logs: &logs,
            },
        )
    }

    #[test]
    fn the_test_settings_are_in_the_config() {
        let config = build(&Options {
            mode: "sticky",
            sticky: (1, 4),
            metrics: true,
            ..Options::default()
        });
        assert_eq!(config.server.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(config.server.port, 0);
        assert_eq!(config.server.sensor_name.as_deref(), Some("test-sensor"));
        assert_eq!(
            config.server.host_key_path,
            Path::new("/tmp/hermes-test/keys/ssh_host_rsa_key")
        );
        assert_eq!(config.authentication.mode, Some(AuthMode::Sticky));
        let sticky = config.authentication.sticky.expect("sticky settings");
        assert_eq!((sticky.min_failures, sticky.max_failures), (1, 4));
        assert_eq!(
            sticky.state_file,
            Path::new("/tmp/hermes-test/state/sticky.json")
        );
        assert_eq!(config.authentication.static_credentials.len(), 3);
        assert_eq!(config.container_pool.reuse.key, ReuseKey::Source);
        assert!(!config.container_pool.reuse.enabled);
        assert_eq!(
            config.recording.output_dir,
            Path::new("/tmp/hermes-test/recordings")
        );
        assert_eq!(
            config.logging.output_dir,
            Path::new("/tmp/hermes-test/logs")
        );
        assert_eq!(config.logging.level, LogLevel::Debug);
        assert!(config.metrics.enabled);
        assert_eq!(config.metrics.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
    }

    #[test]
    fn changes_apply_in_order_after_the_plain_fields_and_clones_keep_them() {
        let options = Options {
            pool_size: 2,
            ..Options::default()
        }
        .configure(|c| c.container_pool.size = 3)
        .configure(|c| c.container_pool.size += 1)
        .configure(|c| c.server.idle_timeout = Seconds::new(2));
        let config = build(&options.clone());
        assert_eq!(config.container_pool.size, 4);
        assert_eq!(config.server.idle_timeout, Seconds::new(2));
        assert!(format!("{options:?}").contains("changes: 3"), "{options:?}");
    }

    #[test]
    #[should_panic(expected = "container_pool.security.pids_limit")]
    fn an_invalid_change_fails_at_the_test_naming_its_key() {
        build(&Options::default().configure(|c| c.container_pool.security.pids_limit = 1));
    }

    #[test]
    #[should_panic(expected = "authentication.mode")]
    fn a_misspelt_mode_fails_naming_its_key() {
        build(&Options {
            mode: "stiky",
            ..Options::default()
        });
    }
}
