//! LXCFS: its /proc files bound read-only over a box's, so `free`, `nproc`,
//! `uptime` and /proc/cpuinfo in the box show the box's own limits, not the host's.
//!
//! Whether it runs is checked at start-up and again before every new box (a stopped
//! or restarted LXCFS leaves its old mount "Transport endpoint is not connected").

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hermes_core::config::{LxcfsConfig, LxcfsMode};
use hermes_core::metrics::render_family;

/// The files bound, relative to the LXCFS mount; each lands on `/` + the same path.
pub const FILES: &[&str] = &[
    "proc/cpuinfo",
    "proc/diskstats",
    "proc/loadavg",
    "proc/meminfo",
    "proc/stat",
    "proc/swaps",
    "proc/uptime",
    "sys/devices/system/cpu/online",
];

/// A probe of a FUSE file waits this long (a hung daemon blocks reads).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why LXCFS cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LxcfsProblem {
    /// Nothing FUSE is mounted there.
    #[error("{0} is not a FUSE mount (is lxcfs running? scripts/ensure-lxcfs.sh starts it)")]
    NotMounted(PathBuf),
    /// The mount table could not be read.
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountTable(std::io::Error),
    /// A file LXCFS should serve is missing or unreadable (a dead daemon's mount).
    #[error("cannot read {file}: {source}")]
    Unreadable {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The probe did not finish in time.
    #[error("{0} did not answer within {1} s")]
    Hung(PathBuf, u64),
}

/// Which mount LXCFS is: a restarted LXCFS mounts anew. Linux 6.8+ gives a mount id
/// never reused (statx `STATX_MNT_ID_UNIQUE`); older kernels only mountinfo's, which a
/// new mount may take over from the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountId(u64);

/// `STATX_MNT_ID_UNIQUE` (Linux 6.8), not in every libc yet.
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// The never-reused id of the mount `path` is on, when the kernel has one.
fn unique_mount_id(path: &Path) -> Option<MountId> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buffer = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `path` is NUL-terminated and `buffer` a statx the call fills in.
    let status = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            STATX_MNT_ID_UNIQUE,
            buffer.as_mut_ptr(),
        )
    };
    if status != 0 {
        return None;
    }
    // SAFETY: statx succeeded and filled the buffer (zeroed before in any case).
    let found = unsafe { buffer.assume_init() };
    (found.stx_mask & STATX_MNT_ID_UNIQUE != 0).then_some(MountId(found.stx_mnt_id))
}

/// The mount id of the last FUSE file system mounted at `root` (mounts stack: the
/// last one is what paths resolve to).
pub fn fuse_mount_at(mountinfo: &str, root: &Path) -> Option<MountId> {
    let wanted = escape_mount_path(&root.to_string_lossy());
    mountinfo
        .lines()
        .rev()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let separator = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(separator + 1)?;
            let mount_point = fields.get(4)?;
            let id = fields.first()?.parse().ok()?;
            (*mount_point == wanted && (*fstype == "fuse" || fstype.starts_with("fuse.")))
                .then_some(MountId(id))
        })
        .next()
}

/// How the kernel writes a path in mountinfo (space, tab, newline, backslash octal).
fn escape_mount_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// Checks (blocking) that LXCFS is mounted at `root` and serves every bound file.
pub fn probe_blocking(root: &Path) -> Result<MountId, LxcfsProblem> {
    probe_files_blocking(root, FILES)
}

/// Checks (blocking) that a FUSE server is mounted at `root` and serves `files`.
pub fn probe_files_blocking(root: &Path, files: &[&str]) -> Result<MountId, LxcfsProblem> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(LxcfsProblem::MountTable)?;
    let id =
        fuse_mount_at(&mountinfo, root).ok_or_else(|| LxcfsProblem::NotMounted(root.into()))?;
    for file in files {
        let path = root.join(file);
        let mut buffer = [0u8; 64];
        // A read, not a stat: a dead daemon's mount fails only then.
        std::fs::File::open(&path)
            .and_then(|mut f| f.read(&mut buffer))
            .map_err(|source| LxcfsProblem::Unreadable { file: path, source })?;
    }
    Ok(unique_mount_id(root).unwrap_or(id))
}

