//! Runs the host's `ip` and `iptables-restore`, optionally inside a network
//! namespace: the namespace is entered in the child between fork and exec, so
//! Hermes's own threads never change namespace for this.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// A command that failed, with what it printed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It could not be started (missing binary, no permission).
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// The namespace file could not be opened.
    #[error("cannot open the network namespace {path}: {source}")]
    Namespace {
        path: String,
        source: std::io::Error,
    },
    /// It ran and failed.
    #[error("{program} {args} failed ({status}): {stderr}")]
    Failed {
        program: String,
        args: String,
        status: String,
        stderr: String,
    },
}

/// Runs `program args` (in the network namespace at `netns` when given), writing
/// `stdin` to it; returns its standard output.
pub fn run(
    netns: Option<&Path>,
    program: &str,
    args: &[&str],
    stdin: &str,
) -> Result<String, CommandError> {
    let namespace = match netns {
        Some(path) => {
            Some(
                std::fs::File::open(path).map_err(|source| CommandError::Namespace {
                    path: path.display().to_string(),
                    source,
                })?,
            )
        }
        None => None,
    };
    run_at(namespace.as_ref(), program, args, stdin)
}

/// As [`run`], in the network namespace of the open `namespace` when given.
pub fn run_at(
    namespace: Option<&File>,
    program: &str,
    args: &[&str],
    stdin: &str,
) -> Result<String, CommandError> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The commands build the boxes' network (mostly for the pool's refill), never a
    // keystroke's path: they would otherwise inherit the session threads' raised
    // priority (`server.nice`) and run ahead of every box's processes.
    let nicer = hermes_core::priority::background_nice();
    // SAFETY: between fork and exec only setpriority(2), which is async-signal-safe,
    // on the child's own (single) thread; a refusal leaves it at the caller's value.
    unsafe {
        command.pre_exec(move || {
            libc::setpriority(libc::PRIO_PROCESS, 0, nicer);
            Ok(())
        });
    }
    if let Some(file) = namespace {
        let fd = file.as_raw_fd();
        // SAFETY: between fork and exec only setns(2), which is async-signal-safe, is
        // called on a descriptor the caller keeps open until the spawn ends.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let spawn_error = |source| CommandError::Spawn {
        program: program.to_owned(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).map_err(spawn_error)?;
    }
    let output = child.wait_with_output().map_err(spawn_error)?;
    if !output.status.success() {
        return Err(CommandError::Failed {
            program: program.to_owned(),
            args: args.join(" "),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    use hermes_core::priority::own_nice as own;

    #[test]
    fn commands_run_ten_nicer_than_the_thread_that_starts_them() {
        // On a thread of its own: the test runner's other threads keep theirs.
        std::thread::spawn(|| {
            let start = own();
            let printed = run(None, "nice", &[], "").expect("coreutils' nice");
            assert_eq!(
                printed.trim().parse::<libc::c_int>().expect("a number"),
                (start + 10).min(19)
            );
            // Raising one's own value needs no privilege; the command then tops out.
            hermes_core::priority::set_own_nice(15).expect("nicer needs no privilege");
            assert_eq!(own(), 15);
            let printed = run(None, "nice", &[], "").expect("coreutils' nice");
            assert_eq!(printed.trim(), "19");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_failing_command_says_what_it_printed() {
        let error = run(None, "sh", &["-c", "echo no >&2; exit 3"], "").unwrap_err();
        assert!(
            matches!(&error, CommandError::Failed { stderr, .. } if stderr == "no"),
            "{error}"
        );
    }
}
