#!/usr/bin/env bash
# Builds Hermes's Docker socket proxy image (HAProxy from Debian's package with
# haproxy.cfg beside this script) without any registry: debootstrap a minimal
# rootfs with haproxy, `docker import` it.
#
# Usage: images/socket-proxy/build.sh [IMAGE_TAG]   (default: hermes-socket-proxy:latest)
# Environment:
#   HERMES_DEBIAN_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   HERMES_IMAGE_FORCE=1  rebuild even when the image is up to date
set -euo pipefail
umask 022

tag="${1:-hermes-socket-proxy:latest}"
mirror="${HERMES_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# shellcheck source=../recipe.sh
. "$here/../recipe.sh"

# The recipe: this script and everything it copies in.
recipe="$(recipe_of "$here")"
if image_up_to_date "$tag" "$recipe"; then
  exit 0
fi
ensure_debootstrap

work="$(mktemp -d /var/tmp/hermes-proxy-rootfs.XXXXXX)"
cleanup() {
  for m in proc sys dev/pts dev; do umount -l "$work/rootfs/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
rootfs="$work/rootfs"

echo "debootstrap bookworm with haproxy into $rootfs"
debootstrap --variant=minbase --include=haproxy bookworm "$rootfs" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
  }
# Checked here, as the image will run it.
chroot "$rootfs" /usr/sbin/haproxy -v | head -n 1
install -m 0644 "$here/haproxy.cfg" "$rootfs/etc/haproxy/haproxy.cfg"
chroot "$rootfs" /usr/sbin/haproxy -c -f /etc/haproxy/haproxy.cfg
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/var/log/bootstrap.log

tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'ENTRYPOINT ["/usr/sbin/haproxy", "-W", "-db", "-f", "/etc/haproxy/haproxy.cfg"]' \
  --change 'EXPOSE 2375' \
  --change "LABEL hermes.image=socket-proxy hermes.image.recipe=$recipe" \
  - "$tag" >/dev/null
echo "built $tag"
