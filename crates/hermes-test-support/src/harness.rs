//! Test harness: a real `hermes` process on loopback with its own sensor name (so its
//! containers are told apart from other tests'), a real Docker engine, and clients.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::events::Events;
pub use crate::options::Options;
use crate::options::Paths;

/// The image the end-to-end tests run when `HERMES_TEST_IMAGE` names none.
pub const DEFAULT_IMAGE: &str = "hermes-target:latest";

/// The image the end-to-end tests run (built by `images/target/build.sh`):
/// `HERMES_TEST_IMAGE`, so a branch can test its own tag, else [`DEFAULT_IMAGE`].
pub fn image() -> String {
    std::env::var("HERMES_TEST_IMAGE")
        .ok()
        .filter(|tag| !tag.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_IMAGE.to_owned())
}

/// True when Docker and the target image are there. Under `CI=true` their absence is
/// a failure, never a silent skip.
pub fn require_docker() -> bool {
    let image = image();
    let docker_ok = Command::new("docker")
        .args(["image", "inspect", &image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if docker_ok {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "Docker engine or image {image} missing: run scripts/test.sh, which installs and builds them"
        );
    }
    eprintln!(
        "SKIPPED: Docker engine or image {image} not available (set CI=true to make this a failure)"
    );
    false
}

/// A running Hermes.
pub struct Hermes {
    child: Option<Child>,
    pub config_path: PathBuf,
    run: u32,
    pub dir: tempfile::TempDir,
    /// The SSH port the running process bound (the config asks for port 0, any free
    /// port, so no other test can take it between a probe and the bind).
    pub port: u16,
    /// The metrics port the running process bound, when `metrics` is on.
    pub metrics_port: Option<u16>,
    pub sensor: String,
    pub hostname: String,
    recordings: PathBuf,
    logs: PathBuf,
}

/// The `hermes` binary under test. Cargo names it only to the tests and benches of
/// the `hermes` crate (`CARGO_BIN_EXE_hermes`, at their compile time), so this crate
/// finds it at run time: nextest's `NEXTEST_BIN_EXE_hermes`, or beside the running
/// test binary (`target/<profile>/deps/<test>` next to `target/<profile>/hermes`).
pub fn hermes_binary() -> PathBuf {
    for name in ["NEXTEST_BIN_EXE_hermes", "CARGO_BIN_EXE_hermes"] {
        if let Some(path) = std::env::var_os(name) {
            return PathBuf::from(path);
        }
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("hermes"))
        .expect("the test binary is under target/<profile>/deps");
    assert!(
        path.is_file(),
        "no hermes binary at {} (build it: cargo build -p hermes)",
        path.display()
    );
    path
}

/// A sensor name no other test (or earlier run) uses.
pub fn unique_sensor() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("test-{}-{nanos:x}", std::process::id())
}

impl Hermes {
    /// Writes a config, starts `hermes run`, waits until it listens and the pool is full.
    #[track_caller]
    pub fn start(options: Options) -> Hermes {
        let mut hermes = Self::start_unready(options);
        hermes.wait_until_ready();
        hermes
    }

