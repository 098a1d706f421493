#!/usr/bin/env bash
# Brings Hermes up with the default configuration (config/hermes.yaml):
# Docker engine, target image, release build, then `hermes run` in the foreground.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

config="${HERMES_CONFIG:-config/hermes.yaml}"
image="$(sed -n 's/^  image: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$config" | head -n 1)"

scripts/ensure-docker.sh
images/target/build.sh "${image:-hermes-target:latest}"
cargo build --release --locked --bin hermes
exec target/release/hermes run --config "$config"
