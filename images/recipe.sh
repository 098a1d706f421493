# Shared by the image build scripts (sourced, not run).

# shellcheck source=../scripts/lib/apt.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/scripts/lib/apt.sh"

# The recipe of the image built from directory $1: a hash of every file in it. An
# image built from another recipe is rebuilt.
recipe_of() {
  (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z \
    | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

# True when image $1 exists with recipe $2 (and HERMES_IMAGE_FORCE is not 1).
image_up_to_date() {
  [ "${HERMES_IMAGE_FORCE:-0}" != 1 ] || return 1
  docker image inspect "$1" >/dev/null 2>&1 || return 1
  local built
  built="$(docker image inspect -f '{{ index .Config.Labels "hermes.image.recipe" }}' "$1" 2>/dev/null || true)"
  if [ "$built" = "$2" ]; then
    echo "image $1 is up to date (HERMES_IMAGE_FORCE=1 rebuilds it)"
    return 0
  fi
  echo "image $1 was built from another recipe; rebuilding"
  return 1
}

# Installs debootstrap when missing.
ensure_debootstrap() {
  command -v debootstrap >/dev/null 2>&1 && return 0
  echo "installing debootstrap"
  apt_install debootstrap
}
