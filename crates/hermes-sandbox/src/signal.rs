//! Signals for a session's program.
//!
//! Docker has no API to signal an exec'd process. When Hermes runs on the engine's
//! host, the exec's host PID (from `exec inspect`) and `/proc` reach it: sshd sends
//! `killpg(session)`, so the program and the processes of its group below it get the
//! signal. Every process is checked to live in the container's PID namespace first,
//! so a recycled PID can never make Hermes signal a process of the host. Without
//! `/proc` access (Hermes in a container of its own, a remote engine) nothing is sent.

use std::fs;

use bollard::Docker;

use hermes_core::sandbox::SandboxError;

/// More processes than a session's group plausibly holds; the walk stops there.
const MAX_PROCESSES: usize = 4096;

/// The signal number for an SSH signal name (sshd's table).
fn signal_number(name: &str) -> Option<i32> {
    Some(match name {
        "ABRT" => libc::SIGABRT,
        "ALRM" => libc::SIGALRM,
        "FPE" => libc::SIGFPE,
        "HUP" => libc::SIGHUP,
        "ILL" => libc::SIGILL,
        "INT" => libc::SIGINT,
        "KILL" => libc::SIGKILL,
        "PIPE" => libc::SIGPIPE,
        "QUIT" => libc::SIGQUIT,
        "SEGV" => libc::SIGSEGV,
        "TERM" => libc::SIGTERM,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        _ => return None,
    })
}

/// A process as `/proc/PID/stat` describes it.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    comm: String,
    pgrp: i32,
}

/// Parses `/proc/PID/stat`: "pid (comm) state ppid pgrp ..."; comm may hold spaces
/// and parentheses, so the fields after it are found from the last ')'.
fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let _ppid = rest.next()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some(Stat { comm, pgrp })
}

fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn children(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn pid_namespace(pid: i32) -> Option<std::path::PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// The processes that `killpg(program)` would reach, found from the session
/// process: its first child that is not one of its own helpers (named `sshd`), and
/// the descendants of that child still in its process group.
fn targets(session_pid: i32, namespace: &std::path::Path) -> Vec<i32> {
    let in_container = |pid: i32| pid_namespace(pid).is_some_and(|ns| ns == namespace);
    let program = children(session_pid)
        .into_iter()
        .find(|&pid| stat(pid).is_some_and(|s| s.comm != "sshd") && in_container(pid));
    let Some(program) = program else {
        return Vec::new();
    };
    let Some(group) = stat(program).map(|s| s.pgrp) else {
        return Vec::new();
    };
    let mut found = vec![program];
    let mut next = 0;
    while next < found.len() && found.len() < MAX_PROCESSES {
        let parent = found[next];
        next += 1;
        for child in children(parent) {
            if stat(child).is_some_and(|s| s.pgrp == group) && in_container(child) {
                found.push(child);
            }
        }
    }
    found
}

/// Sends `signal` to the program an exec runs. Ok(false) when it cannot be reached.
pub(crate) async fn deliver(
    docker: &Docker,
    container_id: &str,
    exec_id: &str,
    signal: &str,
) -> Result<bool, SandboxError> {
    let Some(number) = signal_number(signal) else {
        return Ok(false);
    };
    let exec = docker
        .inspect_exec(exec_id)
        .await
        .map_err(crate::error::engine)?;
    let container = docker
        .inspect_container(container_id, None)
        .await
        .map_err(crate::error::engine)?;
    let session_pid = exec.pid.and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    let init_pid = container
        .state
        .and_then(|s| s.pid)
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or(0);
    if session_pid <= 0 || init_pid <= 0 || !exec.running.unwrap_or(false) {
        return Ok(false);
    }
    let delivered = tokio::task::spawn_blocking(move || {
        let Some(namespace) = pid_namespace(init_pid) else {
            return false;
        };
        if pid_namespace(session_pid).as_deref() != Some(namespace.as_path()) {
            return false;
        }
        let mut sent = false;
        for pid in targets(session_pid, &namespace) {
            // SAFETY: kill(2) takes plain integers; the PID was just checked to be a
            // process in the container's namespace.
            sent |= unsafe { libc::kill(pid, number) } == 0;
        }
        sent
    })
    .await
    .unwrap_or(false);
    Ok(delivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        assert_eq!(
            parse_stat("4242 (sshd) S 4200 4242 4242 34816 ..."),
            Some(Stat {
                comm: "sshd".into(),
                pgrp: 4242
            })
        );
        assert_eq!(
            parse_stat("17 (a) b (c)) R 1 99 17 0"),
            Some(Stat {
                comm: "a) b (c)".into(),
                pgrp: 99
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 0"), None);
    }

    #[test]
    fn only_sshd_signals_are_known() {
        assert_eq!(signal_number("INT"), Some(libc::SIGINT));
        assert_eq!(signal_number("USR2"), Some(libc::SIGUSR2));
        assert_eq!(signal_number("STOP"), None);
        assert_eq!(signal_number("SIGINT"), None);
    }

    #[test]
    fn the_program_below_a_session_process_is_found_and_signalled() {
        // A stand-in for the session process: a shell whose first child runs the
        // program (`sleep`) in the shell's process group.
        let mut session = std::process::Command::new("bash")
            .args(["-c", "sleep 30; exit 7"])
            .spawn()
            .expect("bash");
        let session_pid = session.id() as i32;
        let ns = pid_namespace(session_pid).expect("pid namespace");
        let mut found = Vec::new();
        for _ in 0..100 {
            found = targets(session_pid, &ns);
            if found
                .iter()
                .any(|&p| stat(p).is_some_and(|s| s.comm == "sleep"))
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(found.len(), 1, "{found:?}");
        // SAFETY: a child of this test.
        assert_eq!(unsafe { libc::kill(found[0], libc::SIGTERM) }, 0);
        let started = std::time::Instant::now();
        let status = session.wait().expect("wait");
        // The sleep died of the signal, the shell went on to its `exit 7`.
        assert_eq!(status.code(), Some(7));
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }
}
