//! Named network namespaces (`ip netns`): the boxes' gateway namespaces, named
//! `hermes-<sensor>-<short container id>` so that a restart finds its leftovers.

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crate::command::{self, CommandError};

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
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Whether the named namespace exists.
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Creates the named namespace.
pub fn add(name: &str) -> Result<(), CommandError> {
    command::run(None, "ip", &["netns", "add", name], "").map(drop)
}

/// Removes the named namespace (nothing when it is gone already).
pub fn delete(name: &str) -> Result<(), CommandError> {
    if !exists(name) {
        return Ok(());
    }
    command::run(None, "ip", &["netns", "delete", name], "").map(drop)
}

/// Every named namespace on the host.
pub fn list() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect()
}

/// Runs `work` on a thread of its own that has entered the named namespace (sockets
/// it creates belong there for good); Hermes's other threads stay where they are.
pub async fn run_in<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let file = std::fs::File::open(path(name))?;
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
