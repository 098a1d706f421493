//! Returning attackers keep their machine: which container belongs to which source
//! (or source and user), how many sessions use it now, and until when it is kept for
//! the next login. The map survives restarts in a JSON file.
//!
//! A fresh machine on every login is the best-known honeypot tell; a real server keeps
//! the files an intruder left.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{ReuseConfig, ReuseKey};
use crate::sandbox::Lease;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What the registry knows of one machine.
#[derive(Debug, Default)]
struct MachineState {
    source: Option<IpAddr>,
    container_id: Option<String>,
    /// The running lease while sessions use it, and while it lingers after the last.
    lease: Option<Lease>,
    sessions: u32,
    /// Counts the runs of the machine's box (each start of its container for a
    /// session), so that what was made for one run is not taken for the next.
    runs: u64,
    /// Counts the times the machine began to linger, so that the end of an earlier
    /// linger (its timer) never stops a later one.
    linger_generation: u64,
    /// Unix seconds until which the machine is kept after its last session.
    expires: u64,
    last_used: u64,
    /// The box account's login Hermes last set in the container (a digest of the
    /// container, account and password; memory only): a login with the same one
    /// need not set it again.
    box_login: Option<[u8; 32]>,
}

/// One key's machine. Acquisitions for the same key are serialised by `acquire`, so
/// two logins at once from one source end up on one container.
#[derive(Debug, Default)]
pub struct Machine {
    state: Mutex<MachineState>,
    acquire: tokio::sync::Mutex<()>,
}

impl Machine {
    fn state(&self) -> MutexGuard<'_, MachineState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds other logins of this key off while this one gets its container.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.acquire.lock().await
    }

    /// Whether `digest` is the box login last set in this machine's container.
    pub fn has_box_login(&self, digest: &[u8; 32]) -> bool {
        self.state().box_login.as_ref() == Some(digest)
    }

    /// Notes the box login just set in this machine's container.
    pub fn set_box_login(&self, digest: Option<[u8; 32]>) {
        self.state().box_login = digest;
    }

    /// Sessions using the machine now.
    pub fn sessions(&self) -> u32 {
        self.state().sessions
    }

    /// The running lease, when a session uses the machine now: the caller joins it.
    pub fn join_running(&self) -> Option<Lease> {
        let mut state = self.state();
        if state.sessions == 0 {
            return None;
        }
        let lease = state.lease.clone()?;
        state.sessions += 1;
        Some(lease)
    }

    /// The lease of a box that runs on after its last session (see
    /// [`Release::Linger`]): the next login takes it with [`Machine::rejoin`].
    pub fn lingering(&self) -> Option<Lease> {
        let state = self.state();
        if state.sessions > 0 {
            return None;
        }
        state.lease.clone()
    }

    /// A session now uses the lingering box again.
    pub fn rejoin(&self) {
        let mut state = self.state();
        state.sessions += 1;
        state.last_used = now_secs();
    }

    /// Takes the lingering box's lease (it is to stop, or it is gone).
    pub fn take_lingering(&self) -> Option<Lease> {
        let mut state = self.state();
        if state.sessions > 0 {
            return None;
        }
        state.lease.take()
    }

    /// The lease to stop when linger number `generation` ends, unless a session took
    /// the box again meanwhile (or a later linger began).
    pub fn end_linger(&self, generation: u64) -> Option<Lease> {
        let mut state = self.state();
        if state.sessions > 0 || state.linger_generation != generation {
            return None;
        }
        state.lease.take()
    }

    /// The container kept for this key, if still within its time.
    pub fn kept_container(&self) -> Option<String> {
        let state = self.state();
        (state.expires > now_secs() || state.sessions > 0)
            .then(|| state.container_id.clone())
            .flatten()
    }

    /// Records that a session now runs on `lease` (see [`MachineRegistry::assigned`]).
    fn started(&self, source: IpAddr, lease: &Lease) {
        let mut state = self.state();
        state.source = Some(source);
        state.container_id = Some(lease.container_id.clone());
        state.lease = Some(lease.clone());
        state.sessions += 1;
        state.runs += 1;
        state.last_used = now_secs();
    }

    /// The run of the machine's box now (see [`RunningBox`]).
    pub fn run(&self) -> u64 {
        self.state().runs
    }
}

