#!/usr/bin/env bash
# Builds the image the systemd test runs Hermes's unit in, without any registry:
# Debian 12 with systemd as PID 1 and its own Docker engine (docker.io), iptables and
# iproute2: a small "host" in a container (all capabilities, unconfined; host-init
# says why not --privileged), so the unit's sandbox is tested by a real systemd and
# the boxes' processes are that host's.
#
# Usage: images/systemd-host/build.sh [IMAGE_TAG]   (default: hermes-systemd-host:latest)
# Environment:
#   HERMES_DEBIAN_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   HERMES_IMAGE_FORCE=1  rebuild even when the image is up to date
set -euo pipefail
umask 022

tag="${1:-hermes-systemd-host:latest}"
mirror="${HERMES_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# shellcheck source=../recipe.sh
. "$here/../recipe.sh"

# The recipe: this script (and anything beside it).
recipe="$(recipe_of "$here")"
if image_up_to_date "$tag" "$recipe"; then
  exit 0
fi
ensure_debootstrap

packages=(
  systemd systemd-sysv dbus docker.io iptables iproute2 procps ca-certificates
  kmod netbase
)

work="$(mktemp -d /var/tmp/hermes-systemd-rootfs.XXXXXX)"
cleanup() {
  for m in proc sys dev/pts dev; do umount -l "$work/rootfs/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
rootfs="$work/rootfs"

echo "debootstrap bookworm with systemd and docker.io into $rootfs"
debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" \
  bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
  }

# A container has no consoles, no udev, no hardware clock: the units that wait for
# them only slow the boot down or fail it.
for unit in getty.target console-getty.service systemd-udevd.service \
  systemd-udev-trigger.service systemd-udev-settle.service systemd-timesyncd.service \
  systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_all.timer fstrim.timer; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
# The inner engine: overlay2 on the volume the test mounts at /var/lib/docker, no
# registry, no IPv6.
mkdir -p "$rootfs/etc/docker"
printf '{ "storage-driver": "overlay2", "ip6tables": false }\n' >"$rootfs/etc/docker/daemon.json"
install -m 0755 "$here/host-init" "$rootfs/usr/local/sbin/host-init"
printf 'hermes-host\n' >"$rootfs/etc/hostname"
: >"$rootfs/etc/machine-id"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/var/log/bootstrap.log

tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'ENV container=docker' \
  --change 'CMD ["/usr/local/sbin/host-init"]' \
  --change "LABEL hermes.image=systemd-host hermes.image.recipe=$recipe" \
  - "$tag" >/dev/null
echo "built $tag"
