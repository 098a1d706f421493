//! The watch on the boxes' own cgroups (crate::cgroup_delegation): cgroup v1 cannot
//! cap how many groups a subtree holds, and their kernel memory is not charged to the
//! box, while root in the box can make over 100,000 a second. So every directory of a
//! box's part of the hierarchy is watched with inotify, and the first group past
//! [`MAX_GROUPS`], one nested deeper than systemd ever nests, one renamed (which
//! would leave its watch with a stale path) or one that cannot be watched freezes the
//! box at once through its freezer cgroup; the pool then kills it. Once the box is
//! stopped its groups are counted and removed through descriptors, so a tree deeper
//! than PATH_MAX goes too.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::openat::open_at;

/// A box with more cgroups than this is stopped. systemd on a small server makes a
/// few dozen (a slice per user, a scope per session, a group per service).
pub const MAX_GROUPS: usize = 512;

const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;

/// What a box did wrong, sent to the pool (which kills it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub container_id: String,
    pub reason: String,
}

/// Deeper than this, or with longer paths, is no systemd's doing: the box is stopped.
const MAX_DEPTH: usize = 16;
const MAX_PATH: usize = 3000;

#[derive(Debug, Default)]
struct State {
    /// Per box: its groups counted, and its freezer's state file.
    boxes: HashMap<String, (usize, PathBuf)>,
    /// Watch descriptor → (box, the directory, its depth below the box's group).
    watches: HashMap<i32, (String, PathBuf, usize)>,
    /// Boxes already frozen and reported.
    violated: std::collections::HashSet<String>,
}

/// One inotify instance for every box of the pool, read by a thread of its own.
#[derive(Debug)]
pub struct CgroupWatch {
    inotify: Arc<OwnedFd>,
    state: Arc<Mutex<State>>,
    violations: tokio::sync::mpsc::UnboundedSender<Violation>,
}

