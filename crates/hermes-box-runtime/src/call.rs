//! What the engine asked runc for: the command, runc's state directory and the
//! container. Only what the boot clock needs is read; the arguments go to runc as they
//! came.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// runc's state directory when the engine names none.
pub const DEFAULT_ROOT: &str = "/run/runc";

/// runc's global options that take a value (runc 1.1).
const GLOBAL_VALUED: &[&str] = &["log", "log-format", "root", "criu", "rootless"];

/// What the boot clock does for one call.
#[derive(Debug, PartialEq, Eq)]
pub enum Clock {
    /// A new container: its processes get a clock that starts at their start.
    New,
    /// Any other call on a container (start, state, exec, kill, delete...): runc
    /// runs on the container's clock, which is the one its saved state was read
    /// with (runc tells a live first process from a reused PID by its start time,
    /// which each clock counts differently). The container is the first of
    /// `operands` with a state in `root`: runc's options may take values, and
    /// which do differs by command.
    Join {
        root: PathBuf,
        operands: Vec<String>,
    },
    /// A call without operands (list, features, --version): runc alone.
    None,
}

/// Reads runc's command line (without the program name).
pub fn clock_for(args: &[OsString]) -> Clock {
    let mut root = PathBuf::from(DEFAULT_ROOT);
    let mut rest = args.iter();
    let command = loop {
        let Some(arg) = rest.next() else {
            return Clock::None;
        };
        match option(arg) {
            Some((name, inline)) => {
                if GLOBAL_VALUED.contains(&name.as_str()) {
                    let value = match inline {
                        Some(value) => Some(value),
                        None => rest.next().cloned(),
                    };
                    if name == "root"
                        && let Some(value) = value
                    {
                        root = PathBuf::from(value);
                    }
                }
            }
            None => break arg.to_string_lossy().into_owned(),
        }
    };
    if command == "create" || command == "run" {
        return Clock::New;
    }
    let operands: Vec<String> = rest
        .filter(|arg| option(arg).is_none())
        .filter_map(|arg| arg.to_str().map(str::to_owned))
        .collect();
    if operands.is_empty() {
        Clock::None
    } else {
        Clock::Join { root, operands }
    }
}

/// `--name`, `-name`, `--name=value`: the name and the value given inline. `-` and
/// `--` alone are operands.
fn option(arg: &OsStr) -> Option<(String, Option<OsString>)> {
    let text = arg.to_str()?;
    let body = text.strip_prefix("--").or_else(|| text.strip_prefix('-'))?;
    if body.is_empty() {
        return None;
    }
    Some(match body.split_once('=') {
        Some((name, value)) => (name.to_owned(), Some(OsString::from(value))),
        None => (body.to_owned(), None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn the_engines_create_makes_a_new_clock() {
        let call = args(
            "--root /var/run/docker/runtime-runc/moby --log /run/x/log.json --log-format json --systemd-cgroup create --bundle /run/b --pid-file /run/b/init.pid abc",
        );
        assert_eq!(clock_for(&call), Clock::New);
        assert_eq!(clock_for(&args("run --bundle /b abc")), Clock::New);
    }

    fn join(root: &str, operands: &[&str]) -> Clock {
        Clock::Join {
            root: PathBuf::from(root),
            operands: operands.iter().map(|o| (*o).to_owned()).collect(),
        }
    }

    #[test]
    fn every_other_call_runs_on_the_containers_clock_found_in_its_state_directory() {
        let exec = args(
            "--root /var/run/docker/runtime-runc/moby --log /run/x/log.json --log-format json exec --process /tmp/p.json --detach --pid-file /run/x/e.pid 0123abcd",
        );
        assert_eq!(
            clock_for(&exec),
            join(
                "/var/run/docker/runtime-runc/moby",
                &["/tmp/p.json", "/run/x/e.pid", "0123abcd"]
            )
        );
        assert_eq!(
            clock_for(&args("--root=/r exec -t --cwd=/ -e A=1 box sh -c true")),
            join("/r", &["A=1", "box", "sh", "true"])
        );
        assert_eq!(clock_for(&args("state box")), join(DEFAULT_ROOT, &["box"]));
        assert_eq!(
            clock_for(&args("--root /r kill box 9")),
            join("/r", &["box", "9"])
        );
        assert_eq!(
            clock_for(&args("--root /r delete --force box")),
            join("/r", &["box"])
        );
    }

    #[test]
    fn calls_without_a_container_leave_the_clock_alone() {
        for line in [
            "--root /r list",
            "--root",
            "",
            "--version",
            "--root /r --debug",
        ] {
            assert_eq!(clock_for(&args(line)), Clock::None, "{line}");
        }
    }

    #[test]
    fn a_global_options_value_is_not_taken_for_the_command() {
        // `--log create` names a log file called "create", then asks for the state.
        assert_eq!(
            clock_for(&args("--log create state abc")),
            join(DEFAULT_ROOT, &["abc"])
        );
        assert_eq!(clock_for(&args("--log-format exec create abc")), Clock::New);
    }
}
