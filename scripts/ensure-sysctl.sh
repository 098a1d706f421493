#!/usr/bin/env bash
# Raises the host's inotify allowance for root. Without a user namespace a box's root
# is the host's uid 0 to the kernel's per-user counts, so every box's systemd, journald
# and logind (about four inotify instances a box) draw on root's one allowance:
# Debian's default of 128 instances stops systemd booting past some thirty boxes.
# Only raises; idempotent. Values as LXD documents for hosts of many containers.
#
# Also mounts the cgroup2 hierarchy with `favordynmods` (Linux 6.0 and later). Moving
# a process to another cgroup otherwise waits for an RCU grace period, 13 ms here, and
# every login to a box's sshd moves it once (pam_systemd's session scope); so does
# every process the engine starts in a box. The kernel's lock is one for all
# hierarchies, so this speeds cgroup v1 moves on a hybrid host too. The price is a
# little more work at fork and exit. Idempotent; a kernel without it is left as is.
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

favor_dynmods() {
  local path options
  while read -r _ path type options _; do
    [ "$type" = cgroup2 ] || continue
    case ",$options," in *,favordynmods,*) continue ;; esac
    if mount -o remount,favordynmods "$path" 2>/dev/null; then
      echo "mounted $path with favordynmods"
    else
      echo "cannot mount $path with favordynmods (kernel before 6.0?); cgroup moves stay slow" >&2
    fi
  done </proc/mounts
}

favor_dynmods
