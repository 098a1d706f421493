//! The boxes' boot clock (`container_pool.security.boot_clock`). A container shares
//! the host's clocks, so inside it PID 1 looks started long after the boot, and
//! `ps` ages disagree with the uptime. The engine's `hermes-box` runtime
//! (crates/hermes-box-runtime: Debian's runc, run in a time namespace of the box's
//! own) gives each box clocks that start at its boot. This decides at start whether
//! boxes get it.

use hermes_core::config::BootClock;

/// The name the boxes' runtime is registered under in the engine
/// (`scripts/ensure-box-runtime.sh`).
pub const RUNTIME: &str = "hermes-box";

/// What the boxes get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Their own clock: boxes run under [`RUNTIME`].
    Own,
    /// The host's clocks, and why (said at start).
    Host(String),
    /// Hermes may not start: `required`, and the engine has no such runtime.
    Refused(String),
}

/// Decides from the mode, the configured `runtime`, the runtimes the engine has (or
/// why it could not say) and whether the clock files answer where the boxes need
/// them (with LXCFS: its /proc/stat has the host's btime; see crate::clock_files).
pub fn decide(
    mode: BootClock,
    runtime: Option<&str>,
    engine_runtimes: Result<Vec<String>, String>,
    clock_files: Result<(), String>,
) -> Choice {
    if mode == BootClock::Off {
        return Choice::Host("container_pool.security.boot_clock is off".to_owned());
    }
    if let Some(other) = runtime {
        // `required` with another runtime is refused by the configuration itself.
        return Choice::Host(format!(
            "boxes run under the configured runtime {other}, not {RUNTIME}"
        ));
    }
    let missing = match engine_runtimes {
        Ok(names) if names.iter().any(|name| name == RUNTIME) => match clock_files {
            Ok(()) => return Choice::Own,
            Err(why) => format!("the boxes' clock files: {why}"),
        },
        Ok(_) => format!(
            "the engine has no {RUNTIME} runtime (scripts/ensure-box-runtime.sh registers it)"
        ),
        Err(error) => format!("cannot ask the engine for its runtimes: {error}"),
    };
    match mode {
        BootClock::Required => Choice::Refused(format!(
            "{missing}; container_pool.security.boot_clock is required"
        )),
        _ => Choice::Host(missing),
    }
}

/// Asks the engine (and the clock files' server, where LXCFS is used) and decides.
pub async fn choose(
    docker: &bollard::Docker,
    mode: BootClock,
    runtime: Option<&str>,
    with_lxcfs: bool,
) -> Choice {
    if mode == BootClock::Off || runtime.is_some() {
        return decide(mode, runtime, Ok(Vec::new()), Ok(()));
    }
    let clock_files = if with_lxcfs {
        crate::clock_files::check(std::path::Path::new(crate::clock_files::ROOT)).await
    } else {
        Ok(())
    };
    let runtimes = docker
        .info()
        .await
        .map(|info| {
            info.runtimes
                .map(|runtimes| runtimes.into_keys().collect())
                .unwrap_or_default()
        })
        .map_err(|error| error.to_string());
    decide(mode, runtime, runtimes, clock_files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(names: &[&str]) -> Result<Vec<String>, String> {
        Ok(names.iter().map(|n| (*n).to_owned()).collect())
    }

    #[test]
    fn boxes_get_their_own_clock_where_the_engine_has_the_runtime() {
        let both = engine(&["runc", RUNTIME]);
        assert_eq!(
            decide(BootClock::Auto, None, both.clone(), Ok(())),
            Choice::Own
        );
        assert_eq!(decide(BootClock::Required, None, both, Ok(())), Choice::Own);
    }

    #[test]
    fn auto_falls_back_to_the_hosts_clock_and_says_why() {
        let Choice::Host(why) = decide(BootClock::Auto, None, engine(&["runc"]), Ok(())) else {
            panic!("expected the host's clock");
        };
        assert!(why.contains("ensure-box-runtime.sh"), "{why}");
        let Choice::Host(why) = decide(BootClock::Auto, None, Err("refused".to_owned()), Ok(()))
        else {
            panic!("expected the host's clock");
        };
        assert!(why.contains("refused"), "{why}");
    }

    #[test]
    fn required_refuses_without_the_runtime() {
        let Choice::Refused(why) = decide(BootClock::Required, None, engine(&["runc"]), Ok(()))
        else {
            panic!("expected a refusal");
        };
        assert!(why.contains("required"), "{why}");
    }

    #[test]
    fn without_the_clock_files_lxcfs_boxes_keep_the_hosts_clock() {
        let gone = || Err("/var/lib/hermes-box-proc is not a FUSE mount".to_owned());
        let Choice::Host(why) = decide(BootClock::Auto, None, engine(&[RUNTIME]), gone()) else {
            panic!("expected the host's clock");
        };
        assert!(why.contains("clock files") && why.contains("FUSE"), "{why}");
        assert!(matches!(
            decide(BootClock::Required, None, engine(&[RUNTIME]), gone()),
            Choice::Refused(_)
        ));
    }

    #[test]
    fn off_and_another_runtime_keep_the_hosts_clock() {
        let all = engine(&[RUNTIME]);
        assert!(matches!(
            decide(BootClock::Off, None, all.clone(), Ok(())),
            Choice::Host(_)
        ));
        let Choice::Host(why) = decide(BootClock::Auto, Some("runsc"), all, Ok(())) else {
            panic!("expected the host's clock");
        };
        assert!(why.contains("runsc"), "{why}");
    }
}
