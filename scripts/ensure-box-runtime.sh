#!/usr/bin/env bash
# Installs the boxes' OCI runtime (crates/hermes-box-runtime: Debian's runc, with a
# boot clock of the box's own) and registers it with the local dockerd as
# `hermes-box` (/etc/docker/daemon.json, then a reload: running containers are not
# touched). Idempotent. Usage: ensure-box-runtime.sh [built binary]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

built="${1:-target/release/hermes-box-runtime}"
name=hermes-box
dir=/usr/local/lib/hermes
installed="$dir/hermes-box-runtime"
config=/etc/docker/daemon.json

if [ ! -x "$built" ]; then
  echo "$built not found: build it first (cargo build --release --locked -p hermes-box-runtime)" >&2
  exit 1
fi
# A new file moved over the old one: a call in progress keeps its copy.
install_if_changed() {
  mkdir -p "$(dirname "$2")"
  if ! cmp -s "$1" "$2"; then
    install -m 0755 "$1" "$2.new"
    mv -f "$2.new" "$2"
  fi
}
install_if_changed "$built" "$installed"

# The shim launcher (crates/hermes-box-runtime/src/bin/hermes-shim-launcher): first
# in the engine's PATH (scripts/ensure-docker.sh) as containerd-shim-runc-v2, it puts
# the boxes in a few shared shims instead of one shim each.
launcher_built="$(dirname "$built")/hermes-shim-launcher"
launcher="$dir/engine/containerd-shim-runc-v2"
if [ ! -x "$launcher_built" ]; then
  echo "$launcher_built not found: build it first (cargo build --release --locked -p hermes-box-runtime)" >&2
  exit 1
fi
install_if_changed "$launcher_built" "$launcher"
if pid="$(pgrep -x containerd | head -n 1)" && [ -n "$pid" ] &&
  ! tr '\0' '\n' <"/proc/$pid/environ" | grep -q "^PATH=$dir/engine:"; then
  echo "note: containerd runs without $dir/engine first in its PATH: each box gets a shim of its own (about 14 MB each); start dockerd with PATH=$dir/engine:\$PATH to share them" >&2
fi

registered() {
  docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q "\"$name\":{\"path\":\"$installed\""
}

# The engine's configuration names it, so that a restarted dockerd has it too.
mkdir -p "$(dirname "$config")"
if [ ! -s "$config" ]; then
  printf '{\n  "runtimes": {\n    "%s": { "path": "%s" }\n  }\n}\n' "$name" "$installed" >"$config"
elif command -v python3 >/dev/null 2>&1; then
  python3 -c '
import json, os, sys
path, name, program = sys.argv[1:]
with open(path) as f:
    config = json.load(f)
runtimes = config.setdefault("runtimes", {})
if runtimes.get(name) != {"path": program}:
    runtimes[name] = {"path": program}
    with open(path + ".new", "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    os.replace(path + ".new", path)
' "$config" "$name" "$installed"
elif ! grep -q "\"$installed\"" "$config"; then
  echo "$config exists and python3 is missing to add to it: add \"runtimes\": {\"$name\": {\"path\": \"$installed\"}} by hand" >&2
  exit 1
fi

if registered; then
  exit 0
fi
# dockerd reloads its runtimes on SIGHUP; running containers are not touched.
if pids="$(pgrep -x dockerd)"; then
  # shellcheck disable=SC2086 # one PID per word
  kill -HUP $pids
fi
for _ in $(seq 1 40); do
  if registered; then
    echo "registered the boxes' runtime with dockerd as $name ($installed)"
    exit 0
  fi
  sleep 0.25
done
echo "dockerd did not take the $name runtime from $config within 10 s" >&2
exit 1
