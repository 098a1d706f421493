#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and end-to-end tests against a
# real Docker engine and the real OpenSSH client.
set -euo pipefail
# shellcheck source=lib/apt.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/apt.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/ensure-docker.sh
# Room for many systemd boxes in the host's inotify allowance.
scripts/ensure-sysctl.sh
scripts/ensure-openssh.sh
# The boxes' own memory, CPUs and uptime in /proc (the resources e2e test needs it).
scripts/ensure-lxcfs.sh
if ! command -v asciinema >/dev/null 2>&1; then
  echo "installing asciinema (reads the recordings back in the tests)"
  apt_install asciinema
fi
if [ ! -x /bin/busybox ]; then
  echo "installing busybox-static (a tiny image for a second engine in the tests)"
  apt_install busybox-static
fi
if ! command -v curl >/dev/null 2>&1 || ! command -v wget >/dev/null 2>&1; then
  echo "installing curl and wget (real clients through the egress gateway in the tests)"
  apt_install curl wget
fi
# The boxes' runtime (their own boot clock: the differential test needs it) and the
# server of their /proc/stat and /proc/uptime on that clock.
cargo build --release --locked -p hermes-box-runtime -p hermes-box-proc
scripts/ensure-box-runtime.sh target/release/hermes-box-runtime
scripts/ensure-box-proc.sh target/release/hermes-box-proc
images/target/build.sh hermes-target:latest
# The same server booting Debian's sysvinit, where a box cannot have a cgroup of its own.
images/target/build.sh hermes-target:sysvinit sysvinit
# docker-compose, the socket proxy and Hermes's own image, for the compose test.
scripts/compose-images.sh
# A Debian "host" with systemd and its own engine, for the systemd unit's test.
images/systemd-host/build.sh hermes-systemd-host:latest

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast || status=$?
else
  cargo test --workspace --locked --no-fail-fast || status=$?
fi
if [ "$status" != 0 ]; then
  # What the failure needs to be understood where nobody can log in.
  scripts/diagnose.sh hermes-target:latest || true
fi
exit "$status"
