//! Named network namespaces (`ip netns`): the boxes' gateway namespaces, named
//! `hermes-<sensor>-<short container id>` so that a restart finds its leftovers.
//!
//! Where `ip netns add` cannot mount (Docker's AppArmor profile denies `mount` to a
//! containerised Hermes), a namespace is held by Hermes instead: made by a thread of
//! its own and kept by an open descriptor, under the same name. Such a namespace
//! goes when Hermes does, however it ends, so no restart has any of it to find.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};

use crate::command::{self, CommandError};

/// The namespaces Hermes holds itself, by name.
static HELD: LazyLock<Mutex<HashMap<String, File>>> = LazyLock::new(Mutex::default);

fn held() -> MutexGuard<'static, HashMap<String, File>> {
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where `ip netns` keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Length of the container id part of a name (as `docker ps` shows it).
const SHORT_ID: usize = 12;

/// The names of one sensor's gateway namespaces.
#[derive(Debug, Clone)]
pub struct Naming {
    prefix: String,
}

impl Naming {
    /// For `sensor` (characters a file name cannot have become `_`).
    pub fn new(sensor: &str) -> Self {
        let sensor: String = sensor
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Naming {
            prefix: format!("hermes-{sensor}-"),
        }
    }

    /// The gateway namespace of a container.
    pub fn name(&self, container_id: &str) -> String {
        let short = container_id.get(..SHORT_ID).unwrap_or(container_id);
        format!("{}{short}", self.prefix)
    }

    /// The short container id, when `name` is one of this sensor's (another sensor
    /// whose name starts like this one's does not match: the rest must be an id).
    pub fn container_of<'a>(&self, name: &'a str) -> Option<&'a str> {
        let rest = name.strip_prefix(&self.prefix)?;
        (rest.len() == SHORT_ID && rest.bytes().all(|b| b.is_ascii_hexdigit())).then_some(rest)
    }
}

/// The file of a named namespace.
fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Opens the namespace (a descriptor of its own, valid whatever happens to the name).
pub fn open(name: &str) -> std::io::Result<File> {
    if let Some(file) = held().get(name) {
        return file.try_clone();
    }
    File::open(path(name))
}

/// Whether the namespace exists.
pub fn exists(name: &str) -> bool {
    held().contains_key(name) || path(name).exists()
}

/// Set once `ip netns add` failed where holding worked: later ones are held at once.
static HOLDING: AtomicBool = AtomicBool::new(false);

/// Creates the namespace: named (`ip netns add`), or, when that cannot mount, held.
pub fn add(name: &str) -> Result<(), CommandError> {
    let error = if HOLDING.load(Ordering::Relaxed) {
        None
    } else {
        match command::run(None, "ip", &["netns", "add", name], "") {
            Ok(_) => return Ok(()),
            Err(error) => Some(error),
        }
    };
    match hold() {
        Ok(file) => {
            if let Some(error) = &error
                && !HOLDING.swap(true, Ordering::Relaxed)
            {
                tracing::info!(target: "hermes::egress", %error, "gateway namespaces cannot be mounted here (ip netns add); Hermes holds them itself, and they go when it does");
            }
            held().insert(name.to_owned(), file);
            Ok(())
        }
        Err(source) => Err(CommandError::Namespace {
            path: match error {
                Some(error) => format!("{name} ({error}; held instead)"),
                None => name.to_owned(),
            },
            source,
        }),
    }
}

/// A new network namespace, made by a thread of its own (unshare(2) moves only the
/// calling thread) and kept by the descriptor returned.
fn hold() -> std::io::Result<File> {
    std::thread::Builder::new()
        .name("hermes-netns".to_owned())
        .spawn(|| {
            // SAFETY: unshare(2) with a flag; it changes this thread alone, which
            // ends right after opening its new namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            File::open("/proc/thread-self/ns/net")
        })?
        .join()
        .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
}

/// Removes the namespace (nothing when it is gone already).
pub fn delete(name: &str) -> Result<(), CommandError> {
    if held().remove(name).is_some() {
        return Ok(());
    }
    if !path(name).exists() {
        return Ok(());
    }
    command::run(None, "ip", &["netns", "delete", name], "").map(drop)
}

/// Every namespace: the host's named ones and those Hermes holds.
pub fn list() -> Vec<String> {
    let mut names: Vec<String> = held().keys().cloned().collect();
    if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
        names.extend(entries.filter_map(|entry| entry.ok()?.file_name().into_string().ok()));
    }
    names
}

/// Runs `work` on a thread of its own that has entered the named namespace (sockets
/// it creates belong there for good); Hermes's other threads stay where they are.
pub async fn run_in<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let file = open(name)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hermes-netns".to_owned())
        .spawn(move || {
            // SAFETY: setns(2) on an open namespace descriptor; this thread is ours
            // alone and ends right after `work`.
            let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            let result = if entered == 0 {
                work()
            } else {
                Err(std::io::Error::last_os_error())
            };
            let _ = tx.send(result);
        })?;
    rx.await
        .map_err(|_| std::io::Error::other("the namespace thread ended without an answer"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_namespace_is_a_namespace_of_its_own_until_deleted() {
        let Ok(file) = hold() else {
            eprintln!("SKIPPED: unshare(CLONE_NEWNET) needs CAP_SYS_ADMIN");
            return;
        };
        let name = "hermes-held-test-0123456789ab";
        held().insert(name.to_owned(), file);
        assert!(exists(name) && list().iter().any(|n| n == name));
        let own = std::fs::read_link("/proc/self/ns/net").expect("own namespace");
        let theirs = open(name).expect("open");
        let theirs =
            std::fs::read_link(format!("/proc/self/fd/{}", theirs.as_raw_fd())).expect("link");
        assert_ne!(own, theirs);
        // Commands run there see only its loopback.
        let links = command::run_at(Some(&open(name).expect("open")), "ip", &["-o", "link"], "")
            .expect("ip");
        assert_eq!(links.lines().count(), 1, "{links}");
        assert!(links.contains(": lo:"), "{links}");
        delete(name).expect("delete");
        assert!(!exists(name));
        assert!(open(name).is_err());
    }

    #[test]
    fn names_belong_to_their_sensor_only() {
        let naming = Naming::new("web/1");
        let name = naming.name("0123456789abcdef0123");
        assert_eq!(name, "hermes-web_1-0123456789ab");
        assert_eq!(naming.container_of(&name), Some("0123456789ab"));
        assert_eq!(Naming::new("web").container_of(&name), None);
        assert_eq!(
            Naming::new("web").container_of("hermes-web-1-0123456789ab"),
            None
        );
    }
}
