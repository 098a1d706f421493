#!/usr/bin/env bash
# Builds the Hermes target image from Debian 12 packages, without any registry:
# debootstrap a rootfs, add the persona's files, `docker import` it.
#
# Usage: images/target/build.sh [IMAGE_TAG [INIT]]
#   IMAGE_TAG  default hermes-target:latest
#   INIT       systemd (default: PID 1 is Debian's systemd; a box of it needs a cgroup
#              of its own, which Hermes gives where the host allows: SECURITY.md) or
#              sysvinit (Debian's sysvinit, for hosts and engines where it cannot).
# Environment:
#   HERMES_DEBIAN_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   HERMES_IMAGE_FORCE=1  rebuild even when the image already exists
set -euo pipefail
# Files this script creates get a server's modes whatever the caller's umask.
umask 022

tag="${1:-hermes-target:latest}"
init="${2:-systemd}"
case "$init" in
  systemd | sysvinit) ;;
  *) echo "INIT must be systemd or sysvinit, not $init" >&2; exit 2 ;;
esac
mirror="${HERMES_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# shellcheck source=../recipe.sh
. "$here/../recipe.sh"

# The recipe: this script and everything it copies in.
recipe="$(recipe_of "$here")-$init"
if image_up_to_date "$tag" "$recipe"; then
  exit 0
fi
ensure_debootstrap
# The server this image plays was installed 60 to 300 days before the build: its
# files are dated back to then, and the label tells Hermes, whose boxes' logins and
# logs (the box's past) begin that day.
build_start="$(date +%s)"
installed=$(( build_start - (60 + RANDOM % 240) * 86400 - RANDOM % 43200 ))

packages=(
  bash coreutils procps iproute2 iputils-ping curl wget ca-certificates
  openssh-server openssh-client python3 vim-tiny less sudo file
  netcat-openbsd psmisc cron rsyslog xauth dbus logrotate
)
case "$init" in
  systemd) packages+=(systemd-sysv libpam-systemd) ;;
  sysvinit) packages+=(sysvinit-core orphan-sysvinit-scripts) ;;
esac

work="$(mktemp -d /var/tmp/hermes-rootfs.XXXXXX)"
cleanup() {
  # Unmount anything debootstrap or the chroot step left mounted before deleting.
  for m in proc sys dev/pts dev; do umount -l "$work/rootfs/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
rootfs="$work/rootfs"

echo "debootstrap bookworm into $rootfs"
debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" \
  bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
  }

# The persona's files: bait, history. Copied through a staging tree with
# a server's modes (directories 0755, files 0644 or 0755 as git records them), so a
# checkout made under a strict umask does not leave /usr or /etc closed to users;
# setup-rootfs.sh then closes what a real server keeps private.
stage="$work/overlay"
cp -r "$here/overlay" "$stage"
# Nothing put into the box may name the product.
if grep -rIil -e hermes -e honeypot "$stage"; then
  echo "the files above would name the product inside the box" >&2
  exit 1
fi
chown -R 0:0 "$stage"
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f -perm -u+x -exec chmod 0755 {} +
find "$stage" -type f ! -perm -u+x -exec chmod 0644 {} +
cp -a "$stage/." "$rootfs/"
install -m 0755 "$here/setup-rootfs.sh" "$rootfs/tmp/setup-rootfs.sh"
chroot "$rootfs" /usr/bin/env HERMES_INIT="$init" /bin/bash /tmp/setup-rootfs.sh
rm -f "$rootfs/tmp/setup-rootfs.sh"

# The persona banner comes from the openssh-server package inside the image, so the
# SSH banner, `ssh -V` and `dpkg -l` always agree.
openssh_version="$(chroot "$rootfs" dpkg-query -W -f='${Version}' openssh-server)"
# 1:9.2p1-2+deb12u10 -> SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10
upstream="${openssh_version#*:}"; upstream="${upstream%%-*}"
debrev="${openssh_version#*-}"
banner="SSH-2.0-OpenSSH_${upstream} Debian-${debrev}"

# Package caches are not part of a real server's look; keep the image small.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/bootstrap.log

python3 "$here/backdate.py" "$rootfs" "$build_start" "$installed"

echo "importing $tag (banner: $banner)"
tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'CMD ["/sbin/init"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'WORKDIR /root' \
  --change "LABEL hermes.image=target hermes.image.recipe=$recipe hermes.persona.ssh_banner=\"$banner\" hermes.persona.installed=$installed hermes.persona.init=$init" \
  - "$tag" >/dev/null
echo "built $tag"
