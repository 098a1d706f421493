#!/usr/bin/env bash
# Builds Hermes's own image without any registry: a statically linked hermes binary
# on a minimal root filesystem (no shell, no package manager), with /data/* as
# volumes. For the boxes' network (egress) it carries this machine's `ip` and
# `iptables-restore` (with the shared libraries and xtables extensions they load):
# the same backend, nft or legacy, as the host's own firewall, whose kernel modules
# are therefore there. docker-compose.yml runs it as root with only the capabilities
# egress needs (SECURITY.md, "What `egress` needs"); /data belongs to root.
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

# The host's tools for the boxes' network, and what they load.
# shellcheck source=../recipe.sh
. "$root/images/recipe.sh"
for program in ip iptables-restore; do
  if ! command -v "$program" >/dev/null 2>&1; then
    echo "installing iproute2 and iptables (Hermes's image carries ip and iptables-restore)"
    apt_install iproute2 iptables
    break
  fi
done
ip_binary="$(readlink -f "$(command -v ip)")"
# iptables-restore is a link to xtables-nft-multi or xtables-legacy-multi, which
# acts on the name it is called by.
xtables_binary="$(readlink -f "$(command -v iptables-restore)")"
xtables_dir=""
for dir in /usr/lib/x86_64-linux-gnu/xtables /usr/lib/aarch64-linux-gnu/xtables /usr/lib/xtables /usr/lib64/xtables; do
  if [ -d "$dir" ]; then
    xtables_dir="$dir"
    break
  fi
done
if [ -z "$xtables_dir" ]; then
  echo "cannot find the xtables extensions of $xtables_binary" >&2
  exit 1
fi

# The same binaries and config make the same image: importing it again would only
# leave the previous one dangling.
# `ip` names protocols through /etc/protocols; egress fetches verify upstream HTTPS
# against the host's roots.
protocols=/etc/protocols
roots=/etc/ssl/certs/ca-certificates.crt
for file in "$protocols" "$roots"; do
  if [ ! -f "$file" ]; then
    echo "installing netbase and ca-certificates (Hermes's image carries $file)"
    apt_install netbase ca-certificates
    break
  fi
done
recipe="$( (sha256sum "$binary" deploy/compose/hermes.yaml images/hermes/build.sh "$ip_binary" "$xtables_binary" "$protocols" "$roots"; echo "$xtables_binary"; find "$xtables_dir" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)"
if image_up_to_date "$tag" "$recipe"; then
  exit 0
fi

work="$(mktemp -d /var/tmp/hermes-image.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{etc/hermes,usr/local/bin,tmp,run,data/keys,data/recordings,data/logs,data/downloads,data/state}
install -m 0755 "$binary" "$rootfs/usr/local/bin/hermes"
strip --strip-debug "$rootfs/usr/local/bin/hermes"
install -m 0644 deploy/compose/hermes.yaml "$rootfs/etc/hermes/hermes.yaml"

# ip, iptables-restore and iptables with the shared libraries (and loader) they need.
copy_with_libraries() {
  local file="$1" target="$2" lib
  install -D -m 0755 "$file" "$rootfs$target"
  for lib in $(ldd "$file" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
    [ -e "$rootfs$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
  done
}
copy_with_libraries "$ip_binary" /usr/sbin/ip
copy_with_libraries "$xtables_binary" "/usr/sbin/$(basename "$xtables_binary")"
ln -s "$(basename "$xtables_binary")" "$rootfs/usr/sbin/iptables-restore"
# iptables itself: an FTP transfer opens its data port in the box's firewall.
ln -s "$(basename "$xtables_binary")" "$rootfs/usr/sbin/iptables"
for extension in "$xtables_dir"/*.so; do
  copy_with_libraries "$extension" "$xtables_dir/$(basename "$extension")"
done
install -D -m 0644 "$protocols" "$rootfs/etc/protocols"
install -D -m 0644 "$roots" "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/data:/usr/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/data/keys"
tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -c . | docker import \
  --change 'USER 0:0' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'WORKDIR /data' \
  --change 'ENTRYPOINT ["/usr/local/bin/hermes"]' \
  --change 'CMD ["run", "--config", "/etc/hermes/hermes.yaml"]' \
  --change 'EXPOSE 2222 9464' \
  --change 'VOLUME ["/data/keys", "/data/recordings", "/data/logs", "/data/downloads", "/data/state"]' \
  --change "LABEL hermes.image=hermes hermes.image.recipe=$recipe" \
  - "$tag" >/dev/null
echo "built $tag"
