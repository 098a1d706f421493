//! Finding and reading the files a session left in its container.
//!
//! The container's own filesystem is read through the engine (`changes`, `archive`):
//! nothing runs in the container, so the attacker neither sees it nor can tamper with
//! it, and the engine resolves paths inside the container (a symlink planted by the
//! attacker cannot point the read at the host). Deleted files still running or open
//! are read from the host's `/proc` (only when Hermes runs on the engine's host), and
//! `/dev/shm` (a tmpfs the diff does not cover) once the session is over: from the
//! host ([`crate::shm`]), else with `tar` run in the container.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

use std::path::PathBuf;

use bollard::Docker;
use bollard::models::ChangeType;
use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, DownloadFromContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::StreamExt;

use hermes_core::sandbox::{ChangedFile, FileRead, SandboxError, VolatileFile};

use crate::error::{engine, is_not_found};
use crate::tar::{self, EntryKind};
use crate::upper::Entry;

/// Paths the diff lists that are never the attacker's files: the kernel's and the
/// engine's own mounts, and the name files Hermes or the engine writes at a box's
/// making (what root changes in them is not captured).
fn is_system_path(path: &str) -> bool {
    [
        "/proc",
        "/sys",
        "/dev",
        "/etc/hostname",
        "/etc/hosts",
        "/etc/resolv.conf",
    ]
    .iter()
    .any(|prefix| {
        path == *prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Paths added or modified in the container's writable layer: read from its overlay
/// upper directory when Hermes runs on the engine's host (with the layer's size,
/// when the walk saw all of it), else the engine's diff (no size).
pub(crate) async fn changed_paths(
    docker: &Docker,
    container_id: &str,
    upper: Option<PathBuf>,
    max: usize,
) -> Result<(Vec<String>, Option<u64>), SandboxError> {
    if let Some(upper) = upper {
        let walked = crate::background::run(move || crate::upper::read_layer(&upper)).await;
        match walked {
            Ok(Ok(layer)) => return Ok((wanted(layer.paths, max), layer.size)),
            Ok(Err(error)) => {
                tracing::debug!(target: "hermes::sandbox", %error, "cannot walk the upper directory; asking the engine");
            }
            Err(_) => {}
        }
    }
    let changes = match docker.container_changes(container_id).await {
        Ok(changes) => changes.unwrap_or_default(),
        Err(error) if is_not_found(&error) => {
            return Err(SandboxError::ContainerGone(container_id.to_owned()));
        }
        Err(error) => return Err(engine(error)),
    };
    let paths: Vec<String> = changes
        .into_iter()
        .filter(|change| !matches!(change.kind, ChangeType::_2))
        .map(|change| change.path)
        .collect();
    Ok((wanted(paths, max), None))
}

/// The changed paths worth reading: no system paths, no parents of other entries.
fn wanted(paths: Vec<String>, max: usize) -> Vec<String> {
    let paths = paths.into_iter().filter(|p| !is_system_path(p)).collect();
    leaves(paths).into_iter().take(max).collect()
}

/// The container's overlay upper directory, when this host has it (Hermes on the
/// engine's host, overlay2 storage).
pub(crate) async fn upper_dir(
    docker: &Docker,
    container_id: &str,
) -> Result<Option<std::path::PathBuf>, SandboxError> {
    let inspect = match docker.inspect_container(container_id, None).await {
        Ok(inspect) => inspect,
        Err(error) if is_not_found(&error) => {
            return Err(SandboxError::ContainerGone(container_id.to_owned()));
        }
        Err(error) => return Err(engine(error)),
    };
    let upper = inspect
        .graph_driver
        .and_then(|driver| driver.data.get("UpperDir").cloned())
        .map(std::path::PathBuf::from);
    Ok(upper.filter(|path| path.is_absolute() && path.is_dir()))
}

/// The paths that are not the parent directory of another one: the diff lists a
/// changed directory beside its changed entries, and reading a directory through
/// the archive endpoint would copy its whole tree.
fn leaves(paths: Vec<String>) -> Vec<String> {
    let mut parents = std::collections::HashSet::new();
    for path in &paths {
        let mut at = path.as_str();
        while let Some((parent, _)) = at.rsplit_once('/') {
            if !parents.insert(parent.to_owned()) {
                break;
            }
            at = parent;
        }
    }
    let mut kept: Vec<String> = paths
        .into_iter()
        .filter(|path| !parents.contains(path) && path != "/")
        .collect();
    kept.sort();
    kept
}

/// Type bits of Go's `os.FileMode` (what the engine's path stat carries): any of them
/// set means not a regular file.
const GO_MODE_TYPE_BITS: u32 = (1 << 31) // dir
    | (1 << 30) // append-only
    | (1 << 29) // exclusive
    | (1 << 28) // temporary
    | (1 << 27) // symlink
    | (1 << 26) // device
    | (1 << 25) // named pipe
    | (1 << 24) // socket
    | (1 << 21) // char device
    | (1 << 19); // irregular

/// The regular files among `paths`, with size and modification time to the second
/// (the same form as a tar header's, so the two compare), from the engine's path
/// stat: no file is read.
pub(crate) async fn stat_files(
    docker: &Docker,
    container_id: &str,
    upper: Option<PathBuf>,
    paths: Vec<String>,
) -> Vec<ChangedFile> {
    futures_util::stream::iter(paths)
        .map(|path| {
            let upper = upper.clone();
            async move {
                match local_entry(upper, &path, false, 0).await {
                    Some(Entry::File { size, mtime, .. }) => {
                        return Some(ChangedFile {
                            path,
                            size,
                            modified: epoch_to_rfc3339(mtime),
                        });
                    }
                    Some(Entry::Other) => return None,
                    Some(Entry::Absent) | None => {}
                }
                let options = ContainerArchiveInfoOptionsBuilder::default()
                    .path(&path)
                    .build();
                // Gone between the diff and the stat: left out.
                let stat = docker
                    .get_container_archive_info(container_id, Some(options))
                    .await
                    .ok()?;
                let modified = stat.modification_time.unwrap_or_default();
                let modified = match modified.get(..19) {
                    Some(seconds) if modified.ends_with('Z') => format!("{seconds}Z"),
                    _ => modified,
                };
                (stat.file_mode & GO_MODE_TYPE_BITS == 0 && stat.size >= 0).then_some(ChangedFile {
                    path,
                    size: stat.size as u64,
                    modified,
                })
            }
        })
        .buffer_unordered(PARALLEL_READS)
        .filter_map(std::future::ready)
        .collect()
        .await
}

/// Files read at once (each through the engine's archive endpoint).
const PARALLEL_READS: usize = 8;

/// What reading one path found.
enum Found {
    /// A regular file: its stat, and its content when asked for and within the limit.
    File(ChangedFile, FileRead),
    /// A directory, a link, a device, or nothing any more.
    Other,
}

/// Reads one path through the engine's archive endpoint (a tar of that path): the
/// header gives the stat; the content follows when `content` is asked for and within
/// `max_size`. The stream is dropped as soon as what is wanted is there.
async fn read_one(
    docker: &Docker,
    container_id: &str,
    path: &str,
    max_size: u64,
    content: bool,
) -> Result<Found, SandboxError> {
    let options = DownloadFromContainerOptionsBuilder::default()
        .path(path)
        .build();
    let mut stream = docker.download_from_container(container_id, Some(options));
    let cap = usize::try_from(max_size)
        .unwrap_or(usize::MAX)
        .saturating_add(64 << 10);
    let mut archive = Vec::new();
    loop {
        // What the bytes so far say.
        if let Some(entry) = tar::entries(&archive, 1).into_iter().next() {
            if entry.kind != EntryKind::File {
                return Ok(Found::Other);
            }
            let stat = ChangedFile {
                path: path.to_owned(),
                size: entry.size,
                modified: epoch_to_rfc3339(entry.mtime),
            };
            if !content {
                return Ok(Found::File(stat, FileRead::Unavailable));
            }
            if entry.size > max_size {
                let size = entry.size;
                return Ok(Found::File(stat, FileRead::TooLarge(size)));
            }
            if let Some(data) = entry.data {
                return Ok(Found::File(stat, FileRead::Content(Bytes::from(data))));
            }
        }
        if archive.len() > cap {
            return Ok(Found::Other);
        }
        match stream.next().await {
            Some(Ok(bytes)) => archive.extend_from_slice(&bytes),
            Some(Err(error)) if is_not_found(&error) => return Ok(Found::Other),
            Some(Err(error)) => return Err(engine(error)),
            None => return Ok(Found::Other),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch.
pub(crate) fn epoch_to_rfc3339(seconds: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
    let full = hermes_core::time::iso8601_micros(time);
    format!("{}Z", full.get(..19).unwrap_or("1970-01-01T00:00:00"))
}

/// The regular files among `paths`, with their stat and (with `content`) their
/// content up to `max_size`; eight at a time.
pub(crate) async fn read_files(
    docker: &Docker,
    container_id: &str,
    upper: Option<PathBuf>,
    paths: Vec<String>,
    max_size: u64,
    content: bool,
) -> Vec<(ChangedFile, FileRead)> {
    futures_util::stream::iter(paths)
        .map(|path| {
            let upper = upper.clone();
            async move {
                match local_entry(upper, &path, content, max_size).await {
                    Some(Entry::File {
                        size,
                        mtime,
                        content: bytes,
                    }) => {
                        let stat = ChangedFile {
                            path,
                            size,
                            modified: epoch_to_rfc3339(mtime),
                        };
                        let read = match bytes {
                            Some(bytes) => FileRead::Content(Bytes::from(bytes)),
                            // Asked for, but over the limit (or it grew past it).
                            None if content => FileRead::TooLarge(size),
                            None => FileRead::Unavailable,
                        };
                        return Some((stat, read));
                    }
                    Some(Entry::Other) => return None,
                    Some(Entry::Absent) | None => {}
                }
                match read_one(docker, container_id, &path, max_size, content).await {
                    Ok(Found::File(stat, read)) => Some((stat, read)),
                    Ok(Found::Other) => None,
                    Err(error) => {
                        tracing::warn!(target: "hermes::capture", container = %short(container_id), %error, "cannot read a file of the container");
                        None
                    }
                }
            }
        })
        .buffer_unordered(PARALLEL_READS)
        .filter_map(std::future::ready)
        .collect()
        .await
}

/// `path` looked up in the upper directory (off the runtime's threads); None without
/// an upper directory or when the lookup failed (the engine is asked instead).
async fn local_entry(
    upper: Option<PathBuf>,
    path: &str,
    read: bool,
    max_size: u64,
) -> Option<Entry> {
    let upper = upper?;
    let path = path.to_owned();
    crate::background::run(move || crate::upper::entry(&upper, &path, read, max_size))
        .await
        .ok()?
        .ok()
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The files of a tar stream made in the container (`/dev/shm`), prefixed with `dir`.
pub(crate) fn files_in_archive(
    archive: &[u8],
    dir: &str,
    max_files: usize,
    max_size: u64,
) -> Vec<VolatileFile> {
    tar::entries(archive, max_files.saturating_mul(4))
        .into_iter()
        .filter(|entry| entry.kind == EntryKind::File)
        .take(max_files)
        .map(|entry| {
            let relative = entry.path.trim_start_matches("./").trim_start_matches('/');
            let content = if entry.size > max_size {
                FileRead::TooLarge(entry.size)
            } else {
                entry
                    .data
                    .map_or(FileRead::Unavailable, |d| FileRead::Content(Bytes::from(d)))
            };
            VolatileFile {
                path: format!("{}/{relative}", dir.trim_end_matches('/')),
                content,
            }
        })
        .collect()
}

/// Cgroups looked into below a box's own, at most (systemd in a box makes a few
/// dozen: its scopes and slices).
const MAX_CGROUPS: usize = 1024;

/// The host pids in `init_pid`'s cgroup (the container's) and the cgroups below it,
/// when the cgroup filesystem shows it (v2, or v1's pids or memory hierarchy). A
/// systemd box keeps its first process in `init.scope` and the rest in slices and
/// scopes beside it: the box's cgroup is then the parent.
pub(crate) fn cgroup_pids(init_pid: i32) -> Option<Vec<i32>> {
    let cgroups = fs::read_to_string(format!("/proc/{init_pid}/cgroup")).ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.strip_suffix("/init.scope").unwrap_or(path);
        let dir = if controllers.is_empty() {
            format!("/sys/fs/cgroup{path}")
        } else if let Some(controller) = controllers
            .split(',')
            .find(|c| *c == "pids" || *c == "memory")
        {
            format!("/sys/fs/cgroup/{controller}{path}")
        } else {
            continue;
        };
        let pids = pids_below(std::path::Path::new(&dir));
        if pids.contains(&init_pid) {
            return Some(pids);
        }
    }
    None
}

/// The pids of the cgroup `dir` and of every cgroup below it (bounded).
fn pids_below(dir: &std::path::Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut looked = 0;
    while let Some(dir) = stack.pop() {
        looked += 1;
        if looked > MAX_CGROUPS {
            break;
        }
        if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(
                procs
                    .lines()
                    .filter_map(|line| line.trim().parse::<i32>().ok()),
            );
        }
        if let Ok(entries) = fs::read_dir(&dir) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    pids
}

fn pid_namespace(pid: i32) -> Option<std::path::PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// What a `/proc/PID/exe` or `/proc/PID/fd/N` link says about a file gone from the
/// filesystem: its former path, or `memfd:NAME`.
fn deleted_target(link: &str) -> Option<String> {
    let path = link.strip_suffix(" (deleted)")?;
    if let Some(name) = path.strip_prefix("/memfd:") {
        return Some(format!("memfd:{name}"));
    }
    path.starts_with('/').then(|| path.to_owned())
}

/// Reads an open file through its `/proc` link, up to `max_size`.
fn read_link_target(link: &str, max_size: u64) -> FileRead {
    // Only regular files are read. A FIFO would block the open until a writer comes
    // (a box's process can hold a deleted one), a device could act on being opened:
    // check the type first, and open without blocking in case it changed meanwhile.
    if !fs::metadata(link).is_ok_and(|meta| meta.is_file()) {
        return FileRead::Unavailable;
    }
    let Ok(file) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(link)
    else {
        return FileRead::Unavailable;
    };
    match file.metadata() {
        Ok(meta) if !meta.is_file() => return FileRead::Unavailable,
        Ok(meta) if meta.len() > max_size => return FileRead::TooLarge(meta.len()),
        Err(_) => return FileRead::Unavailable,
        Ok(_) => {}
    }
    let mut data = Vec::new();
    match file.take(max_size.saturating_add(1)).read_to_end(&mut data) {
        Ok(_) if data.len() as u64 > max_size => FileRead::TooLarge(data.len() as u64),
        Ok(_) => FileRead::Content(Bytes::from(data)),
        Err(_) => FileRead::Unavailable,
    }
}

/// What earlier looks at a box's processes found: each process (PID and start
/// time, so a reused PID is a new process) with the descriptor numbers it held.
#[derive(Debug, Default)]
pub(crate) struct FdScan {
    held: std::collections::HashMap<(i32, u64), Vec<String>>,
    passes: u32,
    /// When the last look began.
    pub(crate) looked_at: Option<std::time::Instant>,
}

/// Every this many running passes, every process's links are read again, whatever
/// changed (a descriptor number reused for another file keeps the set the same).
const FULL_SCAN_EVERY: u32 = 5;

/// A process's start time (clock ticks after boot), from `/proc/PID/stat`.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the name, which may hold anything: state is field 3, starttime field 22.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Deleted files that processes of the container (found by its init's PID namespace)
/// still run or hold open, read from the host's `/proc`. Empty when this host's
/// `/proc` does not show the container (Hermes in a container, remote engine).
///
/// A process whose descriptor numbers are the ones `scan` saw before is passed over
/// unless `full` (a deleted file it held then was read then); every
/// [`FULL_SCAN_EVERY`]th pass is full anyway. Reading each link of each daemon of a
/// systemd box cost about 150 readlinks a pass, most of a pass's time.
pub(crate) fn deleted_open_files(
    init_pid: i32,
    max_files: usize,
    max_size: u64,
    scan: &mut FdScan,
    full: bool,
) -> Vec<VolatileFile> {
    let Some(namespace) = pid_namespace(init_pid) else {
        return Vec::new();
    };
    scan.passes = scan.passes.wrapping_add(1);
    let full = full || scan.passes % FULL_SCAN_EVERY == 1;
    // The box's processes are the ones in its cgroups; failing that, those in its PID
    // namespace among all of the host's (a readlink per host process and pass, which
    // with 200 sessions typing took a core).
    let (pids, check_namespace) = match cgroup_pids(init_pid) {
        Some(pids) => (pids, false),
        None => {
            let Ok(proc_dir) = fs::read_dir("/proc") else {
                return Vec::new();
            };
            let pids = proc_dir
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
                .collect();
            (pids, true)
        }
    };
    let mut held = std::collections::HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut found = Vec::new();
    for pid in pids {
        if check_namespace && pid_namespace(pid).as_deref() != Some(namespace.as_path()) {
            continue;
        }
        let fds: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.flatten()
                    .take(1024)
                    .map(|fd| fd.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let key = start_time(pid).map(|start| (pid, start));
        let unchanged = key
            .and_then(|key| scan.held.get(&key))
            .is_some_and(|before| *before == fds);
        let mut links = Vec::new();
        if full || !unchanged {
            links.push(format!("/proc/{pid}/exe"));
            links.extend(fds.iter().map(|fd| format!("/proc/{pid}/fd/{fd}")));
        }
        let mut complete = true;
        for link in links {
            if found.len() >= max_files {
                complete = false;
                break;
            }
            let Some(target) = fs::read_link(&link)
                .ok()
                .and_then(|t| deleted_target(&t.to_string_lossy()))
            else {
                continue;
            };
            let content = read_link_target(&link, max_size);
            // The same file open in several processes (or as exe and fd) once.
            let identity = match &content {
                FileRead::Content(data) => (target.clone(), data.len() as u64),
                FileRead::TooLarge(size) => (target.clone(), *size),
                FileRead::Unavailable => continue,
            };
            if seen.insert(identity) {
                found.push(VolatileFile {
                    path: target,
                    content,
                });
            }
        }
        // Remembered only when all its links were read (or none needed reading).
        if let Some(key) = key.filter(|_| complete) {
            held.insert(key, fds);
        }
    }
    // Processes gone since are forgotten.
    scan.held = held;
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_paths_are_left_out() {
        assert!(is_system_path("/proc"));
        assert!(is_system_path("/dev/shm"));
        assert!(is_system_path("/etc/hosts"));
        assert!(!is_system_path("/etc/hosts.allow"));
        assert!(!is_system_path("/tmp/x"));
        assert!(!is_system_path("/devices"));
    }

    #[test]
    fn directories_of_the_diff_are_left_out() {
        let paths = [
            "/tmp",
            "/tmp/a",
            "/tmp/ab",
            "/root/.cache",
            "/root/.cache/k",
            "/var/x",
            "/tmp/ab-c",
            "/tmp/ab/z",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            leaves(paths),
            [
                "/root/.cache/k",
                "/tmp/a",
                "/tmp/ab-c",
                "/tmp/ab/z",
                "/var/x"
            ]
        );
        assert_eq!(epoch_to_rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn deleted_link_targets() {
        assert_eq!(deleted_target("/tmp/x (deleted)"), Some("/tmp/x".into()));
        assert_eq!(
            deleted_target("/memfd:kworker (deleted)"),
            Some("memfd:kworker".into())
        );
        assert_eq!(deleted_target("/tmp/x"), None);
        assert_eq!(deleted_target("socket:[123]"), None);
        assert_eq!(deleted_target("anon_inode:[eventfd] (deleted)"), None);
    }

    #[test]
    fn a_deleted_file_held_open_by_a_process_of_this_namespace_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dropper.bin");
        std::fs::write(&path, b"\x7fELF payload").expect("write");
        let held = fs::File::open(&path).expect("open");
        std::fs::remove_file(&path).expect("rm");
        let me = std::process::id() as i32;
        let found = deleted_open_files(me, 10_000, 1 << 20, &mut FdScan::default(), true);
        let wanted = path.display().to_string();
        let hit = found.iter().find(|f| f.path == wanted);
        assert_eq!(
            hit.map(|f| &f.content),
            Some(&FileRead::Content(Bytes::from_static(b"\x7fELF payload"))),
            "{found:?}"
        );
        drop(held);
    }

    #[test]
    fn a_deleted_fifo_held_open_is_skipped_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("trap");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        // Held open for reading only, with no writer, and deleted, as a box's process
        // can: a blocking open of it for reading waits for a writer that never comes.
        let held = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .expect("open fifo");
        std::fs::remove_file(&fifo).expect("rm");
        let me = std::process::id() as i32;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(deleted_open_files(
                me,
                10_000,
                1 << 20,
                &mut FdScan::default(),
                true,
            ));
        });
        let found = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the scan blocked on the FIFO");
        let wanted = fifo.display().to_string();
        assert!(found.iter().all(|f| f.path != wanted), "{found:?}");
        drop(held);
    }

    #[test]
    fn a_process_whose_descriptors_did_not_change_is_read_again_only_on_full_passes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("held.bin");
        std::fs::write(&path, b"payload").expect("write");
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exec 3<\"$1\"; exec sleep 30", "sh"])
            .arg(&path)
            .spawn()
            .expect("spawn");
        let pid = child.id() as i32;
        let fd = format!("/proc/{pid}/fd/3");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_link(&fd).is_err() || start_time(pid).is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never held the file"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // sh has become sleep (same PID), holding the file.
        while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n"
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never became sleep"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::fs::remove_file(&path).expect("rm");
        let wanted = path.display().to_string();
        let mut scan = FdScan::default();
        let mut finds = Vec::new();
        for pass in 1..=FULL_SCAN_EVERY + 2 {
            let full = pass == 3;
            let found = deleted_open_files(pid, 10_000, 1 << 20, &mut scan, full);
            finds.push(found.iter().any(|f| f.path == wanted));
        }
        let _ = child.kill();
        let _ = child.wait();
        // Pass 1 and every FULL_SCAN_EVERY-th after it read everything, as does a
        // pass asked to be full (3); the others pass the unchanged process over.
        let expected: Vec<bool> = (1..=FULL_SCAN_EVERY + 2)
            .map(|pass| pass == 3 || pass % FULL_SCAN_EVERY == 1)
            .collect();
        assert_eq!(finds, expected);
    }

    #[test]
    fn a_systemd_boxs_processes_are_found_in_the_cgroups_below_its_own() {
        let root = tempfile::tempdir().expect("tempdir");
        let base = root.path();
        std::fs::write(base.join("cgroup.procs"), "").expect("write");
        std::fs::create_dir_all(base.join("init.scope")).expect("mkdir");
        std::fs::write(base.join("init.scope/cgroup.procs"), "10\n").expect("write");
        std::fs::create_dir_all(base.join("system.slice/cron.service")).expect("mkdir");
        std::fs::write(base.join("system.slice/cgroup.procs"), "").expect("write");
        std::fs::write(
            base.join("system.slice/cron.service/cgroup.procs"),
            "11\n12\n",
        )
        .expect("write");
        std::fs::create_dir_all(base.join("user.slice/user-0.slice/session-1.scope"))
            .expect("mkdir");
        std::fs::write(
            base.join("user.slice/user-0.slice/session-1.scope/cgroup.procs"),
            "13\n",
        )
        .expect("write");
        let mut pids = pids_below(base);
        pids.sort_unstable();
        assert_eq!(pids, [10, 11, 12, 13]);
    }
}