    /// Like [`Hermes::start`] but returns once the process runs, without waiting for
    /// the pool (for tests where it cannot fill).
    #[track_caller]
    pub fn start_unready(options: Options) -> Hermes {
        let dir = tempfile::tempdir().expect("tempdir");
        let sensor = options.sensor.clone().unwrap_or_else(unique_sensor);
        let hostname = "web-prod-01".to_owned();
        let recordings = options
            .recording_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("recordings"));
        let logs = options
            .log_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("logs"));
        let config = options.config(
            &sensor,
            &hostname,
            &Paths {
                base: dir.path(),
                recordings: &recordings,
                logs: &logs,
            },
        );
        let config_path = dir.path().join("hermes.yaml");
        std::fs::write(&config_path, config.to_yaml()).expect("write config");
        let mut hermes = Hermes {
            child: None,
            config_path,
            run: 0,
            dir,
            port: 0,
            metrics_port: None,
            sensor,
            hostname,
            recordings,
            logs,
        };
        hermes.spawn();
        hermes
    }

    fn spawn(&mut self) {
        self.run += 1;
        let stdout = std::fs::File::create(self.log_path("stdout")).expect("stdout log");
        let stderr = std::fs::File::create(self.log_path("stderr")).expect("stderr log");
        let child = Command::new(hermes_binary())
            .args(["run", "--config"])
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn hermes");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stdout = std::fs::read_to_string(self.log_path("stdout")).unwrap_or_default();
            // A restart binds a new port: the one released may be a client's by now.
            if let Some(port) = bound_port(&stdout, "listening") {
                self.port = port;
                self.metrics_port = bound_port(&stdout, "serving /metrics and /healthz");
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("hermes exited early ({status}):\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "hermes did not listen:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The bound metrics port; panics when `metrics` is off.
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port.expect("metrics enabled in the config")
    }

    fn log_path(&self, stream: &str) -> PathBuf {
        self.dir.path().join(format!("{stream}-{}.log", self.run))
    }

    /// Stops Hermes with SIGTERM and starts it again with the same configuration
    /// and data directory.
    pub fn restart(&mut self) {
        let status = self.terminate();
        assert!(status.success(), "exit status {status}");
        self.spawn();
        self.wait_until_ready();
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("hermes exited early ({status}):\n{}", self.output());
            }
            if self.output().contains("container pool ready") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("hermes did not become ready:\n{}", self.output());
    }

    /// What the current Hermes process printed so far (operational log and errors).
    pub fn output(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        format!("{}{}", read("stdout"), read("stderr"))
    }

    pub fn recordings(&self) -> PathBuf {
        self.recordings.clone()
    }

    /// The directory of the event log and the operational log.
    pub fn log_dir(&self) -> PathBuf {
        self.logs.clone()
    }

    /// Every file under the recordings directory (its `YYYY/MM/DD` layout).
    pub fn recording_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                if path.is_dir() && depth < 4 {
                    walk(&path, depth + 1, out);
                } else if path.is_file() {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.recordings(), 0, &mut out);
        out
    }

    /// Every session metadata file.
    pub fn metadata_files(&self) -> Vec<PathBuf> {
        self.recording_files()
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect()
    }

    /// A session's `<session>.<ext>` file, in the dated directory it was filed in
    /// (the day of today when there is none yet, for the error message).
    pub fn session_file(&self, session: &str, ext: &str) -> PathBuf {
        let name = format!("{session}.{ext}");
        self.recording_files()
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == name))
            .unwrap_or_else(|| self.recordings().join("missing").join(name))
    }

    /// The captured-file store.
    pub fn downloads(&self) -> PathBuf {
        self.dir.path().join("downloads")
    }

    /// Every event written so far, each checked against the catalogue.
    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.log_dir().join("hermes.json")).unwrap_or_default();
        // A line still being written (no newline yet) is read the next time.
        text.split_inclusive('\n')
            .filter_map(|line| line.strip_suffix('\n'))
            .map(|line| {
                let value: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("bad event line {line:?}: {e}"));
                let object = value.as_object().expect("event is an object");
                let id = object
                    .get("eventid")
                    .and_then(Value::as_str)
                    .expect("eventid");
                let known = hermes_core::events::EventId::from_name(id)
                    .unwrap_or_else(|| panic!("event id {id} is not in the catalogue"));
                known
                    .check(object)
                    .unwrap_or_else(|e| panic!("{e}: {line}"));
                value
            })
            .collect()
    }

    /// Every event with this id written so far.
    pub fn events_of(&self, id: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| crate::events::id_of(e) == Some(id))
            .collect()
    }

    /// Waits until exactly `count` events with this id were written; returns all events.
    pub fn wait_for_count(&self, id: &str, count: usize) -> Vec<Value> {
        self.wait_for_events(&format!("{count} {id}"), |events| {
            events.count_of(id) == count
        })
    }

    /// Waits until at least `count` events with this id were written; returns all events.
    pub fn wait_for_at_least(&self, id: &str, count: usize) -> Vec<Value> {
        self.wait_for_events(&format!("{count} or more {id}"), |events| {
            events.count_of(id) >= count
        })
    }

    /// Waits for the first event with this id; returns all events.
    pub fn wait_for(&self, id: &str) -> Vec<Value> {
        self.wait_for_events(id, |events| events.has(id))
    }

    /// Waits until `predicate` holds for the event list.
    pub fn wait_for_events(&self, what: &str, predicate: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let events = self.events();
            if predicate(&events) {
                return events;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; events:\n{events:#?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "hermes did not exit within 30 s of SIGTERM:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id of the running Hermes.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// Resident memory of the running Hermes, in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Kills the process with SIGKILL: no cleanup at all, as after a crash.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Hermes again after [`Hermes::kill_hard`], with the same configuration and
    /// data directory, and waits until it is ready.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
        self.wait_until_ready();
    }

    /// Containers of this instance in the given Docker state filter (`running`, ...).
    pub fn containers(&self, status: Option<&str>) -> Vec<String> {
        let mut command = Command::new("docker");
        command.args(["ps", "-a", "-q", "--no-trunc", "--filter"]);
        command.arg(format!("label=hermes.sensor={}", self.sensor));
        if let Some(status) = status {
            command.args(["--filter", &format!("status={status}")]);
        }
        let output = command.output().expect("docker ps");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// An OpenSSH client command for `user`, answering password prompts with
    /// `passwords` in order (through SSH_ASKPASS).
    pub fn ssh(&self, user: &str, passwords: &[&str], method: &str) -> Command {
        let mut command = self.openssh("ssh", passwords, method);
        command.arg(format!("{user}@127.0.0.1"));
        command
    }

    /// `scp` or `sftp` (or `ssh` without a destination) with the same options as
    /// [`Hermes::ssh`]; the caller adds the operands (host `127.0.0.1`).
    pub fn openssh(&self, program: &str, passwords: &[&str], method: &str) -> Command {
        self.openssh_logging(program, passwords, method, "ERROR")
    }

    /// [`Hermes::ssh`] at the client's default log level (INFO), where it prints what
    /// the server answered to forwarding requests.
    pub fn ssh_info(&self, user: &str, passwords: &[&str]) -> Command {
        let mut command = self.openssh_logging("ssh", passwords, "password", "INFO");
        command.arg(format!("{user}@127.0.0.1"));
        command
    }

    fn openssh_logging(
        &self,
        program: &str,
        passwords: &[&str],
        method: &str,
        log_level: &str,
    ) -> Command {
        openssh_command(
            self.dir.path(),
            self.port,
            program,
            passwords,
            method,
            log_level,
        )
    }
}

/// An OpenSSH client command (`ssh`, `scp`, `sftp`) for a server on loopback `port`,
/// answering password prompts with `passwords` in order through an SSH_ASKPASS
/// script kept under `dir`; no config file, no agent, no known hosts, no keys.
pub fn openssh_command(
    dir: &Path,
    port: u16,
    program: &str,
    passwords: &[&str],
    method: &str,
    log_level: &str,
) -> Command {
    let work = dir.join(format!("askpass-{}", unique_sensor()));
    std::fs::create_dir_all(&work).expect("askpass dir");
    let list = work.join("passwords");
    let mut file = std::fs::File::create(&list).expect("password list");
    for password in passwords {
        writeln!(file, "{password}").expect("write password");
    }
    let script = work.join("askpass.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nn=$(cat '{dir}/count' 2>/dev/null || echo 0)\necho $((n+1)) > '{dir}/count'\nsed -n \"$((n+1))p\" '{list}'\n",
            dir = work.display(),
            list = list.display()
        ),
    )
    .expect("askpass script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut command = Command::new(program);
    command
        .env("SSH_ASKPASS", &script)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env_remove("SSH_AUTH_SOCK")
        .args(["-F", "/dev/null", "-o", &format!("Port={port}")])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "PubkeyAuthentication=no"])
        .args(["-o", &format!("LogLevel={log_level}")])
        .args(["-o", &format!("PreferredAuthentications={method}")])
        .args([
            "-o",
            &format!("NumberOfPasswordPrompts={}", passwords.len().max(1)),
        ]);
    command
}

