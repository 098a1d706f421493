//! Reading a configuration file into [`Config`], with every problem reported as key path,
//! line and column.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use serde_saphyr::path_map::PathKind;

use super::{Config, set_aside};

/// Configuration files larger than this are refused before parsing.
const MAX_CONFIG_BYTES: usize = 1 << 20;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, e.g. `container_pool.security.memory_limit`; `.` for the root.
    pub path: String,
    /// 1-based line, 0 when unknown.
    pub line: u64,
    /// 1-based column, 0 when unknown.
    pub column: u64,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}, column {}: ", self.line, self.column)?;
        }
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("{origin}: invalid configuration:\n{}", render_issues(.issues))]
    Invalid {
        /// The file (or `<input>`).
        origin: String,
        /// Every problem found.
        issues: Vec<ConfigIssue>,
    },
}

impl ConfigError {
    /// The problems found, empty for a read error.
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { issues, .. } => issues,
        }
    }
}

fn render_issues(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|issue| format!("  {issue}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let origin = path.display().to_string();
    let text = String::from_utf8(bytes).map_err(|e| ConfigError::Invalid {
        origin: origin.clone(),
        issues: vec![issue_at_byte(
            e.as_bytes(),
            e.utf8_error().valid_up_to(),
            "the file is not valid UTF-8",
        )],
    })?;
    parse_str(&text, &origin)
}

/// Parses and validates configuration text; `origin` names it in errors.
pub fn parse_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let invalid = |issues| ConfigError::Invalid {
        origin: origin.to_owned(),
        issues,
    };
    if text.len() > MAX_CONFIG_BYTES {
        return Err(invalid(vec![ConfigIssue {
            path: ".".to_owned(),
            line: 0,
            column: 0,
            message: format!("the file is larger than {MAX_CONFIG_BYTES} bytes"),
        }]));
    }
    if has_no_content(text) {
        return Err(invalid(vec![ConfigIssue {
            path: ".".to_owned(),
            line: 1,
            column: 1,
            message:
                "the file is empty; write at least one section (see config/hermes.example.yaml)"
                    .to_owned(),
        }]));
    }

    // First pass: structure and types (sizes, durations, addresses are parsed here).
    // Deserializing stops at the first failure; a failure on a one-line value is set
    // aside and its line blanked (the others keep their numbers), and the file is read
    // again, so that every such problem is reported at once.
    let mut text = Cow::Borrowed(text);
    let mut issues = Vec::new();
    loop {
        let mut failed_path = String::new();
        let parsed: Result<Config, serde_saphyr::Error> =
            serde_saphyr::with_deserializer_from_str_with_options(&text, options(), |de| {
                serde_path_to_error::deserialize(de).map_err(|e| {
                    failed_path = e.path().to_string();
                    e.into_inner()
                })
            });
        let Err(error) = parsed else { break };
        let issue = structural_issue(&error, &failed_path);
        // A section left without keys by a blanked line is not a problem of its own.
        let emptied = issues.iter().any(|earlier: &ConfigIssue| {
            earlier
                .path
                .strip_prefix(issue.path.as_str())
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        });
        let blanked = if emptied {
            set_aside::blank_section_line(&text, &issue)
        } else if issues.len() < MAX_SET_ASIDE {
            let blanked = set_aside::blank_value_line(&text, &issue);
            issues.push(issue);
            blanked
        } else {
            issues.push(issue);
            None
        };
        match blanked {
            Some(next) => text = Cow::Owned(next),
            None => return Err(invalid(sorted(issues))),
        }
    }

    // Second pass: value rules (ranges, formats), every failure with its location.
    match serde_saphyr::from_str_with_options_valid::<Config>(&text, options()) {
        Ok(config) if issues.is_empty() => Ok(config),
        Ok(_) => Err(invalid(sorted(issues))),
        Err(error) => {
            issues.extend(validation_issues(&error));
            Err(invalid(sorted(issues)))
        }
    }
}

/// Values set aside in the first pass before the rest is given up on.
const MAX_SET_ASIDE: usize = 32;

