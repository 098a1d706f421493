#!/usr/bin/env bash
# Builds the reference machine the differential tests compare the box with: a real
# Debian 12 server (kernel, systemd as PID 1, OpenSSH) from Debian's packages only,
# as a disk image qemu boots with the kernel and initrd beside it.
#
# Usage: images/reference-vm/build.sh
# Environment:
#   HERMES_REFVM_DIR      where the machine is kept (default /var/lib/hermes-test/refvm)
#   HERMES_DEBIAN_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   HERMES_IMAGE_FORCE=1  rebuild even when the recipe has not changed
# Output in $HERMES_REFVM_DIR: disk.img (ext4, no partition table), vmlinuz,
# initrd.img, cmdline and recipe (written last: its presence means a complete build).
set -euo pipefail
umask 022

dir="${HERMES_REFVM_DIR:-/var/lib/hermes-test/refvm}"
mirror="${HERMES_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# shellcheck source=../recipe.sh
. "$here/../recipe.sh"

# The recipe: this script and everything beside it (the boot helper reads `cmdline`).
recipe="$(recipe_of "$here")"
# One build at a time (tests running in parallel each ask for the machine).
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [ "${HERMES_IMAGE_FORCE:-0}" != 1 ] && [ "$(cat "$dir/recipe" 2>/dev/null)" = "$recipe" ]; then
  echo "reference machine in $dir is up to date (HERMES_IMAGE_FORCE=1 rebuilds it)"
  exit 0
fi
ensure_debootstrap
for tool in qemu-system-x86_64:qemu-system-x86 mkfs.ext4:e2fsprogs; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || { echo "installing ${tool#*:}"; apt_install "${tool#*:}"; }
done

# What Debian 12's installer leaves with "SSH server" and "standard system
# utilities" ticked: debootstrap's default variant is the required and important
# priorities (systemd-sysv, ifupdown, isc-dhcp-client, cron, logrotate, nano...);
# beside it the kernel, OpenSSH, the standard task's everyday tools and what the
# installer brings as recommended (debootstrap installs no Recommends): logind
# sessions (libpam-systemd), timesyncd, xauth. And rsyslog:
# Debian 12's installer logs to the journal only, but servers upgraded from 11 and
# most providers' images keep it, and the box runs it (issue 17 names its unit).
packages=(
  linux-image-amd64 initramfs-tools openssh-server sudo rsyslog
  bash-completion bzip2 file gettext-base less locales lsof ncurses-term
  netcat-traditional openssh-client perl python3 telnet traceroute wget xz-utils
  ca-certificates dbus libpam-systemd systemd-timesyncd xauth
)

work="$(mktemp -d "$dir/build.XXXXXX")"
cleanup() {
  for m in proc sys dev/pts dev; do umount -l "$work/rootfs/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
rootfs="$work/rootfs"

echo "debootstrap bookworm (kernel, systemd, openssh-server) into $rootfs"
mkdir -p "$dir/debs"
debootstrap --cache-dir="$dir/debs" --include="$(IFS=,; echo "${packages[*]}")" \
  bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
  }

install -m 0755 "$here/setup-rootfs.sh" "$rootfs/tmp/setup-rootfs.sh"
chroot "$rootfs" /bin/bash /tmp/setup-rootfs.sh
rm -f "$rootfs/tmp/setup-rootfs.sh"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/var/log/bootstrap.log

# The kernel and initrd are booted from outside (qemu -kernel/-initrd), so the disk
# needs no partition table and no boot loader.
rm -f "$dir/recipe"
cp -L "$rootfs/vmlinuz" "$work/vmlinuz"
cp -L "$rootfs/initrd.img" "$work/initrd.img"
echo "making the disk image"
mkfs.ext4 -q -F -L root -d "$rootfs" "$work/disk.img" 2G
mv "$work/disk.img" "$work/vmlinuz" "$work/initrd.img" "$dir/"
cp "$here/cmdline" "$dir/cmdline"
echo "$recipe" >"$dir/recipe"
echo "built the reference machine in $dir"
