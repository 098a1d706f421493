#!/usr/bin/env bash
# Makes sure hermes-box-proc (crates/hermes-box-proc) serves the boxes' clock files,
# /proc/stat and /proc/uptime on each box's own boot clock, at /var/lib/hermes-box-proc:
# installs the built binary and starts it without systemd when nothing answers there,
# as scripts/ensure-lxcfs.sh does for LXCFS. A server left running from an older
# binary is replaced (boxes made before keep its files until they end; Hermes
# replaces its warm boxes when the mount changes). A mount left by a dead server
# ("Transport endpoint is not connected") is lazily unmounted first. Idempotent.
# Usage: ensure-box-proc.sh [built binary]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib/fuse.sh
. scripts/lib/fuse.sh

built="${1:-target/release/hermes-box-proc}"
dir=/var/lib/hermes-box-proc
installed=/usr/local/lib/hermes/hermes-box-proc
log=/var/log/hermes-box-proc.log
pidfile=/run/hermes-box-proc.pid

if [ ! -x "$built" ]; then
  echo "$built not found: build it first (cargo build --release --locked -p hermes-box-proc)" >&2
  exit 1
fi
mkdir -p "$(dirname "$installed")"
if ! cmp -s "$built" "$installed"; then
  # A new file moved over the old one: the running server keeps its copy.
  install -m 0755 "$built" "$installed.new"
  mv -f "$installed.new" "$installed"
fi

running() {
  [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

current() {
  running && [ "$(readlink "/proc/$(cat "$pidfile")/exe")" = "$installed" ]
}

serving() {
  fuse_mounted && head -c 1 "$dir/proc/uptime" >/dev/null 2>&1
}

if serving && current; then
  exit 0
fi
# Only a server we started ourselves is stopped (an old binary, or one that hung).
if running; then
  kill "$(cat "$pidfile")" || true
  for _ in $(seq 1 20); do
    running || break
    sleep 0.25
  done
fi
if fuse_mounted; then
  echo "hermes-box-proc mount at $dir is stale: unmounting it"
  umount -l "$dir"
fi
mkdir -p "$dir"
echo "starting hermes-box-proc on $dir (log: $log)"
# nice: a box reading /proc in a loop makes it work outside the box's quota, as
# with LXCFS (SECURITY.md); Hermes keeps precedence. setsid: it outlives this script.
setsid nohup nice -n 10 "$installed" "$dir" >"$log" 2>&1 </dev/null &
echo $! >"$pidfile"

await_serving hermes-box-proc "$log"
