# Shared by the setup scripts (sourced, not run): Debian packages installed one way.

# apt_install PKG...: installs the packages quietly. When that fails (on a fresh
# machine the package index is empty or stale), refreshes the index once and tries
# again; a second failure prints apt's own last lines and returns non-zero.
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if apt-get install -y -qq "$@" >/dev/null 2>&1; then
    return 0
  fi
  local log
  log="$(mktemp)"
  if apt-get update -qq >"$log" 2>&1 && apt-get install -y -qq "$@" >"$log" 2>&1; then
    rm -f "$log"
    return 0
  fi
  echo "apt_install: cannot install $* (even after apt-get update):" >&2
  tail -n 20 "$log" >&2
  rm -f "$log"
  return 1
}
