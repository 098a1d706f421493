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
mkdir -p "$dir"
if ! cmp -s "$built" "$installed"; then
  # A new file moved over the old one: a runtime call in progress keeps its copy.
  install -m 0755 "$built" "$installed.new"
  mv -f "$installed.new" "$installed"
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
