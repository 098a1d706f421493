//! The retention sweep: stopped containers of this sensor past their age, count or
//! disk limits are removed, oldest first (the rules are in [`crate::retention`]).

use super::*;

/// How often stopped containers are checked against the retention rules (also soon
/// after each release, at most once per `RETENTION_MIN_GAP`).
const RETENTION_TICK: Duration = Duration::from_secs(3600);

const RETENTION_MIN_GAP: Duration = Duration::from_secs(5);

impl DockerSandbox {
    pub(super) async fn retention_loop(self: Arc<Self>) {
        while !self.shutting_down.load(Ordering::Acquire) {
            self.sweep_stopped().await;
            tokio::select! {
                _ = tokio::time::sleep(RETENTION_TICK) => {}
                _ = self.sweep.notified() => tokio::time::sleep(RETENTION_MIN_GAP).await,
            }
        }
    }

    /// Removes this sensor's stopped containers past the age limit, then the oldest
    /// until the count and disk caps hold. Each removal is an event.
    pub async fn sweep_stopped(&self) -> usize {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .size(true)
            .filters(&self.label_filters(Some(&["exited", "dead", "created"])))
            .build();
        let stopped = match self.docker.list_containers(Some(options)).await {
            Ok(list) => list,
            Err(error) => {
                let error = failure(error);
                tracing::warn!(target: "hermes::sandbox", error = %error, "retention sweep cannot list containers");
                return 0;
            }
        };
        let mut stopped: Vec<Stopped> = stopped
            .into_iter()
            .filter_map(|c| {
                Some(Stopped {
                    id: c.id?,
                    created: c.created.unwrap_or(0),
                    finished: None,
                    size: c.size_rw.unwrap_or(0).max(0) as u64,
                })
            })
            .collect();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let rules = Rules {
            max_age: self.settings.retention,
            max_count: self.settings.max_stopped,
            max_bytes: self.settings.max_stopped_bytes,
        };
        if retention::caps_exceeded(&stopped, now, rules) {
            // Which went first matters now: ask each for its stop time.
            for container in &mut stopped {
                if let Ok(inspect) = self.docker.inspect_container(&container.id, None).await {
                    container.finished = inspect
                        .state
                        .and_then(|s| s.finished_at)
                        .and_then(|t| retention::parse_time(&t));
                }
            }
        }
        let mut removed = 0;
        let found = stopped.len();
        for (id, reason) in retention::choose(stopped, now, rules) {
            let options = RemoveContainerOptionsBuilder::default().v(true).build();
            match self.docker.remove_container(&id, Some(options)).await {
                Ok(()) => {
                    removed += 1;
                    self.forget_host_views(&id);
                    self.events.emit(
                        EventBuilder::global(EventId::ContainerRemove)
                            .field("container_id", id.clone())
                            .field("reason", reason.as_str())
                            .message(format!(
                                "Container {} removed: {}",
                                short(&id),
                                reason.describe()
                            )),
                    );
                }
                Err(error) => {
                    let error = failure(error);
                    tracing::warn!(target: "hermes::sandbox", container_id = %short(&id), error = %error, "retention sweep cannot remove container");
                }
            }
        }
        self.stopped
            .store(found.saturating_sub(removed), Ordering::Relaxed);
        self.prune_cgroup_placeholders().await;
        removed
    }
}
