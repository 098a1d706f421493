#!/usr/bin/env bash
# Everything `docker-compose up` needs on a fresh Debian 12 machine, without any
# registry: the Docker engine and docker-compose, the attackers' target image, the
# socket proxy image and Hermes's own image.
set -euo pipefail
# shellcheck source=lib/apt.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/apt.sh"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/ensure-docker.sh
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "installing docker-compose"
  apt_install docker-compose
fi
images/target/build.sh hermes-target:sysvinit sysvinit
images/socket-proxy/build.sh hermes-socket-proxy:latest
images/hermes/build.sh hermes:latest