impl CgroupWatch {
    /// Starts the reading thread; violations arrive on the returned receiver.
    pub fn start() -> io::Result<(Self, tokio::sync::mpsc::UnboundedReceiver<Violation>)> {
        // SAFETY: inotify_init1 takes flags only; the result is checked.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        let inotify = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let watch = CgroupWatch {
            inotify,
            state: Arc::new(Mutex::new(State::default())),
            violations: tx,
        };
        let reader = CgroupWatch {
            inotify: Arc::clone(&watch.inotify),
            state: Arc::clone(&watch.state),
            violations: watch.violations.clone(),
        };
        std::thread::Builder::new()
            .name("cgroup-watch".to_owned())
            .spawn(move || reader.read_loop())?;
        Ok((watch, rx))
    }

    /// Watches box `id`'s group `group` (and everything under it); `freezer` is its
    /// freezer cgroup's `freezer.state`.
    pub fn watch(&self, id: &str, group: &Path, freezer: PathBuf) {
        {
            let mut state = self.lock();
            state.boxes.insert(id.to_owned(), (0, freezer));
            state.violated.remove(id);
        }
        self.add_tree(id, group.to_path_buf(), 0);
    }

    /// Forgets box `id` (stopped or removed); its watches go with its directories.
    pub fn forget(&self, id: &str) {
        let mut state = self.lock();
        state.boxes.remove(id);
        state.violated.remove(id);
        let gone: Vec<i32> = state
            .watches
            .iter()
            .filter(|(_, (owner, _, _))| owner == id)
            .map(|(wd, _)| *wd)
            .collect();
        for wd in gone {
            state.watches.remove(&wd);
            // SAFETY: removing a watch of our own descriptor; failure (already gone)
            // is harmless.
            unsafe { libc::inotify_rm_watch(self.inotify.as_raw_fd(), wd) };
        }
    }

    /// The groups counted for box `id` (None when not watched).
    pub fn groups(&self, id: &str) -> Option<usize> {
        self.lock().boxes.get(id).map(|(count, _)| *count)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches `dir` and every directory under it, counting each (watch first, then
    /// list: nothing made in between is missed).
    fn add_tree(&self, id: &str, dir: PathBuf, depth: usize) {
        let mut pending = vec![(dir, depth)];
        while let Some((dir, depth)) = pending.pop() {
            if depth > MAX_DEPTH || dir.as_os_str().len() > MAX_PATH {
                self.violate_known(id, format!("cgroups nested deeper than {MAX_DEPTH}"));
                return;
            }
            let Ok(cpath) = CString::new(dir.as_os_str().as_encoded_bytes()) else {
                return;
            };
            let mask = libc::IN_CREATE
                | libc::IN_DELETE_SELF
                | libc::IN_MOVE_SELF
                | libc::IN_ONLYDIR
                | libc::IN_DONT_FOLLOW;
            // SAFETY: a NUL-terminated path and our own inotify descriptor.
            let wd =
                unsafe { libc::inotify_add_watch(self.inotify.as_raw_fd(), cpath.as_ptr(), mask) };
            if wd < 0 {
                let error = io::Error::last_os_error();
                if error.raw_os_error() != Some(libc::ENOENT) {
                    self.violate_known(id, format!("a cgroup cannot be watched: {error}"));
                    return;
                }
                continue;
            }
            let over = {
                let mut state = self.lock();
                // A directory seen twice (by its event and by its parent's listing)
                // has one watch descriptor: it counts once.
                let new = !state.watches.contains_key(&wd);
                let Some((count, freezer)) = state.boxes.get_mut(id) else {
                    return;
                };
                if new {
                    *count += 1;
                }
                let over = (*count > MAX_GROUPS).then(|| freezer.clone());
                if new {
                    state
                        .watches
                        .insert(wd, (id.to_owned(), dir.clone(), depth));
                }
                over
            };
            if let Some(freezer) = over {
                self.violate(id, &freezer, format!("more than {MAX_GROUPS} cgroups"));
                return;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    pending.push((entry.path(), depth + 1));
                }
            }
        }
    }

    fn read_loop(&self) {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reading into a buffer of the given length from our descriptor.
            let read = unsafe {
                libc::read(
                    self.inotify.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                )
            };
            if read < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(target: "hermes::sandbox", error = %io::Error::last_os_error(), "the cgroup watch stopped reading");
                return;
            }
            let read = read as usize;
            let header = std::mem::size_of::<libc::inotify_event>();
            let mut offset = 0usize;
            while offset + header <= read {
                // SAFETY: the kernel wrote whole events; read_unaligned copes with the
                // buffer's alignment.
                let event: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buffer[offset..].as_ptr().cast()) };
                let name_start = offset + header;
                let name_end = (name_start + event.len as usize).min(read);
                let name: Vec<u8> = buffer[name_start..name_end]
                    .iter()
                    .copied()
                    .take_while(|b| *b != 0)
                    .collect();
                offset = name_end;
                self.on_event(event.wd, event.mask, &name);
            }
        }
    }

    fn on_event(&self, wd: i32, mask: u32, name: &[u8]) {
        if mask & libc::IN_Q_OVERFLOW != 0 {
            // Events were lost: every box is suspect.
            let ids: Vec<String> = self.lock().boxes.keys().cloned().collect();
            for id in ids {
                self.violate_known(&id, "the cgroup watch overflowed".to_owned());
            }
            return;
        }
        if mask & libc::IN_MOVE_SELF != 0 {
            // systemd never renames a group; a renamed one would hide what is made in
            // it behind a path that no longer exists.
            let id = self.lock().watches.get(&wd).map(|(id, _, _)| id.clone());
            if let Some(id) = id {
                self.violate_known(&id, "a cgroup was renamed".to_owned());
            }
            return;
        }
        if mask & (libc::IN_DELETE_SELF | libc::IN_IGNORED) != 0 {
            // A counted directory is gone (its own watch says so, once).
            let mut state = self.lock();
            if let Some((id, _, _)) = state.watches.remove(&wd)
                && let Some((count, _)) = state.boxes.get_mut(&id)
            {
                *count = count.saturating_sub(1);
            }
            return;
        }
        if mask & libc::IN_CREATE == 0 || mask & libc::IN_ISDIR == 0 {
            return;
        }
        let Some((id, dir, depth)) = self.lock().watches.get(&wd).cloned() else {
            return;
        };
        let name = std::ffi::OsStr::from_bytes(name);
        self.add_tree(&id, dir.join(name), depth + 1);
    }

    fn violate_known(&self, id: &str, reason: String) {
        let freezer = self.lock().boxes.get(id).map(|(_, f)| f.clone());
        if let Some(freezer) = freezer {
            self.violate(id, &freezer, reason);
        }
    }

    /// Freezes the box now (the kernel stops every process of it) and tells the pool,
    /// once per box (the events queued behind the first are no news).
    fn violate(&self, id: &str, freezer: &Path, reason: String) {
        if !self.lock().violated.insert(id.to_owned()) {
            return;
        }
        let _ = std::fs::write(freezer, "FROZEN");
        let _ = self.violations.send(Violation {
            container_id: id.to_owned(),
            reason,
        });
    }
}

