//! Operations on this sensor's containers through the engine: create, find, stop,
//! remove, and the per-container lock that orders a stop and a resume.

use super::*;

impl DockerSandbox {
    pub(super) fn label_filters(&self, status: Option<&[&str]>) -> HashMap<String, Vec<String>> {
        let mut filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{ROLE_LABEL}=target"),
                format!("{SENSOR_LABEL}={}", self.profile.sensor),
            ],
        )]);
        if let Some(status) = status {
            filters.insert(
                "status".to_owned(),
                status.iter().map(|s| (*s).to_owned()).collect(),
            );
        }
        filters
    }

    pub(super) async fn stop_leftovers(&self) {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&self.label_filters(Some(&["running", "restarting", "paused"])))
            .build();
        let leftovers = match self.docker.list_containers(Some(options)).await {
            Ok(list) => list,
            Err(error) => {
                let error = failure(error);
                tracing::error!(target: "hermes::sandbox", error = %error, "cannot list containers of an earlier run");
                return;
            }
        };
        if let Some(network) = self.network() {
            let running: Vec<String> = leftovers.iter().filter_map(|c| c.id.clone()).collect();
            network.reconcile(&running).await;
        }
        let mut stops = JoinSet::new();
        for container in leftovers {
            let Some(id) = container.id else { continue };
            let docker = self.docker.clone();
            let network = self.network().cloned();
            stops.spawn(async move {
                let result = stop_container(&docker, &id).await;
                if let Some(network) = network {
                    network.detach(&id).await;
                }
                (id, result)
            });
        }
        while let Some(joined) = stops.join_next().await {
            if let Ok((id, result)) = joined {
                match result {
                    Ok(()) => {
                        tracing::info!(target: "hermes::sandbox", container_id = %short(&id), "stopped a container left running by an earlier run")
                    }
                    Err(error) => {
                        tracing::warn!(target: "hermes::sandbox", container_id = %short(&id), %error, "cannot stop leftover container")
                    }
                }
            }
        }
    }

    /// Creates and starts one container within `spawn_timeout`. A container that was
    /// created but could not be started is removed: nothing half-made is left behind.
    pub(super) async fn create_container(
        &self,
        priority: BootPriority,
    ) -> Result<String, SandboxError> {
        let started = Instant::now();
        let created = self.create_container_untimed(priority).await;
        if created.is_ok() {
            self.create_seconds.observe(started.elapsed().as_secs_f64());
        }
        created
    }

    pub(super) async fn create_container_untimed(
        &self,
        priority: BootPriority,
    ) -> Result<String, SandboxError> {
        let timeout = self.settings.spawn_timeout;
        let name = format!("hermes-{}", SessionId::random());
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let mut placement = self.placement().await?;
        placement.cgroup = self.cgroup_placeholder(&name)?;
        placement.background = priority == BootPriority::Background;
        let created = tokio::time::timeout(
            timeout,
            self.docker
                .create_container(Some(options), self.profile.create_body(&placement)),
        )
        .await;
        let id = match created {
            Ok(Ok(response)) => response.id,
            Ok(Err(error)) => return Err(engine(error)),
            Err(_) => {
                // The create may still complete on the daemon: remove by name.
                self.remove_in_background(name);
                return Err(SandboxError::Timeout(timeout.as_secs()));
            }
        };
        let prepared = self.put_first_files(&id);
        match tokio::time::timeout(timeout, prepared).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                self.remove_in_background(id);
                return Err(error);
            }
            Err(_) => {
                self.remove_in_background(id);
                return Err(SandboxError::Timeout(timeout.as_secs()));
            }
        }
        if let Err(error) = self.prepare_cgroup(&id, placement.cgroup.clone()).await {
            self.remove_in_background(id);
            return Err(error);
        }
        let started = tokio::time::timeout(timeout, self.docker.start_container(&id, None)).await;
        if matches!(started, Ok(Ok(()))) {
            self.watch_cgroups(&id);
        }
        match started {
            Ok(Ok(())) => match self.attach_network(&id).await {
                Ok(()) => match self.ensure_booted(&id).await {
                    Ok(()) => Ok(id),
                    Err(error) => {
                        self.remove_in_background(id);
                        Err(error)
                    }
                },
                Err(error) => {
                    self.remove_in_background(id);
                    Err(error)
                }
            },
            Ok(Err(error)) => {
                self.remove_in_background(id);
                Err(engine(error))
            }
            Err(_) => {
                self.remove_in_background(id);
                Err(SandboxError::Timeout(timeout.as_secs()))
            }
        }
    }

    /// A box booted in the background gets a session's CPU weight once ready. If the
    /// engine cannot set it, the box still serves (its sessions yield to others').
    pub(super) async fn raise_cpu_weight(&self, id: &str) {
        if let Err(error) = self.docker.update_container(id, session_cpu_weight()).await {
            tracing::warn!(target: "hermes::sandbox", container_id = %short(id), error = %failure(error), "cannot give the box a session's CPU weight");
        }
    }

    /// The sensor's CA, the machine id, the name files and the box's past go in
    /// before anything in the box runs: one archive, as each upload costs the engine
    /// a process of its own (dockerd run again to unpack it), tens of milliseconds of
    /// CPU.
    async fn put_first_files(&self, id: &str) -> Result<(), SandboxError> {
        let started = Instant::now();
        let mut tar = crate::tar_write::TarWriter::default();
        self.add_ca(id, &mut tar).await?;
        self.add_machine_id(&mut tar)?;
        self.add_name_files(&mut tar)?;
        self.add_past(&mut tar).await?;
        if tar.is_empty() {
            return Ok(());
        }
        let archive = tar.finish();
        let bytes = archive.len();
        let options = bollard::query_parameters::UploadToContainerOptionsBuilder::default()
            .path("/")
            .build();
        self.docker
            .upload_to_container(id, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(engine)?;
        tracing::debug!(target: "hermes::sandbox", container_id = %short(id), bytes, elapsed_ms = started.elapsed().as_millis() as u64, "the box's first files put into it");
        Ok(())
    }

    pub(super) async fn exists(&self, id: &str) -> Result<bool, SandboxError> {
        match self.docker.inspect_container(id, None).await {
            Ok(_) => Ok(true),
            Err(error) if is_not_found(&error) => Ok(false),
            Err(error) => Err(engine(error)),
        }
    }

    pub(super) async fn is_running(&self, id: &str) -> Result<bool, SandboxError> {
        match self.docker.inspect_container(id, None).await {
            Ok(inspect) => Ok(inspect.state.and_then(|s| s.running).unwrap_or(false)),
            Err(error) if is_not_found(&error) => Ok(false),
            Err(error) => Err(engine(error)),
        }
    }

    pub(super) fn remove_in_background(&self, id: String) {
        self.forget_host_views(&id);
        let docker = self.docker.clone();
        let network = self.network().cloned();
        let cgroups = self.cgroups();
        self.spawn_background(async move {
            let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
            if let Err(error) = docker.remove_container(&id, Some(options)).await
                && !is_not_found(&error)
            {
                let error = failure(error);
                tracing::warn!(target: "hermes::sandbox", container_id = %short(&id), error = %error, "cannot remove container");
            }
            super::init::drop_cgroups(cgroups, &id).await;
            if let Some(network) = network {
                network.detach(&id).await;
            }
        });
    }

    pub(super) fn container_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .container_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Drop locks nobody holds any more, so the map does not grow.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        Arc::clone(locks.entry(id.to_owned()).or_default())
    }
}

/// The update that gives a box a session's CPU weight, and sets nothing else (the
/// socket proxy lets exactly this body through).
fn session_cpu_weight() -> bollard::models::ContainerUpdateBody {
    bollard::models::ContainerUpdateBody {
        cpu_shares: Some(SESSION_CPU_SHARES),
        ..Default::default()
    }
}

pub(super) async fn stop_container(docker: &Docker, id: &str) -> Result<(), SandboxError> {
    let options = StopContainerOptionsBuilder::default()
        .t(STOP_GRACE_SECS)
        .build();
    match docker.stop_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(error) if is_not_modified(&error) || is_not_found(&error) => Ok(()),
        Err(error) => Err(engine(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_weight_update_sets_the_weight_alone() {
        let body = serde_json::to_string(&session_cpu_weight()).expect("json");
        assert_eq!(body, r#"{"CpuShares":1024}"#);
    }
}
