//! Which init the boxes boot: the image's systemd, with a cgroup of each box's own
//! (crate::cgroup_delegation), or, where the host cannot give one, the fallback
//! image's sysvinit. And the watch that stops a box making cgroups without end.

use std::path::{Path, PathBuf};

use hermes_core::config::CgroupDelegation;

use crate::cgroup_delegation::{self, Delegation, EngineCgroups};

use super::*;

/// The image label naming the init its PID 1 is (written by `images/target/build.sh`).
pub const INIT_LABEL: &str = "hermes.persona.init";

/// Placeholders older than this whose box is gone are removed by the sweep (younger
/// ones may belong to a box being created).
const PLACEHOLDER_GRACE: Duration = Duration::from_secs(600);

/// The boxes' own cgroups: where they come from, and the watch on them.
#[derive(Debug, Clone)]
pub(super) struct BoxCgroups {
    delegation: Delegation,
    watch: Arc<crate::cgroup_watch::CgroupWatch>,
}

/// What was decided at connect time.
#[derive(Debug, Default)]
pub(super) struct InitChoice {
    /// Set when boxes boot systemd with a cgroup of their own.
    pub cgroups: Option<BoxCgroups>,
    /// Why the boxes cannot boot at all (a systemd image, no delegation, and no
    /// fallback image); told by `image_banner` at start.
    pub problem: Option<String>,
}

/// Decides the image and the delegation for `profile` (whose `image` becomes the
/// fallback one when needed).
pub(super) async fn choose(
    docker: &Docker,
    profile: &mut ContainerProfile,
    local_engine: bool,
) -> InitChoice {
    let Some(init) = image_init(docker, &profile.image).await else {
        // Missing images are reported by `image_banner`; unlabelled ones need nothing.
        return InitChoice::default();
    };
    if init != "systemd" {
        return InitChoice::default();
    }
    let why_not = match profile.cgroup_delegation {
        CgroupDelegation::Off => Err("container_pool.security.cgroup_delegation is off".to_owned()),
        // Asked first: a remote engine is not even asked about its cgroups.
        CgroupDelegation::Auto if !local_engine => Err(cgroup_delegation::NOT_LOCAL.to_owned()),
        CgroupDelegation::Auto => {
            let engine = match docker.info().await {
                Ok(info) => EngineCgroups {
                    version: info.cgroup_version.map(|v| v.to_string()),
                    driver: info.cgroup_driver.map(|d| d.to_string()),
                },
                Err(error) => {
                    return InitChoice {
                        cgroups: None,
                        problem: Some(format!(
                            "cannot ask the engine about its cgroups: {}",
                            failure(error)
                        )),
                    };
                }
            };
            Delegation::detect(
                Path::new(cgroup_delegation::HIERARCHY),
                Path::new(cgroup_delegation::LINKS),
                &engine,
                local_engine,
            )
        }
    };
    match why_not {
        Ok(delegation) => match crate::cgroup_watch::CgroupWatch::start() {
            Ok((watch, violations)) => {
                tracing::info!(target: "hermes::sandbox", image = %profile.image, "boxes boot Debian's systemd, each with its own part of the name=systemd cgroup hierarchy");
                tokio::spawn(stop_violators(
                    docker.clone(),
                    delegation.clone(),
                    violations,
                ));
                InitChoice {
                    cgroups: Some(BoxCgroups {
                        delegation,
                        watch: Arc::new(watch),
                    }),
                    problem: None,
                }
            }
            Err(error) => InitChoice {
                cgroups: None,
                problem: Some(format!(
                    "cannot watch the boxes' cgroups (inotify): {error}"
                )),
            },
        },
        Err(reason) => {
            if image_init(docker, &profile.fallback_image).await.is_some() {
                tracing::warn!(target: "hermes::sandbox", image = %profile.image, fallback = %profile.fallback_image, %reason, "systemd cannot have a cgroup of its own here: boxes are made from the fallback image (Debian's sysvinit)");
                profile.image = profile.fallback_image.clone();
                InitChoice::default()
            } else {
                InitChoice {
                    cgroups: None,
                    problem: Some(format!(
                        "image {} boots systemd, which needs a cgroup of its own, and none can be given here ({reason}); the fallback image {} is missing: build it with images/target/build.sh {} sysvinit",
                        profile.image, profile.fallback_image, profile.fallback_image
                    )),
                }
            }
        }
    }
}

/// Kills each box the watch froze (it is frozen already: nothing runs in it).
async fn stop_violators(
    docker: Docker,
    delegation: Delegation,
    mut violations: tokio::sync::mpsc::UnboundedReceiver<crate::cgroup_watch::Violation>,
) {
    while let Some(violation) = violations.recv().await {
        let id = violation.container_id;
        // Frozen: the count is what it made before the freeze took hold.
        let groups = match delegation.group(&id) {
            Ok(group) => {
                tokio::task::spawn_blocking(move || crate::cgroup_watch::count_tree(&group))
                    .await
                    .unwrap_or(0)
            }
            Err(_) => 0,
        };
        tracing::warn!(target: "hermes::sandbox", container_id = %short(&id), reason = %violation.reason, max = crate::cgroup_watch::MAX_GROUPS, groups, "a box made more cgroups than allowed: it is stopped");
        let options = bollard::query_parameters::KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        if let Err(error) = docker.kill_container(&id, Some(options)).await
            && !is_not_found(&error)
        {
            tracing::warn!(target: "hermes::sandbox", container_id = %short(&id), error = %failure(error), "cannot stop a box past its cgroup limit");
        }
    }
}