/// Removes `group` and everything under it, bottom up, through descriptors (a tree
/// too deep for its full paths goes too). Groups still holding a process stay.
pub fn remove_tree(group: &Path) -> io::Result<()> {
    let root = match open_dir(None, group.as_os_str().as_encoded_bytes()) {
        Ok(fd) => fd,
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(error) => return Err(error),
    };
    each_below(&root, 0, &mut |parent, name| {
        let _ = rmdir_at(parent, name);
    })?;
    let parent = open_dir(
        None,
        group
            .parent()
            .unwrap_or(Path::new("/"))
            .as_os_str()
            .as_encoded_bytes(),
    )?;
    rmdir_at(
        &parent,
        group.file_name().unwrap_or_default().as_encoded_bytes(),
    )
}

/// The groups under `group` (itself included), counted through descriptors; for the
/// log when a box is stopped.
pub fn count_tree(group: &Path) -> usize {
    let Ok(root) = open_dir(None, group.as_os_str().as_encoded_bytes()) else {
        return 0;
    };
    let mut count = 1;
    let _ = each_below(&root, 0, &mut |_, _| count += 1);
    count
}

fn open_dir(parent: Option<&OwnedFd>, name: &[u8]) -> io::Result<OwnedFd> {
    open_at(parent, name.to_vec(), DIR_FLAGS)
}

/// Calls `visit` with each directory under `dir` (its parent's descriptor and its
/// name), the deepest first. The recursion is bounded, so a hostile tree cannot
/// exhaust Hermes's stack.
fn each_below(
    dir: &OwnedFd,
    depth: usize,
    visit: &mut dyn FnMut(&OwnedFd, &[u8]),
) -> io::Result<()> {
    if depth > 4096 {
        return Err(io::Error::other("cgroup tree too deep"));
    }
    let entries = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name();
        if let Ok(child) = open_dir(Some(dir), name.as_encoded_bytes()) {
            each_below(&child, depth + 1, visit)?;
        }
        visit(dir, name.as_encoded_bytes());
    }
    Ok(())
}

