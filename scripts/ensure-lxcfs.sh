#!/usr/bin/env bash
# Makes sure LXCFS serves its /proc files at /var/lib/lxcfs (or $1): installs Debian's
# lxcfs when missing and starts it without systemd when it is not mounted there, as
# scripts/ensure-docker.sh does for dockerd. A mount left by a dead lxcfs
# ("Transport endpoint is not connected") is lazily unmounted first. Idempotent.
set -euo pipefail
# shellcheck source=lib/apt.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/apt.sh"
# shellcheck source=lib/fuse.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/fuse.sh"

dir="${1:-/var/lib/lxcfs}"
log=/var/log/hermes-lxcfs.log
pidfile=/run/hermes-lxcfs.pid

serving() {
  fuse_mounted && head -c 1 "$dir/proc/uptime" >/dev/null 2>&1
}

if serving; then
  exit 0
fi

if ! command -v lxcfs >/dev/null 2>&1; then
  echo "installing lxcfs"
  apt_install lxcfs
fi

if fuse_mounted; then
  echo "lxcfs mount at $dir is stale: unmounting it"
  umount -l "$dir"
fi
# Only an lxcfs we started ourselves is stopped (one that hung on its mount).
if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  kill "$(cat "$pidfile")" || true
  for _ in $(seq 1 20); do
    kill -0 "$(cat "$pidfile")" 2>/dev/null || break
    sleep 0.25
  done
fi
mkdir -p "$dir"
echo "starting lxcfs on $dir (log: $log)"
# --enable-loadavg: the box's own load average; --enable-cfs: its CPU quota counted
# as CPUs in /proc/cpuinfo and /proc/stat. nice: a box reading /proc in a loop makes
# lxcfs work outside the box's quota (SECURITY.md), Hermes keeps precedence over it.
# setsid: it outlives this script.
setsid nohup nice -n 10 lxcfs --enable-loadavg --enable-cfs --pidfile="$pidfile" "$dir" >"$log" 2>&1 </dev/null &

await_serving lxcfs "$log"
