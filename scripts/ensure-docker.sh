#!/usr/bin/env bash
# Makes sure a Docker engine answers on /var/run/docker.sock: installs Debian's
# docker.io when dockerd is missing and starts a plain dockerd (no systemd) when it is
# not running. Idempotent; safe to run any number of times.
set -euo pipefail
# shellcheck source=lib/apt.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/apt.sh"

log=/var/log/hermes-dockerd.log

if docker info >/dev/null 2>&1; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "installing docker.io"
  apt_install docker.io
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  echo "starting dockerd (log: $log)"
  # setsid: the daemon outlives this script and the shell that ran it. Hermes's shim
  # launcher comes first in its PATH, for containerd to find (installed by
  # scripts/ensure-box-runtime.sh before any box starts; every other container gets
  # Debian's shim untouched).
  PATH="/usr/local/lib/hermes/engine:$PATH" setsid nohup dockerd >"$log" 2>&1 < /dev/null &
fi

for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "dockerd did not come up within 30 s; see $log" >&2
tail -n 20 "$log" >&2 || true
exit 1