fn rmdir_at(dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let name = CString::new(name).map_err(|_| io::Error::other("NUL in a name"))?;
    // SAFETY: a NUL-terminated name relative to an open directory descriptor.
    let done = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) };
    match done {
        0 => Ok(()),
        _ => match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            e => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(violations: &mut tokio::sync::mpsc::UnboundedReceiver<Violation>) -> Violation {
        let mut found = None;
        assert!(wait_for(|| {
            found = violations.try_recv().ok();
            found.is_some()
        }));
        found.expect("a violation")
    }

    fn wait_for(mut done: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if done() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn every_directory_is_counted_and_the_one_past_the_cap_freezes_the_box() {
        let dir = tempfile::tempdir().expect("tempdir");
        let group = dir.path().join("group");
        std::fs::create_dir_all(group.join("init.scope")).expect("dirs");
        let freezer = dir.path().join("freezer.state");
        let (watch, mut violations) = CgroupWatch::start().expect("inotify");
        watch.watch("box", &group, freezer.clone());
        assert_eq!(watch.groups("box"), Some(2));
        // Nested as fast as a shell makes them: each level is watched before it is
        // listed, so nothing is missed.
        let mut deep = group.join("system.slice");
        for level in 0..5 {
            deep = deep.join(format!("l{level}"));
        }
        std::fs::create_dir_all(&deep).expect("deep");
        assert!(
            wait_for(|| watch.groups("box") == Some(8)),
            "{:?}",
            watch.groups("box")
        );
        std::fs::remove_dir(&deep).expect("rmdir");
        assert!(
            wait_for(|| watch.groups("box") == Some(7)),
            "{:?}",
            watch.groups("box")
        );
        assert!(violations.try_recv().is_err(), "no violation yet");
        for i in 0..MAX_GROUPS {
            std::fs::create_dir(group.join(format!("f{i}"))).expect("flood");
        }
        let violation = next(&mut violations);
        assert_eq!(violation.container_id, "box");
        assert!(violation.reason.contains("more than"), "{violation:?}");
        assert_eq!(std::fs::read_to_string(&freezer).expect("frozen"), "FROZEN");
        // Reported once, however many groups came after.
        for i in 0..10 {
            std::fs::create_dir(group.join(format!("late{i}"))).expect("late");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(violations.try_recv().is_err(), "a second report");
        watch.forget("box");
        assert_eq!(watch.groups("box"), None);
    }

    #[test]
    fn a_renamed_group_freezes_the_box() {
        let dir = tempfile::tempdir().expect("tempdir");
        let group = dir.path().join("group");
        std::fs::create_dir_all(group.join("a")).expect("group");
        let freezer = dir.path().join("freezer.state");
        let (watch, mut violations) = CgroupWatch::start().expect("inotify");
        watch.watch("box", &group, freezer);
        std::fs::rename(group.join("a"), group.join("b")).expect("rename");
        let violation = next(&mut violations);
        assert!(violation.reason.contains("renamed"), "{violation:?}");
    }

    #[test]
    fn a_tree_nested_too_deep_freezes_the_box() {
        let dir = tempfile::tempdir().expect("tempdir");
        let group = dir.path().join("group");
        std::fs::create_dir(&group).expect("group");
        let freezer = dir.path().join("freezer.state");
        let (watch, mut violations) = CgroupWatch::start().expect("inotify");
        watch.watch("box", &group, freezer);
        let mut deep = group.clone();
        for level in 0..=MAX_DEPTH {
            deep = deep.join(format!("l{level}"));
        }
        std::fs::create_dir_all(&deep).expect("deep");
        let violation = next(&mut violations);
        assert!(violation.reason.contains("deeper"), "{violation:?}");
    }

    #[test]
    fn a_tree_deeper_than_any_path_is_removed_through_descriptors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let group = dir.path().join("group");
        std::fs::create_dir(&group).expect("group");
        // 20 levels of 250-byte names: past PATH_MAX (4096) as a full path.
        let mut current = open_at(
            None::<&OwnedFd>,
            group.as_os_str().as_encoded_bytes(),
            DIR_FLAGS,
        )
        .expect("open");
        for level in 0..20 {
            let name = format!("{level:0>250}");
            let cname = CString::new(name.clone()).expect("name");
            // SAFETY: a NUL-terminated name relative to an open directory.
            assert_eq!(
                unsafe { libc::mkdirat(current.as_raw_fd(), cname.as_ptr(), 0o755) },
                0
            );
            current = open_at(Some(&current), name.into_bytes(), DIR_FLAGS).expect("descend");
        }
        assert_eq!(count_tree(&group), 21);
        remove_tree(&group).expect("removed");
        assert!(!group.exists());
        remove_tree(&group).expect("a missing group is no error");
    }
}
