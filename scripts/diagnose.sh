#!/usr/bin/env bash
# Prints what a failed test run needs to be understood on a machine we cannot log in
# to (CI): the engine, the environment, and one exec through the target image done
# the way Hermes does it (environment variable with newlines, here-string on fd 6).
set -u
image="${1:-hermes-target:latest}"
echo "=== diagnose: $(date -u +%FT%TZ) umask=$(umask) uid=$(id -u) DOCKER_HOST=${DOCKER_HOST:-unset} TMPDIR=${TMPDIR:-unset}"
uname -a
docker version --format 'client {{.Client.Version}} api {{.Client.APIVersion}} / server {{.Server.Version}} api {{.Server.APIVersion}}' 2>&1
docker info --format 'driver={{.Driver}} cgroup={{.CgroupVersion}}/{{.CgroupDriver}} runtime={{.DefaultRuntime}} security={{.SecurityOptions}} root={{.DockerRootDir}}' 2>&1
echo "lxcfs: $(grep ' /var/lib/lxcfs ' /proc/self/mountinfo || echo 'not mounted at /var/lib/lxcfs'); uptime file: $(head -c 40 /var/lib/lxcfs/proc/uptime 2>&1)"
docker image inspect -f 'image {{.Id}} recipe={{index .Config.Labels "hermes.image.recipe"}}' "$image" 2>&1
id=$(docker run -d --rm "$image" sleep 60 2>&1) || { echo "run failed: $id"; exit 0; }
docker exec "$id" ls -ld / /usr /usr/lib/openssh /usr/bin/python3 2>&1
docker exec -e $'P=user=root\nmode=notty\ncommand=echo hi' "$id" /bin/bash -c \
  'exec 6<<< "$P"; while IFS= read -r l <&6; do echo "fd6: $l"; done; echo "params: ${#P} bytes"' 2>&1
echo "exit status $?"
docker rm -f "$id" > /dev/null 2>&1
echo "=== end of diagnose"
