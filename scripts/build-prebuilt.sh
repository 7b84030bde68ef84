#!/usr/bin/env bash
# The binary the image test (tests/tests/image.rs) feeds the Dockerfile as TIDEMARK_PREBUILT:
# `tidemark` built without the simulator, debug profile, stripped, at target/image/tidemark.
#
# tidemark-sim is selected too, though not built (only the `tidemark` binary is): its
# dependencies' features then unify as in the ordinary build (`cargo build --bin tidemark`),
# so this shares every dependency with it and compiles only the tidemark crate once more.
# Alone, `-p tidemark --no-default-features` would compile hyper-util, k8s-openapi and the
# kube crates a second time with fewer features (minutes on a cold two-core CI machine).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked -p tidemark -p tidemark-sim --no-default-features --bin tidemark
mkdir -p target/image
# Stripped as the Dockerfile's release build strips: a quarter of the size, which buildah's
# vfs store copies once per stage.
strip -o target/image/tidemark.tmp target/debug/tidemark
mv target/image/tidemark.tmp target/image/tidemark
