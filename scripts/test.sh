#!/usr/bin/env bash
# The README's test command, and exactly what CI (.ci/run) runs: provisions everything the
# tests need on a fresh clone (system packages, the Python venv, the helm binaries), then
# runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages (git daemon, sshd, python3-venv, libssl-dev, npm, unzip, ...) when missing.
scripts/setup-system.sh tests
# .venv/ with check-jsonschema (schema tests).
scripts/setup-python.sh >/dev/null
# The official helm v4.1.4 (the tests' helm) and v3.17.2 (compatibility test) in .tools/helm/.
scripts/setup-helm.sh >/dev/null

# The image test (tests/tests/image.rs) builds the Dockerfile with the binary the image
# holds, built without the simulator and stripped (TIDEMARK_PREBUILT=target/image/tidemark),
# on local base images (.tools/image/, made once from Debian's packages).
scripts/build-prebuilt.sh
scripts/setup-image.sh

# The e2e tests run the real binary (with the simulator): build it (again) last.
cargo build --locked --bin tidemark

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast "$@"
else
  echo "cargo-nextest not found; using cargo test" >&2
  # Four at a time, as nextest is configured (.config/nextest.toml): most tests wait.
  RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}" cargo test --locked --workspace --no-fail-fast "$@"
fi

# Every cargo-fuzz target of fuzz/ for 15 s from its seed corpus (a crash fails the run);
# skipped when the command names tests to run. Longer runs: scripts/fuzz.sh SECONDS.
if [ $# -eq 0 ]; then
  scripts/fuzz.sh --ci 15
fi
