//! The `hermes` command line without Docker: config checking and bad input.

use std::path::Path;
use std::process::{Command, Output};

fn hermes(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hermes"))
        .args(args)
        .output()
        .expect("run hermes")
}

fn check(yaml: &[u8]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).expect("write");
    let output = hermes(&[
        "check-config",
        "--config",
        path.to_str().expect("utf-8 path"),
    ]);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn malformed_configs_exit_2_naming_key_and_line() {
    let cases: &[(&str, &[u8], &[&str])] = &[
        (
            "unknown key",
            b"server:\n  port: 2222\n  colour: blue\n",
            &["server.colour", "line 3", "unknown field"],
        ),
        (
            "unknown nested key",
            b"container_pool:\n  security:\n    memory_limit: 256m\n    apparmor: off\n",
            &["container_pool.security.apparmor", "line 4"],
        ),
        (
            "unknown seccomp profile",
            b"container_pool:\n  security:\n    memory_limit: 256m\n    seccomp: off\n",
            &["container_pool.security.seccomp", "line 4", "hermes", "docker-default"],
        ),
        (
            "seccomp in security_opt",
            b"container_pool:\n  security:\n    security_opt:\n      - \"seccomp=/etc/p.json\"\n",
            &["container_pool.security.security_opt", "line 4", "container_pool.security.seccomp"],
        ),
        ("wrong type", b"container_pool:\n  size: three\n", &["container_pool.size", "line 2"]),
        (
            "out of range",
            b"server:\n  port: 22\n  session_timeout: 0\ncontainer_pool:\n  security:\n    cpu_quota: 99\n",
            &["server.session_timeout", "line 3", "container_pool.security.cpu_quota", "line 6"],
        ),
        ("port out of range", b"server:\n  port: 70000\n", &["server.port", "line 2"]),
        (
            "unknown forwarding mode",
            b"forwarding:\n  direct_tcpip: proxy\n",
            &["forwarding.direct_tcpip", "line 2", "refuse", "capture"],
        ),
        (
            "bad capture size",
            b"forwarding:\n  direct_tcpip: capture\n  capture_bytes: a lot\n",
            &["forwarding.capture_bytes", "line 3"],
        ),
        (
            "keepalive count out of range",
            b"persona:\n  client_alive_interval: 15\n  client_alive_count_max: 0\n",
            &["persona.client_alive_count_max", "line 3"],
        ),
        (
            "max sessions out of range",
            b"persona:\n  max_sessions: 0\n",
            &["persona.max_sessions", "line 2"],
        ),
        ("duplicate key", b"server:\n  port: 22\n  port: 23\n", &["server.port", "line 3", "duplicate"]),
        (
            "unknown rotation",
            b"logging:\n  event_rotation: weekly\n",
            &["logging.event_rotation", "line 2", "daily"],
        ),
        (
            "bad rotation size",
            b"logging:\n  event_rotation: size\n  event_rotation_size: big\n",
            &["logging.event_rotation_size", "line 3"],
        ),
        (
            "bad event backlog size",
            b"logging:\n  event_backlog_size: 0k\n",
            &["logging.event_backlog_size", "line 2"],
        ),
        (
            "bad capture size",
            b"capture:\n  max_file_size: huge\n",
            &["capture.max_file_size", "line 2"],
        ),
        (
            "capture file count out of range",
            b"capture:\n  max_files_per_session: 0\n",
            &["capture.max_files_per_session", "line 2"],
        ),
        (
            "unknown capture key",
            b"capture:\n  follow_symlinks: yes\n",
            &["capture.follow_symlinks", "line 2"],
        ),
        ("empty file", b"", &["empty", "line 1"]),
        ("only comments", b"# nothing here\n", &["empty"]),
        ("not a mapping", b"- server\n", &["line 1"]),
        ("broken yaml", b"server: [1, 2\n", &["line 1"]),
        ("not utf-8", b"server:\n  host: \"\xff\"\n", &["UTF-8", "line 2"]),
        (
            "bad memory size",
            b"container_pool:\n  security:\n    memory_limit: lots\n",
            &["container_pool.security.memory_limit", "line 3"],
        ),
        (
            "unsafe network",
            b"container_pool:\n  security:\n    network_mode: host\n",
            &["container_pool.security.network_mode", "line 3"],
        ),
        (
            "unimplemented algorithm",
            b"persona:\n  kex_algorithms: [curve25519-sha256, sntrup761x25519-sha512]\n",
            &["persona.kex_algorithms", "line 2", "sntrup761x25519-sha512"],
        ),
        (
            "setting of another mode",
            b"authentication:\n  mode: static\n  accept_all_after_failures: 3\n",
            &["authentication", "accept_after_failures"],
        ),
        (
            "bad max_startups",
            b"server:\n  max_startups: \"100:30:10\"\n",
            &["server.max_startups", "line 2"],
        ),
        (
            "credential without password",
            b"authentication:\n  static_credentials:\n    - username: root\n",
            &["authentication.static_credentials[0]", "password"],
        ),
    ];
    for (name, yaml, expected) in cases {
        let (code, stdout, stderr) = check(yaml);
        assert_eq!(code, Some(2), "{name}: exit code; stderr: {stderr}");
        assert!(stdout.is_empty(), "{name}: nothing on stdout");
        for needle in *expected {
            assert!(
                stderr.contains(needle),
                "{name}: `{needle}` missing from:\n{stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
}

#[test]
fn every_value_error_is_reported_at_once() {
    let (code, _, stderr) = check(
        b"server:\n  session_timeout: 0\ncontainer_pool:\n  size: 0\n  spawn_timeout: 1\n  security:\n    pids_limit: 1\n",
    );
    assert_eq!(code, Some(2));
    for key in [
        "server.session_timeout",
        "container_pool.size",
        "container_pool.spawn_timeout",
        "container_pool.security.pids_limit",
    ] {
        assert!(stderr.contains(key), "{key} missing:\n{stderr}");
    }
}

#[test]
fn a_valid_config_prints_the_effective_configuration() {
    let (code, stdout, stderr) = check(b"server:\n  port: 2200\n");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("port: 2200"), "{stdout}");
    // Defaults are filled in.
    assert!(stdout.contains("memory_limit: 256m"), "{stdout}");
    assert!(stdout.contains("max_startups: 10:30:100"), "{stdout}");
    assert!(stdout.contains("- curve25519-sha256"), "{stdout}");
}

/// check-config tells the operator whether LXCFS is usable where the config says.
#[test]
fn check_config_says_whether_lxcfs_is_usable() {
    let empty = tempfile::tempdir().expect("tempdir");
    let dir = empty.path().to_str().expect("utf-8");
    for (mode, words) in [
        ("auto", "lxcfs: NOT usable"),
        ("required", "refuses to start"),
        ("\"off\"", "lxcfs: off"),
    ] {
        let yaml = format!(
            "container_pool:\n  security:\n    lxcfs:\n      mode: {mode}\n      path: {dir}\n"
        );
        let (code, _, stderr) = check(yaml.as_bytes());
        assert_eq!(code, Some(0), "{mode}: {stderr}");
        assert!(stderr.contains(words), "{mode}: {stderr}");
    }
}

#[test]
fn port_zero_is_accepted_for_ssh_and_metrics() {
    let (code, stdout, stderr) =
        check(b"server:\n  port: 0\nmetrics:\n  enabled: true\n  listen: 127.0.0.1:0\n");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("port: 0"), "{stdout}");
    assert!(stdout.contains("listen: 127.0.0.1:0"), "{stdout}");
}

#[test]
fn the_shipped_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for file in [
        "config/hermes.yaml",
        "config/hermes.example.yaml",
        "deploy/compose/hermes.yaml",
    ] {
        let path = root.join(file);
        let output = hermes(&["check-config", "--config", path.to_str().expect("utf-8")]);
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn run_refuses_a_bad_config_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "logging:\n  level: LOUD\n").expect("write");
    let output = hermes(&["run", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("logging.level") && stderr.contains("line 2"),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let output = hermes(&["check-config", "--config", "/nonexistent/hermes.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot read /nonexistent/hermes.yaml")
    );
}

#[test]
fn version_and_log_level_flags() {
    let output = hermes(&["--version"]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("hermes {}", env!("CARGO_PKG_VERSION"))
    );
    let output = hermes(&["--log-level", "LOUD", "check-config"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "clap rejects an unknown level"
    );
}

/// Sizes, durations, `max_startups` and address blocks are parsed at load: a value
/// that does not parse is named with its key and line like any other problem.
#[test]
fn malformed_typed_values_exit_2_naming_key_and_line() {
    let cases: &[(&str, &[u8], &[&str])] = &[
        (
            "size without a unit",
            b"container_pool:\n  max_stopped_disk: 20480\n",
            &["container_pool.max_stopped_disk", "line 2", "k, m or g suffix"],
        ),
        (
            "size with a unit the syntax lacks",
            b"recording:\n  max_recording_size: 1t\n",
            &["recording.max_recording_size", "line 2", "k, m or g suffix"],
        ),
        (
            "duration in words",
            b"server:\n  port: 2222\n  idle_timeout: fifteen minutes\n",
            &["server.idle_timeout", "line 3", "seconds"],
        ),
        (
            "duration finer than the key's unit",
            b"persona:\n  login_grace_time: 1500ms\n",
            &["persona.login_grace_time", "line 2", "whole number of seconds"],
        ),
        (
            "negative duration",
            b"forwarding:\n  capture_seconds: -1\n",
            &["forwarding.capture_seconds", "line 2", "negative"],
        ),
        (
            "max_startups with two fields",
            b"server:\n  max_startups: \"10:30\"\n",
            &["server.max_startups", "line 2", "start:rate:full"],
        ),
        (
            "address block with a bad prefix",
            b"server:\n  proxy_protocol: true\n  proxy_trusted:\n    - 10.0.0.0/8\n    - 192.0.2.0/40\n",
            &["server.proxy_trusted[1]", "line 5", "prefix length"],
        ),
        (
            "address block that is a host name",
            b"server:\n  proxy_protocol: true\n  proxy_trusted: [balancer.internal]\n",
            &["server.proxy_trusted[0]", "line 3", "IP address or CIDR block"],
        ),
    ];
    for (name, yaml, expected) in cases {
        let (code, stdout, stderr) = check(yaml);
        assert_eq!(code, Some(2), "{name}: exit code; stderr: {stderr}");
        assert!(stdout.is_empty(), "{name}: nothing on stdout");
        for needle in *expected {
            assert!(
                stderr.contains(needle),
                "{name}: `{needle}` missing from:\n{stderr}"
            );
        }
    }
}

/// A value that does not parse stops deserializing; the rest of the file is still
/// checked, so every problem is reported at once.
#[test]
fn a_malformed_value_does_not_hide_the_others() {
    let (code, _, stderr) = check(
        b"server:\n  session_timeout: 0\n  idle_timeout: soon\ncontainer_pool:\n  size: 0\n  security:\n    memory_limit: lots\n    pids_limit: 1\n",
    );
    assert_eq!(code, Some(2));
    for (key, line) in [
        ("server.session_timeout", "line 2"),
        ("server.idle_timeout", "line 3"),
        ("container_pool.size", "line 5"),
        ("container_pool.security.memory_limit", "line 7"),
        ("container_pool.security.pids_limit", "line 8"),
    ] {
        let reported = stderr
            .lines()
            .any(|l| l.contains(key) && l.contains(&format!("{line},")));
        assert!(reported, "{key} at {line} missing:\n{stderr}");
    }
    // Only the keys named: no section is blamed for a value set aside inside it.
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.trim_start().starts_with("line "))
            .count(),
        5,
        "{stderr}"
    );
}

/// What `hermes run` would refuse at start on the configuration alone, check-config
/// refuses too, naming the key.
#[test]
fn check_config_refuses_what_run_would_refuse() {
    let cases: &[(&str, &[u8], &[&str])] = &[
        (
            "metrics on the SSH address",
            b"server:\n  host: 0.0.0.0\n  port: 2222\nmetrics:\n  enabled: true\n  listen: 127.0.0.1:2222\n",
            &["metrics", "line 5", "SSH listener"],
        ),
        (
            "PROXY protocol without trusted balancers",
            b"server:\n  proxy_protocol: true\n",
            &["server", "proxy_trusted"],
        ),
        (
            "https engine without tls",
            b"docker:\n  base_url: https://engine.internal:2376\n",
            &["docker", "line 2", "base_url", "needs `tls`"],
        ),
        (
            "stream address over https without tls",
            b"docker:\n  base_url: tcp://127.0.0.1:2375\n  stream_url: https://127.0.0.1:2376\n",
            &["docker", "stream_url", "needs `tls`"],
        ),
        (
            "plain http engine with tls",
            b"docker:\n  base_url: http://127.0.0.1:2375\n  tls:\n    ca: /certs/ca.pem\n    cert: /certs/cert.pem\n    key: /certs/key.pem\n",
            &["docker", "line 2", "plain HTTP"],
        ),
        (
            "host key path naming the Ed25519 sibling",
            b"server:\n  host_key_path: /data/keys/ssh_host_ed25519_key\n",
            &["server.host_key_path", "line 2", "Ed25519"],
        ),
        (
            "host key path naming no file",
            b"server:\n  host_key_path: /\n",
            &["server.host_key_path", "line 2", "must name a file"],
        ),
        (
            "egress with the engine over TCP, not said to be on this machine",
            b"docker:\n  base_url: tcp://socket-proxy:2375\negress:\n  mode: sinkhole\n",
            &["egress", "line 4", "docker.same_host: true", "another host"],
        ),
    ];
    for (name, yaml, expected) in cases {
        let (code, stdout, stderr) = check(yaml);
        assert_eq!(code, Some(2), "{name}: exit code; stderr: {stderr}");
        assert!(stdout.is_empty(), "{name}: nothing on stdout");
        for needle in *expected {
            assert!(
                stderr.contains(needle),
                "{name}: `{needle}` missing from:\n{stderr}"
            );
        }
    }
    // `run` loads through the same check: it refuses before touching Docker.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("https.yaml");
    std::fs::write(&path, "docker:\n  base_url: https://engine.internal:2376\n").expect("write");
    let output = hermes(&["run", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("needs `tls`"));
    // The same addresses with what they need are accepted: an engine over TCP
    // with the boxes' network off (another host), or said to be this machine's.
    for yaml in [
        &b"docker:\n  base_url: https://engine.internal:2376\n  tls:\n    ca: /certs/ca.pem\n    cert: /certs/cert.pem\n    key: /certs/key.pem\negress:\n  mode: \"off\"\n"[..],
        b"docker:\n  base_url: http://127.0.0.1:2375\negress:\n  mode: \"off\"\n",
        b"docker:\n  base_url: http://127.0.0.1:2375\n  same_host: true\n",
        b"server:\n  host_key_path: /data/keys/my_rsa_key\n",
    ] {
        let (code, _, stderr) = check(yaml);
        assert_eq!(code, Some(0), "{}: {stderr}", String::from_utf8_lossy(yaml));
    }
}

/// The effective configuration check-config prints is itself a valid file that
/// prints the same; durations come out as bare numbers in their key's unit.
#[test]
fn the_printed_configuration_checks_back_the_same() {
    let (code, first, stderr) = check(
        b"server:\n  idle_timeout: 15m\n  max_startups: 20\n  proxy_protocol: true\n  proxy_trusted: [192.0.2.7/24, \"::1\"]\npersona:\n  auth_failure_delay_ms: 2s\ncapture:\n  max_file_size: 2048k\n",
    );
    assert_eq!(code, Some(0), "{stderr}");
    for shown in [
        "idle_timeout: 900",
        "max_startups: 20:100:20",
        "- 192.0.2.0/24",
        "auth_failure_delay_ms: 2000",
        "max_file_size: 2m",
    ] {
        assert!(first.contains(shown), "`{shown}` missing from:\n{first}");
    }
    let (code, second, stderr) = check(first.as_bytes());
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(first, second);
}