/// A box stopped or removed: its watches go, and its group with everything under it
/// (the engine's own cleanup walks full paths, which a tree deeper than PATH_MAX
/// defeats).
pub(super) async fn drop_cgroups(cgroups: Option<BoxCgroups>, id: &str) {
    let Some(BoxCgroups { delegation, watch }) = cgroups else {
        return;
    };
    watch.forget(id);
    if let Ok(group) = delegation.group(id) {
        let removed =
            tokio::task::spawn_blocking(move || crate::cgroup_watch::remove_tree(&group)).await;
        if let Ok(Err(error)) = removed {
            tracing::warn!(target: "hermes::sandbox", container_id = %short(id), %error, "cannot remove a stopped box's cgroups");
        }
    }
}

/// The image's init label, or None when the image is missing.
async fn image_init(docker: &Docker, image: &str) -> Option<String> {
    let inspect = docker.inspect_image(image).await.ok()?;
    Some(
        inspect
            .config
            .and_then(|c| c.labels)
            .and_then(|labels| labels.get(INIT_LABEL).cloned())
            .unwrap_or_default(),
    )
}

impl DockerSandbox {
    /// The placeholder for a box about to be created as `name`, when boxes get a
    /// cgroup of their own.
    pub(super) fn cgroup_placeholder(&self, name: &str) -> Result<Option<PathBuf>, SandboxError> {
        let Some(cgroups) = &self.init.cgroups else {
            return Ok(None);
        };
        cgroups.delegation.placeholder(name).map(Some).map_err(|e| {
            SandboxError::Engine(format!("cannot make the box's cgroup placeholder: {e}"))
        })
    }

    /// A systemd box's own machine id, as an installed Debian has one in
    /// /etc/machine-id (systemd cannot make it persistent in a box: that takes a
    /// mount), added to what goes into it before its first start.
    pub(super) fn add_machine_id(
        &self,
        tar: &mut crate::tar_write::TarWriter,
    ) -> Result<(), SandboxError> {
        if self.init.cgroups.is_none() {
            return Ok(());
        }
        let machine_id: u128 = rand::random();
        // Made at the installation's first boot.
        let mtime = self.installed_at().unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
        tar.file_owned(
            "etc/machine-id",
            format!("{machine_id:032x}\n").as_bytes(),
            0o444,
            (0, 0),
            mtime,
        )
        .map_err(|e| SandboxError::Engine(e.to_string()))
    }

    /// Before a kept box `id` starts again: its cgroup made and its placeholder
    /// (found in its mounts) pointed at it.
    pub(super) async fn prepare_kept_cgroup(&self, id: &str) -> Result<(), SandboxError> {
        let inspect = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(engine)?;
        let source = inspect
            .host_config
            .and_then(|h| h.mounts)
            .unwrap_or_default()
            .into_iter()
            .find(|m| m.target.as_deref() == Some(cgroup_delegation::TARGET))
            .and_then(|m| m.source);
        // A box made without one (by an earlier configuration) boots as it was made.
        let Some(source) = source else {
            return Ok(());
        };
        if self.init.cgroups.is_none() {
            // Made with one, it cannot boot without: the source gets a new box.
            tracing::warn!(target: "hermes::sandbox", container_id = %short(id), "a kept box needs a cgroup of its own, which cannot be given now; the source gets a new one");
            return Err(SandboxError::ContainerGone(short(id).to_owned()));
        }
        self.prepare_cgroup(id, Some(PathBuf::from(source))).await
    }

    /// Before box `id` starts with `placeholder` as its cgroup's source: its cgroup
    /// directory made and the placeholder pointed at it.
    pub(super) async fn prepare_cgroup(
        &self,
        id: &str,
        placeholder: Option<PathBuf>,
    ) -> Result<(), SandboxError> {
        let (Some(cgroups), Some(placeholder)) = (&self.init.cgroups, placeholder) else {
            return Ok(());
        };
        let id = id.to_owned();
        let delegation = cgroups.delegation.clone();
        tokio::task::spawn_blocking(move || delegation.prepare_start(&placeholder, &id))
            .await
            .map_err(|e| SandboxError::Engine(e.to_string()))?
            .map_err(|e| SandboxError::Engine(format!("cannot prepare the box's cgroup: {e}")))
    }

    /// Starts watching a just started box's cgroups (nothing without delegation).
    pub(super) fn watch_cgroups(&self, id: &str) {
        if let Some(cgroups) = &self.init.cgroups
            && let Ok(group) = cgroups.delegation.group(id)
        {
            cgroups
                .watch
                .watch(id, &group, cgroups.delegation.freezer_state(id));
        }
    }

    /// What [`drop_cgroups`] needs, to take into a background task.
    pub(super) fn cgroups(&self) -> Option<BoxCgroups> {
        self.init.cgroups.clone()
    }

    /// Removes the placeholders of boxes that no longer exist (from the retention
    /// sweep).
    pub(super) async fn prune_cgroup_placeholders(&self) {
        let Some(cgroups) = &self.init.cgroups else {
            return;
        };
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&self.label_filters(None))
            .build();
        let Ok(list) = self.docker.list_containers(Some(options)).await else {
            return;
        };
        let alive: HashSet<String> = list
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .map(|n| n.trim_start_matches('/').to_owned())
            .collect();
        let delegation = cgroups.delegation.clone();
        let _ =
            tokio::task::spawn_blocking(move || delegation.prune(&alive, PLACEHOLDER_GRACE)).await;
    }
}
