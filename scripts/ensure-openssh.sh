#!/usr/bin/env bash
# The OpenSSH client (the tests' and benches' client) and server (the reference
# Hermes is compared with), installed from Debian's packages when missing. Idempotent.
set -euo pipefail
# shellcheck source=lib/apt.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/apt.sh"
if ! command -v ssh >/dev/null 2>&1 || [ ! -x /usr/sbin/sshd ]; then
  echo "installing the OpenSSH client and server"
  apt_install openssh-client openssh-server
fi
