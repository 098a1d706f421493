#!/bin/bash
# Runs inside the reference machine's rootfs (chroot) at build time: what Debian's
# installer configures on a small server, with the box's accounts and name.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# The box's name (config/hermes.yaml persona.hostname), named in /etc/hosts as the
# installer does.
echo web-prod-01 >/etc/hostname
cat >/etc/hosts <<'HOSTS'
127.0.0.1	localhost
127.0.1.1	web-prod-01

# The following lines are desirable for IPv6 capable hosts
::1     localhost ip6-localhost ip6-loopback
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
HOSTS

# The root filesystem is the whole virtio disk (booted with root=/dev/vda).
cat >/etc/fstab <<'FSTAB'
# /etc/fstab: static file system information.
#
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
/dev/vda        /               ext4    errors=remount-ro 0       1
FSTAB

# The installer's ifupdown DHCP on the one NIC (qemu puts it in PCI slot 3: ens3).
cat >/etc/network/interfaces <<'IFACES'
# This file describes the network interfaces available on your system
# and how to activate them. For more information, see interfaces(5).

source /etc/network/interfaces.d/*

# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface
allow-hotplug ens3
iface ens3 inet dhcp
IFACES

# The box's accounts: root and an admin in the sudo group; the passwords the tests
# log in with (root/toor as the harness's default credentials, admin/admin).
if ! id admin >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash --groups sudo admin
fi
echo "root:toor" | chpasswd
echo "admin:admin" | chpasswd

# Debian refuses root passwords over SSH (prohibit-password); the box lets root in
# with one, so the reference must too for the same login to reach both.
mkdir -p /etc/ssh/sshd_config.d
echo "PermitRootLogin yes" >/etc/ssh/sshd_config.d/root-login.conf

# One machine id, made at install time as the installer does (systemd would make a
# new one on every boot of an empty file).
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >/etc/machine-id
echo >>/etc/machine-id
# apt's daily timers are persistent: on a first boot they start apt at once, which
# would show up in `ps` and systemctl at random and try a network the machine does
# not have (restricted user networking). The one change from an installed server.
systemctl mask apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1 || true
# The installer's default locale.
sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen
locale-gen >/dev/null
echo 'LANG=en_US.UTF-8' >/etc/default/locale
