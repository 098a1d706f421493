#!/usr/bin/env bash
# Hermes side by side with a real Debian sshd on loopback: every figure of the
# `compare` bench (authentication rate and CPU, time to a shell, `ssh host true`, 200
# concurrent typing sessions, bulk data through a terminal and scp, idle cost), one
# table with the ratios and the targets, appended to docs/benchmarks.md with the date,
# commit and machine. Options after the script's name go to the bench, e.g.
#   scripts/bench.sh --only auth,shell --runs 5
#   scripts/bench.sh --target name=other,host=10.0.0.5,port=22,user=u,password=p
# (a --target replaces the two local servers). Takes about 10 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/ensure-docker.sh
# Room for many systemd boxes in the host's inotify allowance.
scripts/ensure-sysctl.sh
scripts/ensure-openssh.sh
cargo build --release --locked -p hermes-box-runtime -p hermes-box-proc
scripts/ensure-box-runtime.sh target/release/hermes-box-runtime
scripts/ensure-box-proc.sh target/release/hermes-box-proc
images/target/build.sh hermes-target:latest
cargo bench -p hermes --bench compare -- --record "$PWD/docs/benchmarks.md" "$@"