/// A machine's box as it runs now: the same box after a stop and a start is another
/// run (its processes and connections are gone).
#[derive(Debug, Clone)]
pub struct RunningBox {
    pub machine: Arc<Machine>,
    pub container_id: String,
    pub run: u64,
}

impl RunningBox {
    /// Whether `machine` still runs this box, in the same run.
    pub fn is_current(&self, machine: &Arc<Machine>, container_id: &str) -> bool {
        Arc::ptr_eq(&self.machine, machine)
            && self.container_id == container_id
            && machine.run() == self.run
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedMachine {
    container_id: String,
    source: IpAddr,
    expires: u64,
    last_used: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    machines: HashMap<String, SavedMachine>,
}

/// At most this many machines are written to the state file (the most recently used):
/// the file is rewritten whenever a source gets a machine, so it stays small.
const MAX_SAVED_MACHINES: usize = 10_000;

/// The map of returning sources to their containers.
#[derive(Debug)]
pub struct MachineRegistry {
    config: ReuseConfig,
    entries: Mutex<HashMap<String, Arc<Machine>>>,
    dirty: AtomicBool,
    /// One writer of the state file at a time (the periodic saver and assignments).
    saving: Mutex<()>,
}

/// What a finished session leaves to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Release {
    /// Other sessions still use the container.
    StillInUse,
    /// The last session ended: stop (and keep) this container.
    Stop(Lease),
    /// The last session ended: the container runs on for `linger`, then stops
    /// unless the source is back (see [`Machine::end_linger`]).
    Linger {
        /// The lingering container.
        lease: Lease,
        /// Which linger this is.
        generation: u64,
    },
}

impl MachineRegistry {
    /// Loads the saved map (a corrupt file is moved aside, never fatal).
    pub fn load(config: &ReuseConfig) -> Arc<Self> {
        let mut entries = HashMap::new();
        if config.enabled {
            for (key, saved) in read_state(&config.state_file).machines {
                if saved.expires <= now_secs() {
                    continue;
                }
                let machine = Machine::default();
                {
                    let mut state = machine.state();
                    state.source = Some(saved.source);
                    state.container_id = Some(saved.container_id);
                    state.expires = saved.expires;
                    state.last_used = saved.last_used;
                }
                entries.insert(key, Arc::new(machine));
            }
        }
        Arc::new(MachineRegistry {
            config: config.clone(),
            entries: Mutex::new(entries),
            dirty: AtomicBool::new(false),
            saving: Mutex::new(()),
        })
    }

    /// Whether returning sources get their machine back.
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Arc<Machine>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self, source: IpAddr, username: &str) -> String {
        match self.config.key {
            ReuseKey::Source => source.to_string(),
            ReuseKey::SourceAndUser => format!("{source} {username}"),
        }
    }

    /// The running box a login from `source` as `username` would be given now, if
    /// there is one: its machine's box while a session uses it or while it lingers
    /// unfrozen. Looks only: no machine is made, nothing is held.
    pub fn running_box(&self, source: IpAddr, username: &str) -> Option<RunningBox> {
        let key = self.key(source, username);
        let machine = Arc::clone(self.entries().get(&key)?);
        let (container_id, run) = {
            let state = machine.state();
            let lease = state.lease.as_ref()?;
            if state.sessions == 0 && self.freeze_lingering() {
                return None;
            }
            (lease.container_id.clone(), state.runs)
        };
        Some(RunningBox {
            machine,
            container_id,
            run,
        })
    }

