#!/usr/bin/env bash
# The OpenSSH client (the tests' and benches' client) and server (the reference
# Hermes is compared with), installed from Debian's packages when missing. Idempotent.
set -euo pipefail
if ! command -v ssh >/dev/null 2>&1 || [ ! -x /usr/sbin/sshd ]; then
  echo "installing the OpenSSH client and server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq openssh-client openssh-server >/dev/null 2>&1 || {
    apt-get update -qq && apt-get install -y -qq openssh-client openssh-server >/dev/null
  }
fi
