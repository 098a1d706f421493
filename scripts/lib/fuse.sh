# shellcheck shell=bash
# Helpers for the FUSE servers the boxes' /proc files come from (LXCFS,
# hermes-box-proc). Source it; the caller sets $dir (the mount point) and defines
# `serving` (true once the server answers there).

# True when a FUSE file system is mounted at $dir.
fuse_mounted() {
  awk -v dir="$dir" '$5 == dir { for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i+1) ~ /^fuse/) found = 1; break } } END { exit !found }' /proc/self/mountinfo
}

# Waits up to 10 s for `serving`; else says so with the end of the log ($2) and fails.
# $1 names the server.
await_serving() {
  for _ in $(seq 1 40); do
    if serving; then
      return 0
    fi
    sleep 0.25
  done
  echo "$1 did not come up on $dir within 10 s; see $2" >&2
  tail -n 20 "$2" >&2 || true
  return 1
}