    /// The machine a login from `source` as `username` uses: its own, or, when the source
    /// already owns `max_containers_per_source` machines, its most recent one.
    pub fn machine_for(&self, source: IpAddr, username: &str) -> (String, Arc<Machine>) {
        let key = self.key(source, username);
        let now = now_secs();
        let mut entries = self.entries();
        entries.retain(|_, machine| {
            let state = machine.state();
            // A lingering box (its lease still held) stays findable whatever `ttl`.
            state.sessions > 0
                || state.expires > now
                || state.container_id.is_none()
                || state.lease.is_some()
        });
        if let Some(machine) = entries.get(&key) {
            return (key, Arc::clone(machine));
        }
        let owned: Vec<(&String, u64)> = entries
            .iter()
            .filter_map(|(k, machine)| {
                let state = machine.state();
                (state.source == Some(source) && state.container_id.is_some())
                    .then_some((k, state.last_used))
            })
            .collect();
        if owned.len() >= self.config.max_containers_per_source as usize
            && let Some((newest, _)) = owned.iter().max_by_key(|(_, used)| *used)
        {
            let newest = (*newest).clone();
            if let Some(machine) = entries.get(&newest) {
                return (newest, Arc::clone(machine));
            }
        }
        let machine = Arc::new(Machine::default());
        entries.insert(key.clone(), Arc::clone(&machine));
        (key, machine)
    }

    /// A session now runs on `lease`, as `machine`'s container. The map must be saved
    /// before the session writes anything there (see [`MachineRegistry::save_if_dirty`]):
    /// if Hermes dies while the session runs, the source gets this machine back.
    pub fn assigned(&self, machine: &Machine, source: IpAddr, lease: &Lease) {
        machine.started(source, lease);
        self.dirty.store(true, Ordering::Release);
    }

    /// A session on `machine` ended; if it was the last, the box lingers when
    /// `linger` says so (the caller knows whether Hermes is shutting down).
    pub fn release(&self, machine: &Machine, linger: bool) -> Release {
        let mut state = machine.state();
        state.sessions = state.sessions.saturating_sub(1);
        state.last_used = now_secs();
        state.expires = state.last_used + self.ttl().as_secs();
        self.dirty.store(true, Ordering::Release);
        if state.sessions > 0 {
            return Release::StillInUse;
        }
        if linger && let Some(lease) = state.lease.clone() {
            state.linger_generation += 1;
            return Release::Linger {
                lease,
                generation: state.linger_generation,
            };
        }
        match state.lease.take() {
            Some(lease) => Release::Stop(lease),
            None => Release::StillInUse,
        }
    }

    /// Forgets a container that is gone (removed, or could not be started again).
    pub fn forget(&self, machine: &Machine) {
        let mut state = machine.state();
        if state.sessions == 0 {
            state.container_id = None;
            state.lease = None;
        }
        self.dirty.store(true, Ordering::Release);
    }

    /// Writes the map if it changed (atomically and durably: temp file, fsync, rename).
    pub fn save_if_dirty(&self) -> io::Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        // Held from the snapshot to the rename, so an older snapshot never replaces a
        // newer one.
        let _saving = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let now = now_secs();
        let mut machines: Vec<(String, SavedMachine)> = self
            .entries()
            .iter()
            .filter_map(|(key, machine)| {
                let state = machine.state();
                let expires = if state.sessions > 0 {
                    now + self.ttl().as_secs()
                } else {
                    state.expires
                };
                match (&state.container_id, state.source) {
                    (Some(id), Some(source)) if expires > now => Some((
                        key.clone(),
                        SavedMachine {
                            container_id: id.clone(),
                            source,
                            expires,
                            last_used: state.last_used,
                        },
                    )),
                    _ => None,
                }
            })
            .collect();
        if machines.len() > MAX_SAVED_MACHINES {
            machines.sort_unstable_by_key(|(_, saved)| std::cmp::Reverse(saved.last_used));
            machines.truncate(MAX_SAVED_MACHINES);
        }
        let result = write_state(
            &self.config.state_file,
            &StateFile {
                version: 1,
                machines: machines.into_iter().collect(),
            },
        );
        if result.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        result
    }

    /// How long a machine is kept after its last session.
    pub fn ttl(&self) -> Duration {
        self.config.ttl.get()
    }

    /// How long a box runs on after its last session (zero: it stops at once).
    pub fn linger(&self) -> Duration {
        self.config.linger.get()
    }

    /// Whether lingering boxes are frozen.
    pub fn freeze_lingering(&self) -> bool {
        self.config.freeze_lingering
    }
}

fn read_state(path: &Path) -> StateFile {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            let aside: PathBuf = path.with_extension("json.corrupt");
            let _ = std::fs::rename(path, &aside);
            tracing::error!(target: "hermes::sandbox", path = %path.display(), %error, "machine map unreadable; moved aside");
            StateFile::default()
        }),
        Err(_) => StateFile::default(),
    }
}