/// The mounts a probe's thread is reading now: a read of a hung FUSE file never
/// returns, so at most one thread per mount is ever left waiting on it (not one more
/// every few seconds). Per mount: a hung clock server must not make LXCFS look hung
/// too, nor the other way round.
static PROBING: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn probing() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
    PROBING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Frees its mount's place in [`PROBING`] when the probe's thread is done, however
/// it ends.
struct ProbeSlot(PathBuf);

impl Drop for ProbeSlot {
    fn drop(&mut self) {
        probing().remove(&self.0);
    }
}

/// [`probe_files_blocking`] off the async threads, bounded in time; while an earlier
/// probe of the same mount is still stuck, answers `Hung` at once without starting
/// another.
async fn bounded_probe(
    root: &Path,
    files: &'static [&'static str],
) -> Result<MountId, LxcfsProblem> {
    let hung = || LxcfsProblem::Hung(root.to_path_buf(), PROBE_TIMEOUT.as_secs());
    if !probing().insert(root.to_path_buf()) {
        return Err(hung());
    }
    let slot = ProbeSlot(root.to_path_buf());
    let owned = root.to_path_buf();
    let probe = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        probe_files_blocking(&owned, files)
    });
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) | Err(_) => Err(hung()),
    }
}

/// [`probe_blocking`] off the async threads, bounded in time; while an earlier probe
/// is still stuck, answers `Hung` at once without starting another.
pub async fn probe(root: &Path) -> Result<MountId, LxcfsProblem> {
    bounded_probe(root, FILES).await
}

/// [`probe`], and at the same time, bounded on its own, the boxes' clock files at
/// `clock` (see [`crate::clock_files`]).
async fn probe_with_clock(
    root: &Path,
    clock: Option<&Path>,
) -> (
    Result<MountId, LxcfsProblem>,
    Option<Result<MountId, LxcfsProblem>>,
) {
    let clock = async {
        match clock {
            Some(clock) => Some(bounded_probe(clock, crate::clock_files::FILES).await),
            None => None,
        }
    };
    tokio::join!(probe(root), clock)
}

/// What a new box gets, decided just before it is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForNewBox {
    /// Bind LXCFS's files.
    Bind(LxcfsFiles),
    /// No LXCFS (off, or `auto` and it is not running).
    Without,
}

/// The files a new box gets bound over its /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LxcfsFiles {
    /// LXCFS's mount.
    pub root: PathBuf,
    /// Where its /proc/stat and /proc/uptime come from.
    pub clock: ClockFiles,
}

/// Where a box's /proc/stat and /proc/uptime come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockFiles {
    /// LXCFS's: the box is on the host's clock, whose btime LXCFS copies.
    Lxcfs,
    /// The box is on a clock of its own, and these come from the clock files' mount
    /// ([`crate::clock_files`]): its CPUs and its clock.
    Served(PathBuf),
    /// The box is on a clock of its own and that mount does not answer: the kernel's
    /// own (its clock, the host's CPUs), not LXCFS's whose btime would move every
    /// START in `ps` back by the host's uptime.
    Kernel,
}

/// Whether the mount changed since the last look (LXCFS restarted, stopped or came).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Same as before (or the first look).
    Same,
    /// Boxes made before this look have stale or missing LXCFS files.
    Changed,
}