fn sorted(mut issues: Vec<ConfigIssue>) -> Vec<ConfigIssue> {
    issues.sort_by_key(|issue| (issue.line, issue.column));
    issues
}

fn options() -> serde_saphyr::options::Options {
    let mut options = serde_saphyr::options::Options::default();
    options.with_snippet = false;
    options
}

/// True when the text holds nothing but blank lines, comments and document markers.
fn has_no_content(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

fn structural_issue(error: &serde_saphyr::Error, failed_path: &str) -> ConfigIssue {
    let message = strip_location(&error.to_string());
    let mut path = if failed_path.is_empty() {
        ".".to_owned()
    } else {
        failed_path.to_owned()
    };
    // serde_path_to_error cannot name a duplicated key: take it from the message.
    if let Some(key) = message
        .strip_prefix("duplicate mapping key: ")
        .and_then(|rest| rest.split(',').next())
    {
        path = match path.strip_suffix('?') {
            Some(parent) => format!("{parent}{key}"),
            None => key.to_owned(),
        };
    }
    let (line, column) = error
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    ConfigIssue {
        path,
        line,
        column,
        message,
    }
}

fn validation_issues(error: &serde_saphyr::Error) -> Vec<ConfigIssue> {
    match error.without_snippet() {
        serde_saphyr::Error::ValidationError {
            issues, locations, ..
        } => issues
            .iter()
            .map(|issue| {
                let (line, column) = locations
                    .locations_for(&issue.path)
                    .and_then(|l| l.primary_location())
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((0, 0));
                ConfigIssue {
                    path: render_path(&issue.path),
                    line,
                    column,
                    message: issue.message.clone().unwrap_or_else(|| issue.code.clone()),
                }
            })
            .collect(),
        serde_saphyr::Error::ValidationErrors { errors, .. } => {
            errors.iter().flat_map(validation_issues).collect()
        }
        other => vec![structural_issue(other, "")],
    }
}

fn render_path(path: &serde_saphyr::path_map::PathKey) -> String {
    let mut out = String::new();
    for (kind, segment) in path.segments() {
        match kind {
            PathKind::Key => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(segment);
            }
            PathKind::Index => {
                out.push('[');
                out.push_str(segment);
                out.push(']');
            }
        }
    }
    if out.is_empty() { ".".to_owned() } else { out }
}

/// serde-saphyr appends " at line L, column C"; the issue carries those separately.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