fn write_state(path: &Path, file: &StateFile) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(file).map_err(io::Error::other)?;
    {
        let mut out = std::fs::File::create(&tmp)?;
        io::Write::write_all(&mut out, &bytes)?;
        out.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename itself survives a power cut only once the directory is synced.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::LeaseSource;

    fn config(dir: &Path, key: ReuseKey, cap: u32) -> ReuseConfig {
        ReuseConfig {
            enabled: true,
            key,
            ttl: crate::config::Seconds::new(3600),
            linger: crate::config::Seconds::new(0),
            freeze_lingering: false,
            max_containers_per_source: cap,
            state_file: dir.join("machines.json"),
        }
    }

    fn lease(id: &str) -> Lease {
        Lease {
            container_id: id.to_owned(),
            source: LeaseSource::Pool,
        }
    }

    const SRC: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 4));

    #[test]
    fn a_source_gets_its_container_back_and_concurrent_sessions_share_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = MachineRegistry::load(&config(dir.path(), ReuseKey::Source, 3));
        let (key, machine) = registry.machine_for(SRC, "root");
        assert_eq!(key, "198.51.100.4");
        assert!(machine.kept_container().is_none());
        registry.assigned(&machine, SRC, &lease("c1"));
        // A second login while the first runs joins the running container.
        let (_, again) = registry.machine_for(SRC, "admin");
        assert_eq!(again.join_running(), Some(lease("c1")));
        assert_eq!(registry.release(&machine, false), Release::StillInUse);
        assert_eq!(
            registry.release(&machine, false),
            Release::Stop(lease("c1"))
        );
        // After the last session: kept for the next login.
        let (_, later) = registry.machine_for(SRC, "root");
        assert!(later.join_running().is_none());
        assert_eq!(later.kept_container().as_deref(), Some("c1"));
    }

    /// A connection made to the box of one run is not the next run's: the box
    /// stopped after its last session and started again for the next is another run.
    #[test]
    fn a_running_box_is_current_until_its_machine_starts_it_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path(), ReuseKey::Source, 3);
        cfg.linger = crate::config::Seconds::new(600);
        let registry = MachineRegistry::load(&cfg);
        assert!(
            registry.running_box(SRC, "root").is_none(),
            "no machine yet"
        );
        let (_, machine) = registry.machine_for(SRC, "root");
        registry.assigned(&machine, SRC, &lease("c1"));
        let seen = registry
            .running_box(SRC, "root")
            .expect("a session uses it");
        assert_eq!(seen.container_id, "c1");
        assert!(seen.is_current(&machine, "c1"));
        // It lingers, running, and is rejoined: the same run.
        assert!(matches!(
            registry.release(&machine, true),
            Release::Linger { .. }
        ));
        let lingering = registry.running_box(SRC, "root").expect("it lingers");
        machine.rejoin();
        assert!(lingering.is_current(&machine, "c1"));
        // Stopped after its last session, then started again: another run.
        assert!(matches!(
            registry.release(&machine, false),
            Release::Stop(_)
        ));
        assert!(registry.running_box(SRC, "root").is_none(), "stopped");
        registry.assigned(&machine, SRC, &lease("c1"));
        assert!(!seen.is_current(&machine, "c1"));
        assert!(!lingering.is_current(&machine, "c1"));
        assert!(
            !registry
                .running_box(SRC, "root")
                .expect("runs")
                .is_current(&machine, "c2")
        );
    }

    #[test]
    fn a_lingering_box_is_rejoined_or_stopped_by_its_own_linger_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path(), ReuseKey::Source, 3);
        cfg.linger = crate::config::Seconds::new(600);
        let registry = MachineRegistry::load(&cfg);
        let (_, machine) = registry.machine_for(SRC, "root");
        registry.assigned(&machine, SRC, &lease("c1"));
        let Release::Linger {
            lease: first,
            generation: one,
        } = registry.release(&machine, true)
        else {
            panic!("the last session's end should make the box linger");
        };
        assert_eq!(first, lease("c1"));
        // Lingering is not "in use": a login takes it with rejoin, not join_running.
        assert!(machine.join_running().is_none());
        assert_eq!(machine.lingering(), Some(lease("c1")));
        machine.rejoin();
        assert!(machine.lingering().is_none());
        // The first linger's timer ends while the source is back: nothing stops.
        assert_eq!(machine.end_linger(one), None);
        let Release::Linger {
            generation: two, ..
        } = registry.release(&machine, true)
        else {
            panic!("the second end should linger again");
        };
        assert_ne!(one, two);
        // The first timer, late, still cannot stop the second linger; the second can.
        assert_eq!(machine.end_linger(one), None);
        assert_eq!(machine.end_linger(two), Some(lease("c1")));
        assert!(machine.lingering().is_none());
        // Stopped, it is kept for the next login as before.
        assert_eq!(machine.kept_container().as_deref(), Some("c1"));
    }

    #[test]
    fn the_map_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), ReuseKey::Source, 3);
        let registry = MachineRegistry::load(&cfg);
        let (_, machine) = registry.machine_for(SRC, "root");
        registry.assigned(&machine, SRC, &lease("c9"));
        registry.release(&machine, false);
        registry.save_if_dirty().expect("save");
        let reloaded = MachineRegistry::load(&cfg);
        let (_, machine) = reloaded.machine_for(SRC, "root");
        assert_eq!(machine.kept_container().as_deref(), Some("c9"));
    }

    #[test]
    fn a_machine_in_use_is_saved_and_survives_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), ReuseKey::Source, 3);
        let registry = MachineRegistry::load(&cfg);
        let (_, machine) = registry.machine_for(SRC, "root");
        registry.assigned(&machine, SRC, &lease("c7"));
        registry.save_if_dirty().expect("save");
        // The process dies here: no release, no further save.
        drop(registry);
        let reloaded = MachineRegistry::load(&cfg);
        let (_, machine) = reloaded.machine_for(SRC, "root");
        assert_eq!(machine.kept_container().as_deref(), Some("c7"));
        assert!(!dir.path().join("machines.json.tmp").exists());
    }

    #[test]
    fn the_saved_map_keeps_the_most_recently_used_machines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), ReuseKey::Source, 3);
        let registry = MachineRegistry::load(&cfg);
        for n in 0..MAX_SAVED_MACHINES as u32 + 5 {
            let source = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            let machine = Arc::new(Machine::default());
            registry.assigned(&machine, source, &lease(&format!("c{n}")));
            machine.state().last_used = u64::from(n);
            registry.entries().insert(source.to_string(), machine);
        }
        registry.save_if_dirty().expect("save");
        let saved = read_state(&cfg.state_file);
        assert_eq!(saved.machines.len(), MAX_SAVED_MACHINES);
        let newest = std::net::Ipv4Addr::from(0x0a00_0000 + MAX_SAVED_MACHINES as u32 + 4);
        assert!(saved.machines.contains_key(&newest.to_string()));
        assert!(
            !saved.machines.contains_key("10.0.0.0"),
            "the oldest is left out"
        );
    }

    #[test]
    fn source_and_user_keys_and_the_per_source_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = MachineRegistry::load(&config(dir.path(), ReuseKey::SourceAndUser, 2));
        for (user, id) in [("root", "c1"), ("admin", "c2")] {
            let (_, machine) = registry.machine_for(SRC, user);
            assert!(machine.kept_container().is_none(), "{user} starts fresh");
            registry.assigned(&machine, SRC, &lease(id));
            registry.release(&machine, false);
            std::thread::sleep(Duration::from_millis(1100));
        }
        // A third user from the same source is over the cap: the newest machine.
        let (key, machine) = registry.machine_for(SRC, "oracle");
        assert_eq!(key, "198.51.100.4 admin");
        assert_eq!(machine.kept_container().as_deref(), Some("c2"));
    }

    #[test]
    fn forgotten_containers_are_not_offered_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let registry = MachineRegistry::load(&config(dir.path(), ReuseKey::Source, 3));
        let (_, machine) = registry.machine_for(SRC, "root");
        registry.assigned(&machine, SRC, &lease("c1"));
        registry.release(&machine, false);
        registry.forget(&machine);
        assert!(machine.kept_container().is_none());
    }
}
