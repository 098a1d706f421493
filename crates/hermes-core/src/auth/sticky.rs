//! The `sticky` rule's memory: per source address, how many failures it has made, how
//! many it needs, and the pair that logged it in. Kept in a JSON file across restarts.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngExt;
use serde::{Deserialize, Serialize};

/// Sources remembered at most; past this, the entries closest to expiry go first.
const MAX_SOURCES: usize = 200_000;

/// What one attempt from a source means to the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickyVerdict {
    /// The pair this source logged in with before.
    Remembered,
    /// The source has failed enough: this pair logs in and is remembered.
    NewlyAccepted,
    /// Refused.
    Refused,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SourceEntry {
    failures: u32,
    threshold: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    /// Unix seconds after which the entry is forgotten.
    expires: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    sources: HashMap<IpAddr, SourceEntry>,
}

/// The rule's state, shared by all connections.
#[derive(Debug)]
pub struct StickyMemory {
    min_failures: u32,
    max_failures: u32,
    remember_for: Duration,
    path: PathBuf,
    sources: Mutex<HashMap<IpAddr, SourceEntry>>,
    dirty: AtomicBool,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl StickyMemory {
    /// Loads the state file when it exists (a corrupt file is reported, moved aside
    /// and replaced, never fatal: it only holds attacker bookkeeping).
    pub fn load(min_failures: u32, max_failures: u32, remember_for: Duration, path: &Path) -> Self {
        let mut sources = HashMap::new();
        match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
                Ok(file) => {
                    let now = now_secs();
                    sources = file
                        .sources
                        .into_iter()
                        .filter(|(_, e)| e.expires > now)
                        .collect();
                }
                Err(error) => {
                    let aside = path.with_extension("json.corrupt");
                    let _ = std::fs::rename(path, &aside);
                    tracing::error!(target: "hermes::auth", path = %path.display(), %error, "sticky state file unreadable; moved aside and starting empty");
                }
            },
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::error!(target: "hermes::auth", path = %path.display(), %error, "cannot read the sticky state file; starting empty");
            }
        }
        StickyMemory {
            min_failures,
            max_failures: max_failures.max(min_failures),
            remember_for,
            path: path.to_owned(),
            sources: Mutex::new(sources),
            dirty: AtomicBool::new(false),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, SourceEntry>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fresh_entry(&self, now: u64) -> SourceEntry {
        SourceEntry {
            failures: 0,
            threshold: rand::rng().random_range(self.min_failures..=self.max_failures),
            username: None,
            password: None,
            expires: now + self.remember_for.as_secs(),
        }
    }

    /// Decides an attempt from `source` and records it.
    pub fn attempt(&self, source: IpAddr, username: &str, password: &str) -> StickyVerdict {
        self.record(source, Some((username, password)))
    }

    /// Records a failed attempt from `source` that could not log in whatever the
    /// count (a login name no server has): it counts, and no pair is remembered.
    pub fn refuse(&self, source: IpAddr) {
        self.record(source, None);
    }

    fn record(&self, source: IpAddr, offered: Option<(&str, &str)>) -> StickyVerdict {
        let now = now_secs();
        let mut sources = self.entries();
        let expired = sources.get(&source).is_some_and(|e| e.expires <= now);
        if expired {
            sources.remove(&source);
        }
        if !sources.contains_key(&source) && sources.len() >= MAX_SOURCES {
            evict_soonest(&mut sources);
        }
        let fresh = self.fresh_entry(now);
        let entry = sources.entry(source).or_insert(fresh);
        let verdict = match (&entry.username, &entry.password, offered) {
            (Some(user), Some(pass), offered) => {
                if offered == Some((user.as_str(), pass.as_str())) {
                    StickyVerdict::Remembered
                } else {
                    StickyVerdict::Refused
                }
            }
            (_, _, Some((username, password))) if entry.failures >= entry.threshold => {
                entry.username = Some(username.to_owned());
                entry.password = Some(password.to_owned());
                entry.expires = now + self.remember_for.as_secs();
                StickyVerdict::NewlyAccepted
            }
            _ => {
                entry.failures = entry.failures.saturating_add(1);
                entry.expires = now + self.remember_for.as_secs();
                StickyVerdict::Refused
            }
        };
        self.dirty.store(true, Ordering::Release);
        verdict
    }

    /// Whether the next attempt from `source` logs in whatever it is.
    pub fn next_attempt_accepted(&self, source: IpAddr) -> bool {
        let now = now_secs();
        self.entries()
            .get(&source)
            .is_some_and(|e| e.expires > now && e.username.is_none() && e.failures >= e.threshold)
    }

    /// Writes the state file if anything changed (atomically: temp file + rename).
    pub fn save_if_dirty(&self) -> io::Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let now = now_secs();
        let file = {
            let mut sources = self.entries();
            sources.retain(|_, e| e.expires > now);
            StateFile {
                version: 1,
                sources: sources.clone(),
            }
        };
        let result = write_atomically(&self.path, &file);
        if result.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        result
    }

    /// Sources currently remembered (for tests and logs).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// True when no source is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn evict_soonest(sources: &mut HashMap<IpAddr, SourceEntry>) {
    if let Some(victim) = sources
        .iter()
        .min_by_key(|(_, e)| e.expires)
        .map(|(ip, _)| *ip)
    {
        sources.remove(&victim);
    }
}

