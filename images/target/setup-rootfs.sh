#!/bin/bash
# Runs inside the target rootfs (chroot) at image build time.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# A regular admin account next to root, as on a small VPS.
if ! id admin >/dev/null 2>&1; then
  mkdir -p /home/admin
  useradd --no-create-home --home-dir /home/admin --shell /bin/bash --groups sudo admin
fi
# Locked-looking but real password hashes (the values are random, never used to log in:
# Hermes decides logins itself).
echo "root:$(head -c 18 /dev/urandom | base64)" | chpasswd
echo "admin:$(head -c 18 /dev/urandom | base64)" | chpasswd

cp /etc/skel/.bashrc /etc/skel/.profile /home/admin/ 2>/dev/null || true
chown -R admin:admin /home/admin
chmod 0700 /root /home/admin
chmod 0600 /root/.bash_history /home/admin/.bash_history
chmod 0700 /root/.ssh
chmod 0600 /root/.ssh/authorized_keys
# Bait cloud keys of this image's own, shaped as AWS's (AKIA and 16 of A-Z2-7; 40
# of base64): never AWS's published example pair, which attackers know on sight.
# (10 random bytes are 16 base32 characters, 30 are 40 base64 ones, no padding.)
access_key="AKIA$(head -c 10 /dev/urandom | base32)"
secret_key="$(head -c 30 /dev/urandom | base64)"
sed -i -e "s|@AWS_ACCESS_KEY_ID@|$access_key|" -e "s|@AWS_SECRET_ACCESS_KEY@|$secret_key|" /opt/app/.env
# The application's database password and the deploy key root trusts: this image's
# own too, so no two installations share a secret an attacker could recognise.
db_password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
sed -i "s|@DB_PASSWORD@|${db_password:0:16}|" /opt/app/.env
ssh-keygen -q -t ed25519 -N '' -C "deploy@ci-runner-0$((RANDOM % 9 + 1))" -f /tmp/deploy_key
sed -i "s|@DEPLOY_KEY@|$(cat /tmp/deploy_key.pub)|" /root/.ssh/authorized_keys
rm -f /tmp/deploy_key /tmp/deploy_key.pub
chmod 0640 /opt/app/.env

# Session bookkeeping files that `last`, `w` and `lastlog` read.
touch /var/log/wtmp /var/log/btmp /var/log/lastlog /var/run/utmp
chmod 0664 /var/log/wtmp /var/log/lastlog /var/run/utmp
chmod 0660 /var/log/btmp

# Root logs in with a password, as on the VPS images that set it up that way (the
# sessions are this sshd's: it must let in what Hermes let in).
sed -i 's/^#\?PermitRootLogin .*/PermitRootLogin yes/' /etc/ssh/sshd_config
grep -q '^PermitRootLogin yes' /etc/ssh/sshd_config

# The system locale, as Debian's installer and cloud images write it (PAM's
# pam_env reads it at every login).
echo 'LANG=C.UTF-8' > /etc/default/locale

# rsyslog cannot read the kernel log in a container; real servers' syslog has no
# complaints about it.
sed -i 's/^module(load="imklog"/#&/' /etc/rsyslog.conf

# /tmp survives a reboot: what an intruder left there is still there when they return.
# The container engine has already mounted /proc, /sys, /dev and the root filesystem
# and set the hostname, and the box may not mount, set the clock or write /proc/sys.
case "$HERMES_INIT" in
systemd)
  # Each box makes its own machine id at its first boot (an empty file means "not yet
  # made"), and dbus reads the same one, as on an installed Debian.
  : > /etc/machine-id
  rm -f /var/lib/dbus/machine-id
  ln -s /etc/machine-id /var/lib/dbus/machine-id
  # No consoles, so no gettys; nothing to load into a kernel the box does not own.
  systemctl mask console-getty.service getty@tty1.service systemd-modules-load.service \
    >/dev/null 2>&1
  # /tmp is not emptied at boot.
  echo 'd /tmp 1777 root root -' > /etc/tmpfiles.d/tmp.conf
  # root's user manager runs from boot (`loginctl enable-linger root`), as for an
  # admin who keeps user services: a root login need not wait for it to start.
  mkdir -p /var/lib/systemd/linger
  touch /var/lib/systemd/linger/root
  ;;
sysvinit)
  # PID 1 is Debian's sysvinit (for hosts where systemd cannot have a cgroup of its
  # own: SECURITY.md, "The box's init"). The boot scripts that only mount, set the
  # clock or write /proc/sys are disabled, as Debian's LXC template did for its
  # containers.
  for script in hostname.sh mountkernfs.sh mount-configfs mountdevsubfs.sh checkroot.sh \
    checkfs.sh mountall.sh mountnfs.sh hwclock.sh brightness procps; do
    update-rc.d "$script" disable >/dev/null 2>&1
  done
  sed -i '/^[0-9]*:[0-9]*:respawn:\/sbin\/getty/d' /etc/inittab
  sed -i 's/^#*TMPTIME=.*/TMPTIME=-1/' /etc/default/rcS
  grep -q '^TMPTIME=' /etc/default/rcS || echo 'TMPTIME=-1' >> /etc/default/rcS
  # dbus-daemon binds its socket as root before it drops to messagebus; root here has
  # no CAP_DAC_OVERRIDE, so the directory is root's, writable by messagebus too.
  mkdir -p /run/dbus
  chown root:messagebus /run/dbus
  chmod 0775 /run/dbus
  # Each box gets its own machine id: dbus's boot script makes one when there is none
  # (`dbus-uuidgen --ensure`), and /etc/machine-id points at it, as on Debian systems
  # without systemd.
  rm -f /etc/machine-id /var/lib/dbus/machine-id
  ln -s /var/lib/dbus/machine-id /etc/machine-id
  ;;
esac
