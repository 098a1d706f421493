//! Started by containerd in place of Debian's `containerd-shim-runc-v2` (it comes
//! first in the engine's `PATH`: `scripts/ensure-docker.sh`), and becomes that shim
//! at once. For a container of Hermes's boxes' runtime it first puts the container in
//! one of a few shim groups, so that 200 boxes share 8 shims instead of running 200:
//! each idle shim forces a garbage collection every 30 s (about 0.25 ms of CPU per
//! box-second in all) and holds about 14 MB. Any other container, and every other
//! call, is handed to the shim untouched.
//!
//! A container that cannot be grouped still starts, with a shim of its own as without
//! this program. Only when the runtime options cannot be read (or handed on) does
//! the start fail: run without them, the box would get the engine's default runtime.

mod group;

use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// The shim this program stands in for.
const SHIM: &str = "containerd-shim-runc-v2";

/// The boxes' runtime, relative to this program's directory
/// (`/usr/local/lib/hermes/engine/` beside `/usr/local/lib/hermes/hermes-box-runtime`).
const RUNTIME_FROM_HERE: &str = "../hermes-box-runtime";

/// containerd's runtime options are a few hundred bytes; more is not read.
const MAX_OPTIONS_BYTES: u64 = 1 << 20;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let me = std::env::current_exe().ok();
    let Some(shim) = real_shim(&args, me.as_deref()) else {
        eprintln!("{SHIM} not found beside containerd or on PATH");
        return ExitCode::from(127);
    };
    let mut command = Command::new(&shim);
    command.args(&args);
    if args.last().map(OsString::as_os_str) == Some(OsStr::new("start")) {
        match read_options() {
            Ok(options) => {
                if let (Some(me), Some(id)) = (me.as_deref(), value_of(&args, "-id")) {
                    group_if_box(&options, me, &id.to_string_lossy());
                }
                match replay(&options) {
                    Ok(stdin) => {
                        command.stdin(stdin);
                    }
                    Err(error) => {
                        eprintln!("cannot hand the runtime options on: {error}");
                        return ExitCode::from(126);
                    }
                }
            }
            Err(error) => {
                eprintln!("cannot read the runtime options: {error}");
                return ExitCode::from(126);
            }
        }
    }
    let error = command.exec();
    eprintln!("cannot run {}: {error}", shim.display());
    ExitCode::from(126)
}

/// Puts the bundle in the working directory in a shim group when its runtime is the
/// boxes' one.
fn group_if_box(options: &[u8], me: &Path, id: &str) {
    let Some(runtime) = me
        .parent()
        .map(|dir| normalise(&dir.join(RUNTIME_FROM_HERE)))
    else {
        return;
    };
    if !group::runs_under(options, runtime.as_os_str().as_encoded_bytes()) {
        return;
    }
    if let Err(error) = group::join(Path::new("config.json"), &group::group_of(id)) {
        // The container still starts, with a shim of its own.
        eprintln!("container {id} keeps a shim of its own: {error}");
    }
}

/// `dir/../name` as `parent-of-dir/name`, without looking at the filesystem.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn read_options() -> std::io::Result<Vec<u8>> {
    let mut options = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_OPTIONS_BYTES)
        .read_to_end(&mut options)?;
    Ok(options)
}

/// The options again, as the shim's stdin: an anonymous file read from its start.
fn replay(options: &[u8]) -> std::io::Result<Stdio> {
    let mut file = tempfile::tempfile()?;
    file.write_all(options)?;
    file.rewind()?;
    Ok(Stdio::from(file))
}

/// The value after `flag` in containerd's arguments.
fn value_of<'a>(args: &'a [OsString], flag: &str) -> Option<&'a OsStr> {
    args.windows(2)
        .find(|pair| pair[0] == flag)
        .map(|pair| pair[1].as_os_str())
}

/// The real shim: beside containerd (`-publish-binary`), else on `PATH`; never this
/// program itself.
fn real_shim(args: &[OsString], me: Option<&Path>) -> Option<PathBuf> {
    let me = me.and_then(|path| std::fs::metadata(path).ok());
    let beside_containerd = value_of(args, "-publish-binary")
        .and_then(|containerd| Path::new(containerd).parent())
        .map(|dir| dir.join(SHIM));
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(SHIM))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    beside_containerd
        .into_iter()
        .chain(on_path)
        .find(|candidate| is_other_executable(candidate, me.as_ref()))
}

fn is_other_executable(path: &Path, me: Option<&std::fs::Metadata>) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let same = me.is_some_and(|me| me.dev() == meta.dev() && me.ino() == meta.ino());
    meta.is_file() && meta.permissions().mode() & 0o111 != 0 && !same
}