fn write_atomically(path: &Path, file: &StateFile) -> io::Result<()> {
    let bytes = serde_json::to_vec(file).map_err(io::Error::other)?;
    crate::record::write_atomically(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, last])
    }

    #[test]
    fn a_source_gets_in_after_its_failures_and_keeps_only_that_pair() {
        let dir = tempfile::tempdir().expect("tempdir");
        let memory =
            StickyMemory::load(3, 3, Duration::from_secs(3600), &dir.path().join("s.json"));
        for n in 0..3 {
            assert_eq!(
                memory.attempt(ip(1), "root", &format!("guess{n}")),
                StickyVerdict::Refused
            );
        }
        assert!(memory.next_attempt_accepted(ip(1)));
        assert_eq!(
            memory.attempt(ip(1), "root", "dragon"),
            StickyVerdict::NewlyAccepted
        );
        assert!(!memory.next_attempt_accepted(ip(1)));
        assert_eq!(
            memory.attempt(ip(1), "root", "dragon"),
            StickyVerdict::Remembered
        );
        assert_eq!(
            memory.attempt(ip(1), "root", "another"),
            StickyVerdict::Refused
        );
        assert_eq!(
            memory.attempt(ip(1), "admin", "dragon"),
            StickyVerdict::Refused
        );
        // Another source starts from scratch.
        assert_eq!(
            memory.attempt(ip(2), "root", "dragon"),
            StickyVerdict::Refused
        );
    }

    #[test]
    fn thresholds_are_drawn_between_the_bounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let memory =
            StickyMemory::load(2, 5, Duration::from_secs(3600), &dir.path().join("s.json"));
        let mut seen = std::collections::BTreeSet::new();
        for last in 0..200u8 {
            let mut failures = 0;
            while memory.attempt(ip(last), "u", &format!("p{failures}")) == StickyVerdict::Refused {
                failures += 1;
                assert!(failures <= 5);
            }
            seen.insert(failures);
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![2, 3, 4, 5]);
    }

    #[test]
    fn state_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/s.json");
        let memory = StickyMemory::load(1, 1, Duration::from_secs(3600), &path);
        assert_eq!(memory.attempt(ip(9), "root", "x"), StickyVerdict::Refused);
        assert_eq!(
            memory.attempt(ip(9), "root", "pw"),
            StickyVerdict::NewlyAccepted
        );
        memory.save_if_dirty().expect("save");
        assert!(!dir.path().join("state/s.json.tmp").exists());
        let reloaded = StickyMemory::load(1, 1, Duration::from_secs(3600), &path);
        assert_eq!(
            reloaded.attempt(ip(9), "root", "pw"),
            StickyVerdict::Remembered
        );
        assert_eq!(
            reloaded.attempt(ip(9), "root", "other"),
            StickyVerdict::Refused
        );
    }

    #[test]
    fn a_corrupt_state_file_is_moved_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json");
        std::fs::write(&path, b"{not json").expect("write");
        let memory = StickyMemory::load(1, 1, Duration::from_secs(60), &path);
        assert!(memory.is_empty());
        assert!(dir.path().join("s.json.corrupt").exists());
    }

    #[test]
    fn expired_entries_are_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.json");
        let old = StateFile {
            version: 1,
            sources: HashMap::from([(
                ip(3),
                SourceEntry {
                    failures: 0,
                    threshold: 0,
                    username: Some("root".into()),
                    password: Some("pw".into()),
                    expires: 1,
                },
            )]),
        };
        write_atomically(&path, &old).expect("write");
        let memory = StickyMemory::load(5, 5, Duration::from_secs(60), &path);
        assert!(memory.is_empty());
    }
}
