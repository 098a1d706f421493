//! What each new box gets beyond the profile: its core and LXCFS's /proc files, and
//! the recycling of warm boxes whose LXCFS files went stale.

use hermes_core::config::{CpuPinning, LxcfsMode};

use super::*;
use crate::cpu::CoreTurns;
use crate::lxcfs::{Change, ForNewBox};
use crate::profile::Placement;

/// The cores new boxes are pinned to, or None (pinning off, or the host's cores
/// unknown: then said once).
pub(super) fn core_turns(pinning: CpuPinning) -> Option<CoreTurns> {
    match pinning {
        CpuPinning::Off => None,
        CpuPinning::Core => match CoreTurns::of_this_host() {
            Ok(turns) => {
                tracing::info!(target: "hermes::sandbox", cores = turns.count(), "cpu_pinning core: each box runs on one core of its own, taken in turn");
                Some(turns)
            }
            Err(reason) => {
                tracing::warn!(target: "hermes::sandbox", %reason, "cpu_pinning core: the host's cores are unknown; boxes run on every core");
                None
            }
        },
    }
}

impl DockerSandbox {
    /// Looks at LXCFS once at start-up and says what boxes will show. Err (the
    /// reason) when `lxcfs.mode` is `required` and LXCFS is not usable.
    pub async fn check_lxcfs(&self) -> Result<(), String> {
        let root = self.lxcfs.root().display().to_string();
        match self.lxcfs.look().await.0 {
            Ok(ForNewBox::Bind(_)) => {
                tracing::info!(target: "hermes::sandbox", path = %root, "LXCFS found: boxes show their own memory, CPUs and uptime in /proc");
                Ok(())
            }
            Ok(ForNewBox::Without) if self.lxcfs.mode() == LxcfsMode::Off => {
                tracing::info!(target: "hermes::sandbox", "lxcfs.mode off: boxes show the host's memory, CPUs and uptime in /proc");
                Ok(())
            }
            Ok(ForNewBox::Without) => {
                let problem = crate::lxcfs::probe(self.lxcfs.root())
                    .await
                    .err()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                tracing::warn!(target: "hermes::sandbox", path = %root, %problem, "LXCFS not usable: boxes start without it and show the host's memory, CPUs and uptime (free, /proc/meminfo, nproc); metric hermes_lxcfs_active 0");
                Ok(())
            }
            Err(problem) => Err(format!(
                "container_pool.security.lxcfs.mode is required: {problem}"
            )),
        }
    }

    /// Looks at LXCFS; when it changed since the last look, the warm boxes go.
    async fn look_lxcfs(&self) -> Result<ForNewBox, crate::lxcfs::LxcfsProblem> {
        let (lxcfs, change) = self.lxcfs.look().await;
        if change == Change::Changed {
            self.recycle_ready();
        }
        lxcfs
    }

    /// The core and LXCFS mount of the box about to be created.
    pub(super) async fn placement(&self) -> Result<Placement, SandboxError> {
        let lxcfs = match self.look_lxcfs().await {
            Ok(ForNewBox::Bind(root)) => Some(root),
            Ok(ForNewBox::Without) => None,
            Err(problem) => {
                return Err(SandboxError::Unavailable(format!(
                    "lxcfs.mode is required: {problem}"
                )));
            }
        };
        Ok(Placement {
            core: self.cores.as_ref().map(CoreTurns::next),
            lxcfs,
            cgroup: None,
            background: false,
        })
    }

    /// Looks at LXCFS (each refill tick) so a restart is noticed even when no box is
    /// being created.
    pub(super) async fn watch_lxcfs(&self) {
        if self.lxcfs.mode() != LxcfsMode::Off {
            let _ = self.look_lxcfs().await;
        }
    }

    /// True when LXCFS is in use but not usable now: a kept box made with its binds
    /// then cannot start.
    pub(super) async fn lxcfs_gone_for_kept_box(&self) -> bool {
        self.lxcfs.mode() != LxcfsMode::Off
            && !matches!(self.look_lxcfs().await, Ok(ForNewBox::Bind(_)))
    }

    /// Removes the warm boxes: they were made with an LXCFS mount that is gone (its
    /// files now fail with "Transport endpoint is not connected") or without one that
    /// has come. Boxes in sessions keep running as they are.
    fn recycle_ready(&self) {
        let ready: Vec<String> = self.state().ready.drain(..).collect();
        tracing::warn!(target: "hermes::sandbox", recycled = ready.len(), active = self.lxcfs.is_active(), "LXCFS changed (restarted, stopped or started): warm boxes are replaced; boxes in sessions keep their old /proc files until they end");
        for id in ready {
            self.standbys().remove(&id);
            self.remove_in_background(id);
        }
        self.wake.notify_one();
    }
}
