//! The boxes' clock files: /proc/stat and /proc/uptime served by `hermes-box-proc`
//! (crates/hermes-box-proc, started by scripts/ensure-box-proc.sh), bound over a
//! box's own in place of LXCFS's when the box runs on a boot clock of its own.
//! LXCFS's /proc/stat copies the host's btime, and `ps` adds every start time to it;
//! these count the box's CPUs as LXCFS does and its clock as the kernel does.

use std::path::Path;

/// Where scripts/ensure-box-proc.sh mounts the server.
pub const ROOT: &str = "/var/lib/hermes-box-proc";

/// The files served, relative to the mount; each lands on `/` + the same path.
pub const FILES: &[&str] = &["proc/stat", "proc/uptime"];

/// Whether the server answers at `root` (blocking: a FUSE read), or why not.
pub fn check_blocking(root: &Path) -> Result<(), String> {
    crate::lxcfs::probe_files_blocking(root, FILES)
        .map(|_| ())
        .map_err(|problem| format!("{problem} (scripts/ensure-box-proc.sh starts hermes-box-proc)"))
}

/// [`check_blocking`] off the async threads, bounded in time.
pub async fn check(root: &Path) -> Result<(), String> {
    let owned = root.to_path_buf();
    match tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::task::spawn_blocking(move || check_blocking(&owned)),
    )
    .await
    {
        Ok(Ok(result)) => result,
        Ok(Err(_)) | Err(_) => Err(format!("{} did not answer within 2 s", root.display())),
    }
}
