#!/usr/bin/env bash
# Provisions what the tests need, then runs the whole test suite.
# This is the README's test command and exactly what CI (.ci/run) runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Python virtualenv with check-jsonschema and the helm-python-sdk stand-in for `helm`.
scripts/setup-python.sh

# The e2e tests run the real binary: build it first.
cargo build --locked --bin tidemark

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast "$@"
else
  echo "cargo-nextest not found; using cargo test" >&2
  cargo test --locked --workspace --no-fail-fast "$@"
fi
