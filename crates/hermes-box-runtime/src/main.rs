//! The OCI runtime Hermes's boxes run under: Debian's runc, with one change. A box
//! gets a boot clock of its own (a time namespace), so that inside it the uptime, PID
//! 1's start time and every process's age count from the box's boot, as on a server
//! that booted when the box did. The engine knows it by the name Hermes asks for
//! (`scripts/ensure-box-runtime.sh` registers it); the box sees nothing of it.
//!
//! It prints nothing: on `exec` its output would be the started process's, which may
//! be an attacker's terminal. A clock that cannot be made leaves the box on the
//! host's; the end-to-end tests (`machine::`, `differential::`) look at the clock.

mod call;
mod clock;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Where Debian (and most distributions) put runc, after `PATH`.
const RUNC_PLACES: &[&str] = &["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"];

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some(runc) = find_runc() else {
        eprintln!("runc not found in PATH or {}", RUNC_PLACES.join(", "));
        return ExitCode::from(127);
    };
    // A clock that cannot be made leaves the box on the host's: it still runs, and
    // Hermes reports it. Nothing here may stop a box from starting.
    let _ = match call::clock_for(&args) {
        call::Clock::New => clock::new(),
        call::Clock::Join { root, operands } => clock::join(&root, &operands),
        call::Clock::None => Ok(()),
    };
    let error = Command::new(&runc).args(&args).exec();
    eprintln!("cannot run {}: {error}", runc.display());
    ExitCode::from(126)
}

/// runc on `PATH`, else in its usual places; never this program itself.
fn find_runc() -> Option<PathBuf> {
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("runc"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(RUNC_PLACES.iter().map(PathBuf::from))
        .find(|candidate| is_other_executable(candidate, me.as_deref()))
}

fn is_other_executable(path: &Path, me: Option<&Path>) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let real = path.canonicalize().ok();
    meta.is_file()
        && meta.permissions().mode() & 0o111 != 0
        && (me.is_none() || real.as_deref() != me)
}