/// The port of the `address` in the JSON operational log line with this `message`
/// (Hermes logs the addresses it bound, port 0 resolved).
fn bound_port(log: &str, message: &str) -> Option<u16> {
    log.lines().find_map(|line| {
        let value: Value = serde_json::from_str(line).ok()?;
        if value.get("message")?.as_str()? != message {
            return None;
        }
        let address: std::net::SocketAddr = value.get("address")?.as_str()?.parse().ok()?;
        (address.port() != 0).then_some(address.port())
    })
}

/// The last `max` characters of a text, on a char boundary.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

impl Drop for Hermes {
    fn drop(&mut self) {
        // A failing test shows what Hermes logged and wrote: in CI that is all there is.
        if std::thread::panicking() {
            let events =
                std::fs::read_to_string(self.log_dir().join("hermes.json")).unwrap_or_default();
            eprintln!(
                "--- hermes log (tail) ---\n{}\n--- events (tail) ---\n{}\n---",
                tail(&self.output(), 12_000),
                tail(&events, 8_000)
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Tests leave no containers behind.
        let ids = self.containers(None);
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Runs a client command, asserts it exited 0, and returns its stdout.
pub fn succeeded(command: &mut Command) -> String {
    let output = command.output().expect("run client");
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// SHA-256 of a file, lowercase hex (by `sha256sum`, independent of Hermes's code).
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data");
    std::fs::write(&path, bytes).expect("write");
    sha256_file(&path)
}

/// Runs `command` with `stdin` as its standard input, and returns what it printed.
pub fn run_with_stdin(command: &mut Command, stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn client");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let output = child.wait_with_output().expect("client output");
    let _ = writer.join();
    output
}

/// Parses an asciicast v2 file: header and events.
pub fn read_cast(path: &Path) -> (Value, Vec<(f64, String, String)>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Value =
        serde_json::from_str(lines.next().expect("header line")).expect("header json");
    let events = lines
        .map(|line| {
            let event: (f64, String, String) = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad cast line {line:?}: {e}"));
            event
        })
        .collect();
    (header, events)
}

/// Floods need more descriptors than a shell's default soft limit.
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// `count` bytes of every value, from a fixed xorshift sequence.
pub fn binary_file(path: &Path, count: usize) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut bytes = Vec::with_capacity(count);
    while bytes.len() < count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(count);
    std::fs::write(path, bytes).expect("write binary file");
}

/// A small filesystem of its own (tmpfs), to fill up; unmounted when dropped.
pub struct SmallDisk {
    pub path: PathBuf,
}

impl SmallDisk {
    pub fn mount(path: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).expect("mountpoint");
        succeeded(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "hermes-test"])
                .arg(path),
        );
        SmallDisk {
            path: path.to_owned(),
        }
    }

    fn filler(&self) -> PathBuf {
        self.path.join("filler")
    }

    /// Takes every free byte; returns how many that was.
    pub fn fill(&self) -> u64 {
        let mut file = std::fs::File::create(self.filler()).expect("filler");
        let mut written = 0u64;
        for chunk in [1 << 20, 4096, 1] {
            let block = vec![0u8; chunk];
            // Bounded: the disk is a few MiB.
            for _ in 0..100_000 {
                match file.write(&block) {
                    Ok(n) if n > 0 => written += n as u64,
                    _ => break,
                }
            }
        }
        assert!(
            file.write(b"x").is_err(),
            "the disk at {} is not full",
            self.path.display()
        );
        written
    }

    pub fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