fn issue_at_byte(bytes: &[u8], offset: usize, message: &str) -> ConfigIssue {
    let before = bytes.get(..offset).unwrap_or(bytes);
    ConfigIssue {
        path: ".".to_owned(),
        line: before.iter().filter(|&&b| b == b'\n').count() as u64 + 1,
        column: 0,
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ByteSize, Days, Millis, Seconds};

    fn issues(text: &str) -> Vec<ConfigIssue> {
        match parse_str(text, "test.yaml") {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.issues().to_vec(),
        }
    }

    #[test]
    fn the_prototype_example_config_loads() {
        let text = include_str!("../../tests/data/prototype-config.example.yaml");
        let config = parse_str(text, "example").expect("prototype config loads");
        assert_eq!(config.server.port, 2222);
        assert_eq!(config.authentication.static_credentials.len(), 7);
        assert_eq!(
            config.container_pool.security.memory_limit,
            ByteSize::mib(256)
        );
    }

    #[test]
    fn unknown_key_names_path_and_line() {
        let found = issues("server:\n  port: 22\n  colour: blue\n");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "server.colour");
        assert_eq!((found[0].line, found[0].column), (3, 3));
        assert!(
            found[0].message.contains("unknown field"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn unknown_nested_key_is_rejected() {
        let found = issues("container_pool:\n  security:\n    capabilities:\n      keep: [ALL]\n");
        assert_eq!(found[0].path, "container_pool.security.capabilities.keep");
        assert_eq!(found[0].line, 4);
    }

    #[test]
    fn the_boxs_sshd_serves_sessions_only_where_the_box_has_a_network_and_chroot() {
        let parse = |text: &str| parse_str(text, "test.yaml").expect("loads");
        assert_eq!(parse("server:\n  port: 22\n").box_sshd_unavailable(), None);
        let why = |text: &str| parse(text).box_sshd_unavailable().unwrap_or_default();
        assert!(why("container_pool:\n  session_server: engine\n").contains("engine"));
        assert!(why("egress:\n  mode: \"off\"\n").contains("egress is off"));
        // The compose deployment's narrow set.
        let narrow =
            "container_pool:\n  security:\n    capabilities:\n      add: [CHOWN, SETUID, SETGID]\n";
        assert!(why(narrow).contains("SYS_CHROOT"));
        let prefixed = "container_pool:\n  security:\n    capabilities:\n      add: [SYS_CHROOT]\n";
        assert_eq!(parse(prefixed).box_sshd_unavailable(), None);
        let engine_defaults = "container_pool:\n  security:\n    capabilities:\n      drop: [NET_RAW]\n      add: []\n";
        assert_eq!(parse(engine_defaults).box_sshd_unavailable(), None);
    }

    #[test]
    fn a_required_boot_clock_under_another_runtime_names_key_and_line() {
        let found =
            issues("container_pool:\n  security:\n    runtime: runsc\n    boot_clock: required\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "container_pool.security.boot_clock");
        assert_eq!(found[0].line, 4);
        assert!(found[0].message.contains("runsc"), "{found:?}");
        let found = issues("container_pool:\n  security:\n    boot_clock: sometimes\n");
        assert_eq!(found[0].path, "container_pool.security.boot_clock");
        let auto = "container_pool:\n  security:\n    runtime: runsc\n    boot_clock: auto\n";
        assert!(parse_str(auto, "test.yaml").is_ok());
    }

    #[test]
    fn wrong_type_names_path_and_line() {
        let found = issues("container_pool:\n  size: three\n");
        assert_eq!(found[0].path, "container_pool.size");
        assert_eq!(found[0].line, 2);
    }

    #[test]
    fn a_static_dns_name_that_is_no_name_names_key_and_line() {
        let found = issues(
            "egress:\n  dns:\n    static_hosts:\n      ok.test: 192.0.2.1\n      \"bad name\": 192.0.2.2\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "egress.dns.static_hosts");
        assert!(found[0].line >= 3, "{found:?}");
        assert!(found[0].message.contains("bad name"), "{found:?}");
    }

    #[test]
    fn every_out_of_range_value_is_reported() {
        let found = issues(
            "server:\n  session_timeout: 0\ncontainer_pool:\n  size: 0\n  security:\n    memory_limit: lots\n",
        );
        let paths: Vec<_> = found.iter().map(|i| (i.path.as_str(), i.line)).collect();
        assert!(paths.contains(&("server.session_timeout", 2)), "{paths:?}");
        assert!(paths.contains(&("container_pool.size", 4)), "{paths:?}");
        assert!(
            paths.contains(&("container_pool.security.memory_limit", 6)),
            "{paths:?}"
        );
    }

    #[test]
    fn port_zero_loads_for_ssh_and_metrics_alike() {
        let config = parse_str(
            "server:\n  port: 0\nmetrics:\n  enabled: true\n  listen: 127.0.0.1:0\n",
            "test.yaml",
        )
        .expect("port 0 (any free port) loads");
        assert_eq!(config.server.port, 0);
        assert_eq!(config.metrics.listen.port(), 0);
    }

    #[test]
    fn metrics_never_take_the_ssh_address() {
        let found = issues(
            "server:\n  host: 0.0.0.0\n  port: 2222\nmetrics:\n  enabled: true\n  listen: 127.0.0.1:2222\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "metrics");
        assert_eq!(found[0].line, 5);
        assert!(found[0].message.contains("SSH listener"), "{found:?}");
        // Another address, another port, or metrics off: all fine.
        for text in [
            "server:\n  host: 127.0.0.1\n  port: 2222\nmetrics:\n  enabled: true\n  listen: 127.0.0.2:2222\n",
            "server:\n  port: 2222\nmetrics:\n  enabled: true\n  listen: 127.0.0.1:9464\n",
            "server:\n  port: 2222\nmetrics:\n  enabled: false\n  listen: 127.0.0.1:2222\n",
        ] {
            parse_str(text, "test.yaml").unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn proxy_protocol_needs_valid_trusted_balancers() {
        let found = issues("server:\n  proxy_protocol: true\n");
        assert_eq!(found[0].path, "server", "{found:?}");
        assert!(found[0].message.contains("proxy_trusted"), "{found:?}");
        let found = issues(
            "server:\n  proxy_protocol: true\n  proxy_trusted:\n    - 10.0.0.0/8\n    - 10.0.0.0/33\n",
        );
        assert_eq!(found[0].path, "server.proxy_trusted[1]", "{found:?}");
        assert_eq!(found[0].line, 5, "{found:?}");
        let good = "server:\n  proxy_protocol: true\n  proxy_trusted: [\"::1\", 10.1.2.3]\n";
        assert!(parse_str(good, "test.yaml").is_ok());
    }

    #[test]
    fn the_nice_value_is_one_the_kernel_has() {
        for bad in ["-21", "20", "\"high\""] {
            let found = issues(&format!("server:\n  port: 22\n  nice: {bad}\n"));
            assert_eq!(found[0].path, "server.nice", "{bad}: {found:?}");
            assert_eq!(found[0].line, 3, "{bad}: {found:?}");
        }
        let config = parse_str("server:\n  nice: -20\n", "test.yaml").expect("loads");
        assert_eq!(config.server.nice, -20);
        let config = parse_str("server:\n  port: 22\n", "test.yaml").expect("loads");
        assert_eq!(config.server.nice, -10);
    }

    #[test]
    fn penalties_and_eviction_are_checked() {
        let found = issues(
            "server:\n  startup_idle: 0\n  refused_event_interval: 0\n  penalties:\n    min: 60\n    max: 30\n    max_sources: 0\n",
        );
        let paths: Vec<_> = found.iter().map(|i| (i.path.as_str(), i.line)).collect();
        assert!(paths.contains(&("server.startup_idle", 2)), "{paths:?}");
        assert!(
            paths.contains(&("server.refused_event_interval", 3)),
            "{paths:?}"
        );
        assert!(paths.contains(&("server.penalties.max", 6)), "{paths:?}");
        assert!(
            paths.contains(&("server.penalties.max_sources", 7)),
            "{paths:?}"
        );
        let good = "server:\n  evict_stalled_startups: false\n  penalties:\n    enabled: false\n    noauth: 0\n";
        let config = parse_str(good, "test.yaml").expect("loads");
        assert!(!config.server.evict_stalled_startups);
        assert_eq!(config.server.penalties.noauth, Seconds::new(0));
    }

    #[test]
    fn login_name_lists_are_checked() {
        let found = issues("authentication:\n  usernames:\n    plausible: [root, \"Bad Name\"]\n");
        assert_eq!(
            found[0].path, "authentication.usernames.plausible",
            "{found:?}"
        );
        assert_eq!(found[0].line, 3, "{found:?}");
        assert!(found[0].message.contains("Bad Name"), "{found:?}");
        let found = issues("authentication:\n  usernames:\n    plausible: []\n");
        assert_eq!(
            found[0].path, "authentication.usernames.plausible",
            "{found:?}"
        );
        let found = issues("authentication:\n  usernames:\n    policy: anyone\n");
        assert_eq!(
            found[0].path, "authentication.usernames.policy",
            "{found:?}"
        );
        assert_eq!(found[0].line, 3, "{found:?}");
        let config = parse_str(
            "authentication:\n  usernames:\n    policy: any\n    plausible: [root, svc-1]\n",
            "test.yaml",
        )
        .expect("loads");
        assert_eq!(config.authentication.usernames.plausible, ["root", "svc-1"]);
        let config = parse_str("server:\n  port: 22\n", "test.yaml").expect("loads");
        assert_eq!(
            config.authentication.usernames.policy,
            super::super::UsernamePolicy::Plausible
        );
    }

    #[test]
    fn log_destinations_are_checked() {
        let found = issues("logging:\n  destinations: []\n");
        assert_eq!(found[0].path, "logging.destinations", "{found:?}");
        let found = issues("logging:\n  destinations: [stdout, syslog]\n");
        assert_eq!(found[0].path, "logging.destinations[1]", "{found:?}");
        assert_eq!(found[0].line, 2, "{found:?}");
    }

    /// Parse errors of typed values (raised while deserializing, not in validation)
    /// still name the key and its line.
    #[test]
    fn malformed_typed_values_name_key_and_line() {
        for (text, path, line, words) in [
            (
                "server:\n  port: 22\ncontainer_pool:\n  security:\n    tmpfs_size: 50mb\n",
                "container_pool.security.tmpfs_size",
                5,
                "k, m or g suffix",
            ),
            (
                "capture:\n  max_store_size: 2048\n",
                "capture.max_store_size",
                2,
                "k, m or g suffix",
            ),
            (
                "server:\n  port: 22\n  session_timeout: an hour\n",
                "server.session_timeout",
                3,
                "seconds",
            ),
            (
                "persona:\n  auth_failure_delay_ms: -5\n",
                "persona.auth_failure_delay_ms",
                2,
                "negative",
            ),
            (
                "container_pool:\n  cleanup_stopped_after_days: 36h\n",
                "container_pool.cleanup_stopped_after_days",
                2,
                "days",
            ),
            (
                "server:\n  max_startups: \"10:30\"\n",
                "server.max_startups",
                2,
                "start:rate:full",
            ),
            (
                "server:\n  proxy_protocol: true\n  proxy_trusted:\n    - 10.0.0.0/8\n    - 10.0.0.0/33\n",
                "server.proxy_trusted[1]",
                5,
                "prefix length",
            ),
        ] {
            let found = issues(text);
            assert_eq!(found.len(), 1, "{text}: {found:?}");
            assert_eq!(found[0].path, path, "{text}: {found:?}");
            assert_eq!(found[0].line, line, "{text}: {found:?}");
            assert!(found[0].message.contains(words), "{text}: {found:?}");
            let shown = ConfigError::Invalid {
                origin: "t".to_owned(),
                issues: found,
            }
            .to_string();
            assert!(shown.contains(&format!("line {line}")), "{shown}");
        }
    }

    #[test]
    fn bad_cpu_pinning_and_lxcfs_values_name_key_and_line() {
        for (text, path, line) in [
            (
                "container_pool:\n  security:\n    cpu_pinning: round_robin\n",
                "container_pool.security.cpu_pinning",
                3,
            ),
            (
                "container_pool:\n  security:\n    lxcfs:\n      mode: maybe\n",
                "container_pool.security.lxcfs.mode",
                4,
            ),
            (
                "container_pool:\n  security:\n    lxcfs:\n      mode: auto\n      path: lib/lxcfs\n",
                "container_pool.security.lxcfs.path",
                5,
            ),
            (
                "container_pool:\n  security:\n    lxcfs:\n      path: /var/lib/../lxcfs\n",
                "container_pool.security.lxcfs.path",
                4,
            ),
            (
                "container_pool:\n  security:\n    lxcfs:\n      enable: true\n",
                "container_pool.security.lxcfs.enable",
                4,
            ),
        ] {
            let found = issues(text);
            assert_eq!(found.len(), 1, "{text}: {found:?}");
            assert_eq!(found[0].path, path, "{text}: {found:?}");
            assert_eq!(found[0].line, line, "{text}: {found:?}");
        }
        let config = parse_str(
            "container_pool:\n  security:\n    cpu_pinning: \"off\"\n    lxcfs:\n      mode: required\n      path: /run/lxcfs\n",
            "t",
        )
        .expect("loads");
        let security = &config.container_pool.security;
        assert_eq!(security.cpu_pinning, crate::config::CpuPinning::Off);
        assert_eq!(security.lxcfs.mode, crate::config::LxcfsMode::Required);
        assert_eq!(security.lxcfs.path, std::path::Path::new("/run/lxcfs"));
    }

    #[test]
    fn typed_values_load_from_the_files_syntax() {
        let config = parse_str(
            "server:\n  session_timeout: 3600\n  idle_timeout: 15m\n  max_startups: 20\n  proxy_trusted: [10.1.2.3/8]\npersona:\n  auth_failure_delay_ms: 2000\n  login_grace_time: \"2m\"\ncontainer_pool:\n  cleanup_stopped_after_days: 7\n  security:\n    memory_limit: 1G\n",
            "t",
        )
        .expect("loads");
        assert_eq!(config.server.session_timeout, Seconds::new(3600));
        assert_eq!(config.server.idle_timeout, Seconds::new(900));
        assert_eq!(config.server.max_startups.to_string(), "20:100:20");
        assert_eq!(config.server.proxy_trusted[0].to_string(), "10.0.0.0/8");
        assert_eq!(config.persona.auth_failure_delay_ms, Millis::new(2000));
        assert_eq!(config.persona.login_grace_time, Seconds::new(120));
        assert_eq!(
            config.container_pool.cleanup_stopped_after_days,
            Days::new(7)
        );
        assert_eq!(
            config.container_pool.security.memory_limit,
            ByteSize::gib(1)
        );
    }

    /// What `hermes check-config` prints loads back to the same configuration.
    #[test]
    fn the_effective_configuration_loads_back_unchanged() {
        let config = parse_str(
            "server:\n  idle_timeout: 1h\n  max_startups: \"5:50:60\"\n  proxy_protocol: true\n  proxy_trusted: [\"::1\", 192.0.2.7/24]\ncapture:\n  max_file_size: 1536k\nforwarding:\n  capture_bytes: 1024k\n",
            "t",
        )
        .expect("loads");
        let again = parse_str(&config.to_yaml(), "effective").expect("reloads");
        assert_eq!(again, config);
        assert_eq!(
            parse_str(&Config::default().to_yaml(), "defaults").expect("defaults reload"),
            Config::default()
        );
    }

    #[test]
    fn a_set_aside_value_never_leaves_a_fragment_behind() {
        // The item goes on below its first line: only its own problem is reported.
        let found = issues(
            "authentication:\n  static_credentials:\n    - username: root\n      colour: blue\n    - username: admin\n      password: admin\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "authentication.static_credentials[0].colour");
        // Two malformed values in one section are both named, and nothing else.
        let found = issues(
            "container_pool:\n  security:\n    memory_limit: lots\n    disk_limit: plenty\n",
        );
        let paths: Vec<_> = found.iter().map(|i| (i.path.as_str(), i.line)).collect();
        assert_eq!(
            paths,
            [
                ("container_pool.security.memory_limit", 3),
                ("container_pool.security.disk_limit", 4)
            ]
        );
    }

    #[test]
    fn duplicate_key_is_reported_with_its_name() {
        let found = issues("server:\n  port: 22\n  port: 23\n");
        assert_eq!(found[0].path, "server.port");
        assert_eq!(found[0].line, 3);
        assert!(found[0].message.contains("duplicate"));
    }

    #[test]
    fn empty_and_comment_only_files_are_refused() {
        for text in ["", "\n\n", "# nothing\n---\n"] {
            let found = issues(text);
            assert_eq!(found[0].path, ".");
            assert!(found[0].message.contains("empty"));
        }
    }

    #[test]
    fn a_document_that_is_not_a_mapping_is_refused() {
        let found = issues("- server\n");
        assert_eq!(found[0].line, 1);
    }

    #[test]
    fn numeric_passwords_load_as_text() {
        let config = parse_str(
            "authentication:\n  static_credentials:\n    - {username: root, password: 123456}\n",
            "t",
        )
        .expect("loads");
        assert_eq!(
            config.authentication.static_credentials[0].password,
            "123456"
        );
    }

    #[test]
    fn billion_laughs_is_refused_not_expanded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let found = issues(&text);
        assert!(!found.is_empty());
    }

    #[test]
    fn invalid_utf8_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, b"server:\n  host: \xff\n").expect("write");
        let err = load_file(&path).expect_err("invalid utf-8");
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }
}
