#!/usr/bin/env bash
# Builds Hermes's own image without any registry: a statically linked hermes binary
# on a minimal root filesystem (no shell, no package manager), run as the
# unprivileged user hermes (uid 10001), with /data/* as volumes.
#
# Usage: images/hermes/build.sh [IMAGE_TAG]        (default: hermes:latest)
#   HERMES_IMAGE_FORCE=1  rebuild even when the image is up to date
set -euo pipefail
umask 022

tag="${1:-hermes:latest}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

host="$(rustc -vV | sed -n 's/^host: //p')"
echo "building a static hermes for $host"
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked -p hermes --bin hermes --target "$host"
binary="target/$host/release/hermes"
if ! ldd "$binary" 2>&1 | grep -q "statically linked"; then
  echo "$binary is dynamically linked:" >&2
  ldd "$binary" >&2 || true
  exit 1
fi

# The same binary and config make the same image: importing it again would only leave
# the previous one dangling.
# shellcheck source=../recipe.sh
. "$root/images/recipe.sh"
recipe="$(sha256sum "$binary" deploy/compose/hermes.yaml images/hermes/build.sh | sha256sum | cut -c1-16)"
if image_up_to_date "$tag" "$recipe"; then
  exit 0
fi

work="$(mktemp -d /var/tmp/hermes-image.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{etc/hermes,usr/local/bin,tmp,data/keys,data/recordings,data/logs,data/downloads,data/state}
install -m 0755 "$binary" "$rootfs/usr/local/bin/hermes"
strip --strip-debug "$rootfs/usr/local/bin/hermes"
install -m 0644 deploy/compose/hermes.yaml "$rootfs/etc/hermes/hermes.yaml"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nhermes:x:10001:10001:hermes:/data:/usr/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nhermes:x:10001:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
chmod 1777 "$rootfs/tmp"
chown -R 10001:10001 "$rootfs/data"
chmod 0700 "$rootfs/data/keys"
tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'USER 10001:10001' \
  --change 'WORKDIR /data' \
  --change 'ENTRYPOINT ["/usr/local/bin/hermes"]' \
  --change 'CMD ["run", "--config", "/etc/hermes/hermes.yaml"]' \
  --change 'EXPOSE 2222 9464' \
  --change 'VOLUME ["/data/keys", "/data/recordings", "/data/logs", "/data/downloads", "/data/state"]' \
  --change "LABEL hermes.image=hermes hermes.image.recipe=$recipe" \
  - "$tag" >/dev/null
echo "built $tag"
