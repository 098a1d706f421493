//! What the end-to-end tests and the benches of the `hermes` crate share: a real
//! `hermes` process on loopback ([`harness`]), an in-process SSH client ([`client`]),
//! a real Debian sshd to compare against ([`reference`]), a real Debian 12 machine
//! booted with qemu ([`refvm`]), honeypot-auditor ([`auditor`]), the event queries
//! ([`events`]) and race-free ports ([`ports`]). Not published: it exists for the tests only.

pub mod auditor;
pub mod client;
pub mod events;
pub mod harness;
pub mod options;
pub mod ports;
pub mod reference;
pub mod refvm;

/// Returns from the calling test (sync or async) when Docker or the target image is
/// missing; under `CI=true` that absence fails the test instead.
#[macro_export]
macro_rules! require_docker {
    () => {
        if !$crate::harness::require_docker() {
            return;
        }
    };
}
