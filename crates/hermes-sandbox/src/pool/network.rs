//! The boxes' network (`egress`): every container the pool starts is given its
//! network before anyone gets it, and loses it when it stops or is removed.

use super::*;

impl DockerSandbox {
    /// Gives every container started from now on a network through `network`.
    pub fn set_network(&self, network: Arc<dyn BoxNetwork>) {
        if self.network.set(network).is_err() {
            tracing::warn!(target: "hermes::sandbox", "the box network was set twice; keeping the first");
        }
    }

    pub(super) fn network(&self) -> Option<&Arc<dyn BoxNetwork>> {
        self.network.get()
    }

    /// Links a just started container to its gateway (nothing without egress).
    pub(super) async fn attach_network(&self, id: &str) -> Result<(), SandboxError> {
        let Some(network) = self.network() else {
            return Ok(());
        };
        let inspect = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(engine)?;
        let pid = inspect
            .state
            .and_then(|state| state.pid)
            .and_then(|pid| u32::try_from(pid).ok())
            .filter(|pid| *pid > 0)
            .ok_or_else(|| SandboxError::ContainerGone(short(id).to_owned()))?;
        let started = Instant::now();
        let timeout = self.settings.spawn_timeout;
        tokio::time::timeout(timeout, network.attach(id, pid))
            .await
            .map_err(|_| SandboxError::Timeout(timeout.as_secs()))?
            .map_err(|error| SandboxError::Engine(error.to_string()))?;
        tracing::debug!(target: "hermes::sandbox", container_id = %short(id), elapsed_ms = started.elapsed().as_millis() as u64, "box network attached");
        Ok(())
    }
}
