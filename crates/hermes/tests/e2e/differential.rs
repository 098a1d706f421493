//! The box against a real Debian 12 server: the same probe battery over SSH (the
//! real OpenSSH client) on a reference machine booted with qemu on KVM and on a
//! Hermes session, compared fact by fact (issue 17, "Tests").

mod battery;
mod verdict;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hermes_test_support::harness::openssh_command;
use hermes_test_support::refvm::{self, ReferenceVm};

use crate::harness::{Hermes, Options};
use battery::{FIRST_LOGIN, SECOND_LOGIN};

/// How long one login's probes may take (the grep of the whole box is the slow one,
/// on a box limited to half a core).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `command` with its output in a file, killing it after `timeout`; returns
/// stdout and the exit status.
fn bounded(command: &mut Command, dir: &Path, timeout: Duration) -> (String, Option<i32>) {
    let out = dir.join(format!(
        "out-{}",
        hermes_test_support::harness::unique_sensor()
    ));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("output file"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ssh");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (std::fs::read_to_string(&out).unwrap_or_default(), status)
}

/// One login as root (password `toor`) on loopback `port`, running `probes`.
fn login(dir: &Path, port: u16, probes: &[battery::Probe]) -> String {
    let mut ssh = openssh_command(dir, port, "ssh", &["toor"], "password", "ERROR");
    ssh.args(["-o", "ConnectTimeout=30", "root@127.0.0.1"])
        .arg(battery::script(probes));
    let (output, status) = bounded(&mut ssh, dir, LOGIN_TIMEOUT);
    assert!(
        status.is_some(),
        "the login to port {port} did not finish within {LOGIN_TIMEOUT:?}:\n{output}"
    );
    // The probes' own statuses are facts; ssh's is the last probe's.
    assert!(
        output.contains("@@probe"),
        "no probe ran on port {port} (ssh status {status:?}):\n{output}"
    );
    output
}

/// Both logins' facts, with the ones that compare the two logins.
fn survey(dir: &Path, port: u16) -> (Vec<battery::Fact>, String) {
    let first = login(dir, port, FIRST_LOGIN);
    // Long enough for uptime and PID 1's age (whole seconds) to move.
    std::thread::sleep(Duration::from_secs(3));
    let second = login(dir, port, SECOND_LOGIN);
    let mut facts = battery::facts(FIRST_LOGIN, &first);
    match (
        battery::answer_of(&first, "uptime"),
        battery::answer_of(&second, "uptime-again"),
    ) {
        (Some(a), Some(b)) => facts.extend(battery::between_logins(&a, &b)),
        _ => facts.push((
            "uptime grows between logins".to_owned(),
            "(no answer)".to_owned(),
        )),
    }
    (facts, first)
}

fn md5_ms(output: &str) -> String {
    battery::answer_of(output, "md5sum")
        .and_then(|a| {
            a.output
                .lines()
                .find_map(|l| l.strip_prefix("ms=").map(str::to_owned))
        })
        .unwrap_or_else(|| "?".to_owned())
}

#[test]
fn the_box_answers_the_probe_battery_as_a_real_debian_12_server() {
    let Some(accel) = refvm::accelerator() else {
        return;
    };
    require_docker!();
    let build = refvm::build();
    let vm = ReferenceVm::boot(accel);
    eprintln!(
        "reference machine ({accel:?}): build step {:.1} s, boot to SSH banner {:.1} s",
        build.as_secs_f64(),
        vm.boot_time.as_secs_f64()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (reference, reference_raw) = survey(dir.path(), vm.port);
    drop(vm);

    // Reuse on, with the shipped linger: the second login meets the same box, still
    // running, as an intruder coming back would.
    let hermes = Hermes::start(
        Options {
            reuse: true,
            ..Options::default()
        }
        .configure(|c| {
            c.container_pool.reuse.linger = hermes_core::config::ReuseConfig::default().linger;
        }),
    );
    let (boxed, hermes_raw) = survey(dir.path(), hermes.port);

    let rows = verdict::compare(&reference, &boxed);
    eprintln!(
        "\n{}\nmd5sum of 50 MB: reference {} ms, hermes {} ms",
        verdict::table(&rows),
        md5_ms(&reference_raw),
        md5_ms(&hermes_raw)
    );
    // The battery ran: every probe answered on both machines.
    for row in &rows {
        assert!(
            row.reference != "(no answer)" && row.hermes != "(no answer)",
            "probe {} did not answer",
            row.probe
        );
    }
    let failures: Vec<String> = rows
        .iter()
        .filter(|r| r.status.fails())
        .map(|r| format!("{}: {}", r.probe, r.status.label()))
        .collect();
    assert!(
        failures.is_empty(),
        "differences outside ALLOWED (table above):\n{}",
        failures.join("\n")
    );
}
