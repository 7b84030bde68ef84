#!/usr/bin/env bash
# The main job on a fresh machine: installs the system packages it needs when missing,
# provisions the official helm binary (scripts/setup-helm.sh), builds tidemark in release
# mode and runs `tidemark demo` on the simulated clusters and fleet-repo-example/ with it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-system.sh demo
helm="$(scripts/setup-helm.sh)"
exec cargo run --locked --release -- demo --helm-bin "$helm" "$@"