/// LXCFS as this sensor uses it: the configured mode and what was last seen.
pub struct Lxcfs {
    mode: LxcfsMode,
    root: PathBuf,
    /// None: not looked yet. Some: what LXCFS's mount and the clock files' were
    /// (None: not usable).
    seen: Mutex<Option<(Option<MountId>, Option<MountId>)>>,
    /// Set when boxes run on a clock of their own: the clock files' mount.
    own_clock: std::sync::OnceLock<PathBuf>,
    /// The last new box got LXCFS.
    active: AtomicBool,
    /// Boxes created without LXCFS while `auto` wanted it.
    without: AtomicU64,
    /// Probes in a row that timed out.
    hung: AtomicU64,
}

/// Timed-out probes in a row before a mount that answered before counts as gone: a
/// box reading /proc in a loop can slow LXCFS for a while, which must not recycle
/// every warm box each time.
const HUNG_BEFORE_GONE: u64 = 3;

impl Lxcfs {
    /// From `container_pool.security.lxcfs`.
    pub fn from_config(config: &LxcfsConfig) -> Self {
        Lxcfs {
            mode: config.mode,
            root: config.path.clone(),
            seen: Mutex::new(None),
            own_clock: std::sync::OnceLock::new(),
            active: AtomicBool::new(false),
            without: AtomicU64::new(0),
            hung: AtomicU64::new(0),
        }
    }

    /// The configured mode.
    pub fn mode(&self) -> LxcfsMode {
        self.mode
    }

    /// The configured mount point.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Boxes run on a clock of their own: their /proc/stat and /proc/uptime come
    /// from the clock files' mount at `clock` (set once, before the first box).
    pub fn set_own_clock(&self, clock: PathBuf) {
        let _ = self.own_clock.set(clock);
    }

    /// What a box made now gets, given LXCFS answers and what the clock files did.
    fn files(&self, clock: Option<&Result<MountId, LxcfsProblem>>) -> LxcfsFiles {
        let clock = match (self.own_clock.get(), clock) {
            (None, _) => ClockFiles::Lxcfs,
            (Some(root), Some(Ok(_))) => ClockFiles::Served(root.clone()),
            (Some(_), _) => ClockFiles::Kernel,
        };
        LxcfsFiles {
            root: self.root.clone(),
            clock,
        }
    }

