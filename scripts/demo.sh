#!/usr/bin/env bash
# The main job on a fresh machine: provisions the helm stand-in (Python venv with
# helm-python-sdk, used when no `helm` is on PATH), builds tidemark in release mode and
# runs `tidemark demo` on the simulated clusters and fleet-repo-example/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-python.sh >/dev/null
exec cargo run --locked --release -- demo "$@"
