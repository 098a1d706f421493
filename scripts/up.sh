#!/usr/bin/env bash
# Brings Hermes up with the default configuration (config/hermes.yaml):
# Docker engine, target image, release build, then `hermes run` in the foreground.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

config="${HERMES_CONFIG:-config/hermes.yaml}"
image="$(sed -n 's/^  image: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$config" | head -n 1)"

# The workspace's rust-version; Debian 12's packaged rustc (1.63) cannot build it.
need_rust="$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n 1)"
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust ${need_rust} or newer (https://rustup.rs), then run this again" >&2
  exit 1
fi
have_rust="$(rustc --version 2>/dev/null | awk '{print $2}')"
if [ "$(printf '%s\n%s\n' "$need_rust" "$have_rust" | sort -V | head -n 1)" != "$need_rust" ]; then
  echo "rustc ${have_rust:-unknown} is too old: Hermes needs Rust ${need_rust} or newer (rustup update stable)" >&2
  exit 1
fi

scripts/ensure-docker.sh
# Room for many systemd boxes in the host's inotify allowance.
scripts/ensure-sysctl.sh
# Boxes show their own memory, CPUs and uptime (lxcfs.mode auto falls back without it).
scripts/ensure-lxcfs.sh || echo "lxcfs could not be started: boxes will show the host's resources" >&2
# The boxes' network (egress, on by default) is built with iproute2 and iptables.
if ! command -v ip >/dev/null 2>&1 || ! command -v iptables-restore >/dev/null 2>&1; then
  # shellcheck source=lib/apt.sh
  . scripts/lib/apt.sh
  apt_install iproute2 iptables
fi
images/target/build.sh "${image:-hermes-target:latest}"
# Where a box cannot have the cgroup its systemd needs (cgroup v2 hosts, for now),
# Hermes boots the same server with Debian's sysvinit instead.
fallback="$(sed -n 's/^  fallback_image: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$config" | head -n 1)"
images/target/build.sh "${fallback:-hermes-target:sysvinit}" sysvinit
cargo build --release --locked --bin hermes --bin hermes-box-runtime --bin hermes-shim-launcher --bin hermes-box-proc
# Boxes boot with a clock of their own, and their /proc/stat and /proc/uptime follow
# it (boot_clock auto falls back to the host's clocks without either).
scripts/ensure-box-runtime.sh target/release/hermes-box-runtime ||
  echo "the boxes' runtime could not be registered: boxes will keep the host's clocks" >&2
scripts/ensure-box-proc.sh target/release/hermes-box-proc ||
  echo "hermes-box-proc could not be started: boxes will keep the host's clocks" >&2
exec target/release/hermes run --config "$config"
