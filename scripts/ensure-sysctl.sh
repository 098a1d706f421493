#!/usr/bin/env bash
# Raises the host's inotify allowance for root. Without a user namespace a box's root
# is the host's uid 0 to the kernel's per-user counts, so every box's systemd, journald
# and logind (about four inotify instances a box) draw on root's one allowance:
# Debian's default of 128 instances stops systemd booting past some thirty boxes.
# Only raises; idempotent. Values as LXD documents for hosts of many containers.
set -euo pipefail

raise() {
  local key="$1" want="$2" file
  file="/proc/sys/${key//.//}"
  [ -w "$file" ] || { echo "cannot raise $key (not writable here)" >&2; return 0; }
  if [ "$(cat "$file")" -lt "$want" ]; then
    echo "$want" >"$file"
    echo "raised $key to $want"
  fi
}

raise fs.inotify.max_user_instances 8192
raise fs.inotify.max_user_watches 1048576
