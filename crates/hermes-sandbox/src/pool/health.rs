//! What the pool tells the operator: its counts, its Prometheus metrics and whether
//! it is healthy (the engine answers, the pool can be refilled).

use hermes_core::config::LxcfsMode;

use super::*;

/// The health check's engine ping waits this long.
const HEALTH_PING_TIMEOUT: Duration = Duration::from_secs(3);

/// With no ready container, this many failed creations in a row make Hermes unhealthy.
const UNHEALTHY_AFTER_FAILURES: u32 = 3;

impl DockerSandbox {
    /// Current counts.
    pub fn status(&self) -> PoolStatus {
        let state = self.state();
        PoolStatus {
            ready: state.ready.len(),
            creating: state.creating,
            active: state.active.len(),
            stopped: self.stopped.load(Ordering::Relaxed),
            failed_in_a_row: state.consecutive_failures,
        }
    }

    /// Appends the pool's metrics (Prometheus text format).
    pub fn render_metrics(&self, out: &mut String) {
        let status = self.status();
        render_family(
            out,
            "hermes_pool_containers",
            "gauge",
            "Containers of this sensor by state (stopped: as of the last retention sweep).",
            &[
                ("state=\"ready\"", status.ready as u64),
                ("state=\"creating\"", status.creating as u64),
                ("state=\"active\"", status.active as u64),
                ("state=\"stopped\"", status.stopped as u64),
            ],
        );
        render_family(
            out,
            "hermes_pool_create_failures_in_a_row",
            "gauge",
            "Pool container creations that failed in a row.",
            &[("", u64::from(status.failed_in_a_row))],
        );
        self.create_seconds.render(
            out,
            "hermes_container_create_seconds",
            "Time to create and start a container (successful ones).",
        );
        render_family(
            out,
            "hermes_docker_errors_total",
            "counter",
            "Errors from the Docker engine or the connection to it.",
            &[("", crate::error::engine_errors())],
        );
        self.lxcfs.render_metrics(out);
    }

    /// Ok when the engine answers and the pool can be refilled; else why not.
    pub async fn health(&self) -> Result<(), String> {
        match tokio::time::timeout(HEALTH_PING_TIMEOUT, self.docker.ping()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(format!("Docker engine: {}", failure(error))),
            Err(_) => {
                return Err(format!(
                    "Docker engine did not answer within {} s",
                    HEALTH_PING_TIMEOUT.as_secs()
                ));
            }
        }
        if self.lxcfs.mode() == LxcfsMode::Required && !self.lxcfs.is_active() {
            return Err(format!(
                "lxcfs.mode is required but LXCFS is not usable at {}",
                self.lxcfs.root().display()
            ));
        }
        let status = self.status();
        if status.ready == 0 && status.failed_in_a_row >= UNHEALTHY_AFTER_FAILURES {
            return Err(format!(
                "the pool cannot be refilled: the last {} container creations failed",
                status.failed_in_a_row
            ));
        }
        Ok(())
    }
}
