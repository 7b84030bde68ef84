#!/usr/bin/env bash
# The image test alone (tests/tests/image.rs), with what it needs provisioned: the binary
# built without the simulator (target/image/tidemark, fed to the Dockerfile as
# TIDEMARK_PREBUILT; scripts/build-prebuilt.sh), the local base images and helm archive
# (scripts/setup-image.sh). The full build, cargo inside the builder stage, is
# scripts/build-image.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-system.sh tests
scripts/setup-helm.sh >/dev/null
scripts/build-prebuilt.sh
scripts/setup-image.sh
# The e2e harness starts `tidemark sim` from target/debug: the binary with the simulator.
cargo build --locked --bin tidemark
cargo nextest run --locked -p tidemark-e2e --no-fail-fast image:: "$@"
