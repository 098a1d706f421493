//! The Docker adapter: the container engine behind [`hermes_core::sandbox::Sandbox`].
//!
//! Control calls (create, start, stop, inspect, exec create/resize/inspect) go through
//! bollard. The exec *stream* does not: bollard's TTY decoder takes output beginning
//! with bytes 0x00-0x02 for a stream header and stalls, so [`hijack`] starts execs with
//! its own HTTP upgrade and hands the raw connection to [`exec`].

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod background;
pub mod boot_clock;
mod box_init;
pub mod cgroup_delegation;
pub mod cgroup_watch;
pub mod clock_files;
mod cpu;
mod dir_stream;
mod direct;
mod endpoint;
mod error;
mod etc_file;
mod exec;
mod files;
mod hijack;
pub mod host_limits;
pub mod lxcfs;
mod openat;
mod pool;
mod profile;
mod retention;
mod seccomp;
mod shm;
mod signal;
mod sshd_fds;
mod stall_guard;
mod standby;
mod taken_io;
mod tar;
mod tar_write;
mod upper;

pub use endpoint::{Endpoint, EndpointError, TlsFiles};
pub use pool::{DockerSandbox, INSTALLED_LABEL, PoolSettings, PoolStatus};
pub use profile::{BOOT_CPU_SHARES, BootPriority, ContainerProfile, Placement, SESSION_CPU_SHARES};
pub use seccomp::{DENIED, Denied};

/// The label every Hermes target container carries (value `target`).
pub const ROLE_LABEL: &str = "hermes.role";
/// The label naming the sensor a container belongs to.
pub const SENSOR_LABEL: &str = "hermes.sensor";
/// The label holding the creation time (ISO 8601).
pub const CREATED_LABEL: &str = "hermes.created";
/// The image label with the persona's SSH banner (written by `images/target/build.sh`).
pub const BANNER_LABEL: &str = "hermes.persona.ssh_banner";