    /// Looks now: what a new box gets, and whether that changed since the last look.
    /// Err only with `required` and LXCFS unusable.
    pub async fn look(&self) -> (Result<ForNewBox, LxcfsProblem>, Change) {
        if self.mode == LxcfsMode::Off {
            return (Ok(ForNewBox::Without), Change::Same);
        }
        let (probed, clock) =
            probe_with_clock(&self.root, self.own_clock.get().map(PathBuf::as_path)).await;
        let hung = |r: &Result<MountId, LxcfsProblem>| matches!(r, Err(LxcfsProblem::Hung(..)));
        if hung(&probed) || clock.as_ref().is_some_and(hung) {
            let streak = self.hung.fetch_add(1, Ordering::Relaxed) + 1;
            let before = *self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((Some(_), clock_before)) = before
                && streak < HUNG_BEFORE_GONE
            {
                let clock_before = clock_before.map(Ok);
                return (
                    Ok(ForNewBox::Bind(self.files(clock_before.as_ref()))),
                    Change::Same,
                );
            }
        } else {
            self.hung.store(0, Ordering::Relaxed);
        }
        let clock_now = clock.as_ref().and_then(|c| c.as_ref().ok().copied());
        if let Some(Err(problem)) = &clock
            && probed.is_ok()
        {
            let before = *self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if before.is_none_or(|(_, clock_before)| clock_before.is_some()) {
                tracing::warn!(target: "hermes::sandbox", %problem, "the boxes' clock files do not answer (scripts/ensure-box-proc.sh starts their server): new boxes get the kernel's /proc/stat and /proc/uptime, right about their clock but showing the host's CPUs");
            }
        }
        let now = (probed.as_ref().ok().copied(), clock_now);
        let change = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let before = seen.replace(now);
            match before {
                Some(before) if before != now => Change::Changed,
                _ => Change::Same,
            }
        };
        self.active.store(now.0.is_some(), Ordering::Relaxed);
        let result = match probed {
            Ok(_) => Ok(ForNewBox::Bind(self.files(clock.as_ref()))),
            Err(problem) if self.mode == LxcfsMode::Required => Err(problem),
            Err(problem) => {
                self.without.fetch_add(1, Ordering::Relaxed);
                if change == Change::Changed {
                    tracing::warn!(target: "hermes::sandbox", %problem, "LXCFS is gone: new boxes start without it and show the host's memory, CPUs and uptime");
                }
                Ok(ForNewBox::Without)
            }
        };
        (result, change)
    }

    /// Whether new boxes get LXCFS as of the last look.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Appends the LXCFS metrics (Prometheus text format).
    pub fn render_metrics(&self, out: &mut String) {
        let mode = match self.mode {
            LxcfsMode::Auto => "auto",
            LxcfsMode::Required => "required",
            LxcfsMode::Off => "off",
        };
        render_family(
            out,
            "hermes_lxcfs_active",
            "gauge",
            "1 when new boxes get LXCFS's /proc files (their own memory, CPUs, uptime), 0 when they show the host's.",
            &[(&format!("mode=\"{mode}\""), u64::from(self.is_active()))],
        );
        render_family(
            out,
            "hermes_lxcfs_missing_total",
            "counter",
            "Boxes created without LXCFS although lxcfs.mode auto wanted it.",
            &[("", self.without.load(Ordering::Relaxed))],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
48 27 0:42 / /var/lib/lxcfs rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other
49 27 0:43 / /srv/lxc\\040fs rw - fuse lxcfs rw
50 27 0:44 / /var/lib/other rw - tmpfs tmpfs rw
61 27 0:52 / /var/lib/lxcfs rw,nosuid,nodev,relatime shared:5 - fuse.lxcfs lxcfs rw
";

    #[test]
    fn the_last_fuse_mount_at_the_path_is_found() {
        assert_eq!(
            fuse_mount_at(MOUNTINFO, Path::new("/var/lib/lxcfs")),
            Some(MountId(61))
        );
        assert_eq!(
            fuse_mount_at(MOUNTINFO, Path::new("/srv/lxc fs")),
            Some(MountId(49))
        );
    }

    #[test]
    fn other_file_systems_and_paths_are_not_lxcfs() {
        assert_eq!(fuse_mount_at(MOUNTINFO, Path::new("/var/lib/other")), None);
        assert_eq!(fuse_mount_at(MOUNTINFO, Path::new("/var/lib")), None);
        assert_eq!(fuse_mount_at(MOUNTINFO, Path::new("/")), None);
        assert_eq!(fuse_mount_at("garbage\n\n- -", Path::new("/")), None);
    }

    #[test]
    fn unique_mount_ids_tell_mounts_apart() {
        let (Some(root), Some(proc)) = (
            unique_mount_id(Path::new("/")),
            unique_mount_id(Path::new("/proc")),
        ) else {
            eprintln!("no unique mount ids on this kernel (before Linux 6.8)");
            return;
        };
        assert_ne!(root, proc);
        assert_eq!(unique_mount_id(Path::new("/")), Some(root));
    }

    #[tokio::test]
    async fn a_plain_directory_is_no_lxcfs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let problem = probe(dir.path()).await.expect_err("not a mount");
        assert!(matches!(problem, LxcfsProblem::NotMounted(_)), "{problem}");
        for (mode, wanted_ok) in [(LxcfsMode::Auto, true), (LxcfsMode::Required, false)] {
            let lxcfs = Lxcfs::from_config(&LxcfsConfig {
                mode,
                path: dir.path().to_path_buf(),
            });
            let (result, change) = lxcfs.look().await;
            assert_eq!(result.is_ok(), wanted_ok, "{mode:?}");
            if wanted_ok {
                assert_eq!(result.ok(), Some(ForNewBox::Without));
            }
            assert_eq!(change, Change::Same);
            assert!(!lxcfs.is_active());
            let mut metrics = String::new();
            lxcfs.render_metrics(&mut metrics);
            assert!(metrics.contains("hermes_lxcfs_active{mode="), "{metrics}");
        }
    }

    /// A FUSE mount whose server never answers (not even the kernel's first request):
    /// every open under it waits until it is unmounted.
    struct HungMount {
        dir: tempfile::TempDir,
        _device: std::fs::File,
    }

    impl HungMount {
        fn new() -> HungMount {
            use std::os::fd::AsRawFd;
            let device = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/fuse")
                .expect("/dev/fuse (tests run as root)");
            let dir = tempfile::tempdir().expect("tempdir");
            let target = std::ffi::CString::new(dir.path().to_str().expect("utf-8")).expect("c");
            let options = std::ffi::CString::new(format!(
                "fd={},rootmode=40000,user_id=0,group_id=0",
                device.as_raw_fd()
            ))
            .expect("c");
            // SAFETY: valid C strings for the call's duration; the result is checked.
            let mounted = unsafe {
                libc::mount(
                    c"hung".as_ptr(),
                    target.as_ptr(),
                    c"fuse".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    options.as_ptr().cast(),
                )
            };
            assert_eq!(mounted, 0, "mount: {}", std::io::Error::last_os_error());
            HungMount {
                dir,
                _device: device,
            }
        }
    }

    impl Drop for HungMount {
        fn drop(&mut self) {
            let target = std::ffi::CString::new(self.dir.path().to_str().unwrap_or("")).ok();
            if let Some(target) = target {
                // SAFETY: a valid C string. Detached here; the device closes right
                // after (the field's drop), which ends the connection and fails the
                // stuck open.
                unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }

    /// The clock files' server hangs: their probe says so, and keeps saying so at
    /// once while its first probe is stuck, but LXCFS's own probe still runs and
    /// answers for LXCFS (here: a plain directory, not mounted).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_clock_server_leaves_lxcfs_probed_on_its_own() {
        let hung = HungMount::new();
        let plain = tempfile::tempdir().expect("tempdir");
        let started = std::time::Instant::now();
        let (_, clock) = probe_with_clock(plain.path(), Some(hung.dir.path())).await;
        assert!(
            started.elapsed() < PROBE_TIMEOUT * 2,
            "the probe is bounded"
        );
        assert!(
            matches!(clock, Some(Err(LxcfsProblem::Hung(..)))),
            "{clock:?}"
        );
        let hung_path = hung.dir.path().to_path_buf();
        // Its thread is stuck now; LXCFS is still probed.
        let started = std::time::Instant::now();
        let (lxcfs, clock) = probe_with_clock(plain.path(), Some(hung.dir.path())).await;
        assert!(
            matches!(lxcfs, Err(LxcfsProblem::NotMounted(_))),
            "{lxcfs:?}"
        );
        assert!(
            matches!(clock, Some(Err(LxcfsProblem::Hung(..)))),
            "{clock:?}"
        );
        assert!(
            started.elapsed() < PROBE_TIMEOUT,
            "a probe of the stuck server answers at once"
        );
        drop(hung);
        // The stuck thread ends once the mount is gone, and frees its slot.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let stuck = || probing().contains(hung_path.as_path());
        while stuck() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!stuck(), "the stuck probe's thread ended");
    }

    #[tokio::test]
    async fn off_never_looks() {
        let lxcfs = Lxcfs::from_config(&LxcfsConfig {
            mode: LxcfsMode::Off,
            path: PathBuf::from("/nonexistent"),
        });
        let (result, change) = lxcfs.look().await;
        assert_eq!(result.ok(), Some(ForNewBox::Without));
        assert_eq!(change, Change::Same);
    }
}
